package pnpm

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"time"
)

// ErrUnsafeEntry reports a file in dist/ that cannot go into the tarball: a
// symlink leaving dist/, a device, a FIFO or a socket.
var ErrUnsafeEntry = errors.New("unsafe entry in dist/")

// Epoch is the modification time of every tarball entry.
var Epoch = time.Unix(0, 0).UTC()

// PackDir writes the directory dir of root (and everything under it) to w
// as a gzip-compressed tarball that depends only on the names, contents,
// exec bits and symlink targets of the files: entries in lexical order,
// named "<dir>/…", owned by 0:0 with no user or group names, mode 0755 for
// directories and executables and 0644 for other files, mtime Epoch, and a
// gzip header without name or time. Reading goes through root, so nothing
// outside it can be packed, and symlinks are stored, never followed.
func PackDir(root *os.Root, dir string, w io.Writer) error {
	zw, err := gzip.NewWriterLevel(w, gzip.DefaultCompression)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	err = fs.WalkDir(root.FS(), dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		hdr := &tar.Header{Name: p, ModTime: Epoch, Format: tar.FormatPAX}
		t := d.Type()
		switch {
		case d.IsDir():
			hdr.Typeflag, hdr.Name, hdr.Mode = tar.TypeDir, p+"/", 0o755
		case t&fs.ModeSymlink != 0:
			target, err := root.Readlink(p)
			if err != nil {
				return err
			}
			if !inside(dir, p, target) {
				return fmt.Errorf("%w: %s is a symlink to %q, outside %s/", ErrUnsafeEntry, p, clip(target), dir)
			}
			hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, target, 0o777
		case t.IsRegular():
			return addFile(root, tw, hdr, p)
		default:
			return fmt.Errorf("%w: %s is not a regular file, directory or symlink", ErrUnsafeEntry, p)
		}
		return tw.WriteHeader(hdr)
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

func addFile(root *os.Root, tw *tar.Writer, hdr *tar.Header, p string) error {
	f, err := root.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: %s changed while packing", ErrUnsafeEntry, p)
	}
	hdr.Typeflag, hdr.Size, hdr.Mode = tar.TypeReg, fi.Size(), 0o644
	if fi.Mode()&0o111 != 0 {
		hdr.Mode = 0o755
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	// A file that grows or shrinks now makes the tar writer fail.
	if _, err := io.CopyN(tw, f, fi.Size()); err != nil {
		return fmt.Errorf("pack %s: %w", p, err)
	}
	return nil
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
