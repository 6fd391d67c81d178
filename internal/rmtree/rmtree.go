// Package rmtree removes directory trees that builds wrote read-only: Nix
// store paths, Go's module cache, sealed dependency-cache entries.
package rmtree

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// RemoveAll removes dir like os.RemoveAll; where that fails it restores
// write permission on the tree's directories and tries again. Nothing is
// followed: a directory is opened O_NOFOLLOW and changed through its own
// descriptor, so a symlink a build planted (or swapped in since the walk)
// never makes this process chmod anything outside the tree. A missing dir
// is no error.
func RemoveAll(dir string) error {
	err := os.RemoveAll(dir)
	if err == nil {
		return nil
	}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			makeWritable(p)
		}
		return nil
	})
	if err := os.RemoveAll(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func makeWritable(dir string) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) == nil && st.Mode&0o700 != 0o700 {
		_ = unix.Fchmod(fd, st.Mode&0o7777|0o700)
	}
}
