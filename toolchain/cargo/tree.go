package cargo

import (
	"errors"
	"io/fs"
	"os"

	"github.com/kettle-build/kettle/toolchain"
)

// The digest key and uri prefix of local code (a path dependency or a
// vendored crate): the digest every driver records, toolchain.HashTree.
const (
	LocalDigestKey = toolchain.LocalDigestKey
	LocalURIPrefix = toolchain.LocalURIPrefix
)

// TreeH1 is toolchain.HashTree of dir, following symlinks that stay inside
// root; a file that cannot be listed is reported without its name.
func TreeH1(root *os.Root, dir string) (string, error) {
	h, err := toolchain.HashTree(root, dir, "", true)
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return "", errors.New("a file cannot be read inside the project")
	}
	return h, err
}
