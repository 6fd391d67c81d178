package cargo

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"golang.org/x/mod/sumdb/dirhash"
)

// LocalDigestKey is the digest key of local code (a path dependency or a
// vendored crate): Go's dirhash "h1" of its directory, the same digest the
// Go driver records for a `replace` by a local directory.
const LocalDigestKey = "h1"

// LocalURIPrefix starts the uri of a dependency that is local code, followed
// by its directory relative to the project ("file:vendor/itoa").
const LocalURIPrefix = "file:"

// maxTreeFiles bounds the files one local tree may have.
const maxTreeFiles = 200000

// TreeH1 is dirhash.HashDir(dir, "", dirhash.Hash1) computed through root,
// without the "h1:" prefix: sha256 over the sorted lines
// "<sha256 hex>  <path>\n" of every regular file under dir (slash path
// relative to dir). A symlink is hashed as the regular file it names inside
// root; one that leaves root, names a directory, or a special file, is an
// error.
func TreeH1(root *os.Root, dir string) (string, error) {
	var files []string
	err := fs.WalkDir(root.FS(), dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel := strings.TrimPrefix(p, dir+"/")
		if dir == "." {
			rel = p
		}
		if t := d.Type(); t&fs.ModeSymlink == 0 && !t.IsRegular() {
			return fmt.Errorf("%s: not a regular file", clip(rel))
		}
		if len(files) >= maxTreeFiles {
			return fmt.Errorf("more than %d files", maxTreeFiles)
		}
		files = append(files, rel)
		return nil
	})
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return "", errors.New("a file cannot be read inside the project")
		}
		return "", err
	}
	h, err := dirhash.Hash1(files, func(name string) (io.ReadCloser, error) {
		f, err := openRegular(root, path.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("%s: cannot be read inside the project (a symlink leading out of it?)", clip(name))
		}
		if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
			f.Close()
			return nil, fmt.Errorf("%s: not a regular file", clip(name))
		}
		return f, nil
	})
	if err != nil {
		return "", err
	}
	return strings.TrimPrefix(h, "h1:"), nil
}
