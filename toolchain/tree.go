package toolchain

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"

	"golang.org/x/mod/sumdb/dirhash"
)

// Local code (a path dependency, a vendored crate, a Go replacement
// directory, a pnpm file:/link: package) is recorded in the provenance as
// {"uri": LocalURIPrefix + <dir>, "digest": {LocalDigestKey: HashTree(…)}}:
// every driver uses the same digest, Go's dirhash "h1" of the directory.
const (
	LocalDigestKey = "h1"
	LocalURIPrefix = "file:"
)

// MaxTreeFiles bounds the files of one hashed tree: a submission cannot
// make the trusted process list millions of names.
const MaxTreeFiles = 200000

// OpenRegular opens name inside root for reading without blocking on a
// FIFO (O_NONBLOCK); callers then refuse anything but a regular file.
func OpenRegular(root *os.Root, name string) (*os.File, error) {
	return root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
}

// HashTree is dirhash.HashDir(dir, prefix, dirhash.Hash1) computed through
// root: every file under dir, named prefix/<slash path relative to dir>
// (just the relative path when prefix is ""). With followLinks, a symlink
// is hashed as the regular file it names inside root (as HashDir follows
// it); one that leaves root or names a directory or a FIFO is an error.
// Without followLinks every symlink is an error; devices and pipes always
// are, and no open can block on one. The result has no "h1:" prefix. Walk
// errors are *fs.PathError, so callers can word them for the client.
func HashTree(root *os.Root, dir, prefix string, followLinks bool) (string, error) {
	var files []string
	err := fs.WalkDir(root.FS(), dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(p, dir+"/")
		if dir == "." {
			rel = p
		}
		switch t := d.Type(); {
		case d.IsDir():
			return nil
		case t&fs.ModeSymlink != 0 && !followLinks:
			return fmt.Errorf("%s: a symlink", clipName(rel))
		case t&fs.ModeSymlink == 0 && !t.IsRegular():
			return fmt.Errorf("%s: not a regular file", clipName(rel))
		}
		if len(files) >= MaxTreeFiles {
			return fmt.Errorf("more than %d files", MaxTreeFiles)
		}
		if prefix != "" {
			rel = prefix + "/" + rel
		}
		files = append(files, rel)
		return nil
	})
	if err != nil {
		return "", err
	}
	h, err := dirhash.Hash1(files, func(name string) (io.ReadCloser, error) {
		if prefix != "" {
			name = strings.TrimPrefix(name, prefix+"/")
		}
		f, err := OpenRegular(root, path.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("%s: cannot be read inside the project (a symlink leading out of it?)", clipName(name))
		}
		if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
			f.Close()
			return nil, fmt.Errorf("%s: not a regular file", clipName(name))
		}
		return f, nil
	})
	if err != nil {
		return "", err
	}
	return strings.TrimPrefix(h, "h1:"), nil
}

// clipName bounds a client-chosen file name in a message.
func clipName(s string) string {
	if len(s) > 120 {
		s = s[:120] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
