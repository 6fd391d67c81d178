package pnpm

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/kettle-build/kettle/internal/dtar"
	"github.com/kettle-build/kettle/toolchain"
)

// ErrUnsafeEntry reports a file in dist/ that cannot go into the tarball: a
// symlink leaving dist/, a device, a FIFO or a socket.
var ErrUnsafeEntry = errors.New("unsafe entry in dist/")

// Epoch is the modification time of every tarball entry.
var Epoch = dtar.Epoch

// PackDir writes the directory dir of o (and everything under it) to w
// as a gzip-compressed tarball that depends only on the names, contents,
// exec bits and symlink targets of the files (internal/dtar: owner 0:0,
// mode 0755 for directories and executables and 0644 for other files,
// mtime Epoch, no name or time in the gzip header), entries in lexical
// order, named "<dir>/…". Reading goes through
// toolchain.Outputs: no symlink is followed at any component (dir itself
// a symlink is refused), symlinks inside are stored, never followed, a
// file hard-linked to one outside dir is refused, and the total size is
// bounded.
func PackDir(o *toolchain.Outputs, rootDir, dir string, w io.Writer) error {
	fi, err := o.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: %s is not a directory", ErrUnsafeEntry, dir)
	}
	if err := o.ScanLinks(dir); err != nil {
		return err
	}
	tw, err := dtar.NewWriter(w)
	if err != nil {
		return err
	}
	if err := tw.Dir(dir); err != nil {
		tw.Close()
		return err
	}
	// Outputs.Walk lists a directory's entries before descending; the
	// tarball keeps fs.WalkDir's depth-first lexical order.
	type entry struct {
		p  string
		fi fs.FileInfo
	}
	var entries []entry
	if err := o.Walk(dir, func(p string, fi fs.FileInfo) error {
		entries = append(entries, entry{p, fi})
		return nil
	}); err != nil {
		return err
	}
	sort.Slice(entries, func(i, j int) bool {
		return slices.Compare(strings.Split(entries[i].p, "/"), strings.Split(entries[j].p, "/")) < 0
	})
	for _, e := range entries {
		if err := packEntry(o, tw, rootDir, dir, e.p, e.fi); err != nil {
			tw.Close()
			return err
		}
	}
	return tw.Close()
}

func packEntry(o *toolchain.Outputs, tw *dtar.Writer, rootDir, dir, p string, fi fs.FileInfo) error {
	t := fi.Mode()
	switch {
	case t.IsDir():
		return tw.Dir(p)
	case t&fs.ModeSymlink != 0:
		target, err := readlinkBeneath(rootDir, p)
		if err != nil {
			return err
		}
		if !inside(dir, p, target) {
			return fmt.Errorf("%w: %s is a symlink to %q, outside %s/", ErrUnsafeEntry, p, clip(target), dir)
		}
		return tw.Symlink(p, target)
	case t.IsRegular():
		return addFile(o, tw, p)
	default:
		return fmt.Errorf("%w: %s is not a regular file, directory or symlink", ErrUnsafeEntry, p)
	}
}

func addFile(o *toolchain.Outputs, tw *dtar.Writer, p string) error {
	f, fi, err := o.OpenFile(p)
	if err != nil {
		return err
	}
	defer f.Close()
	// dtar copies exactly the size read here: a file that grows or
	// shrinks meanwhile cannot corrupt the tarball.
	return tw.File(p, fi.Mode()&0o111 != 0, fi.Size(), f)
}

// readlinkBeneath reads the symlink rel below rootDir without following
// a symlink on the way (toolchain.Outputs has no Readlink).
func readlinkBeneath(rootDir, rel string) (string, error) {
	rfd, err := unix.Open(rootDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(rfd)
	dir, base := path.Split(rel)
	pfd := rfd
	if dir != "" {
		pfd, err = unix.Openat2(rfd, strings.TrimSuffix(dir, "/"), &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
		})
		if err != nil {
			return "", fmt.Errorf("%w: %s: %v", ErrUnsafeEntry, rel, err)
		}
		defer unix.Close(pfd)
	}
	buf := make([]byte, 4096)
	n, err := unix.Readlinkat(pfd, base, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// inside reports whether the symlink at p (under dir) with this target
// points inside dir: relative, and not climbing out of it.
func inside(dir, p, target string) bool {
	if target == "" || path.IsAbs(target) || strings.ContainsRune(target, 0) {
		return false
	}
	resolved := path.Join(path.Dir(p), target)
	return resolved == dir || strings.HasPrefix(resolved, dir+"/")
}
