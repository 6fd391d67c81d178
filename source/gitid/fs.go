package gitid

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// A dir is an open directory of the submission. Every path below it is
// resolved one component at a time with O_NOFOLLOW, so a symlink at any
// component is an error rather than a detour (os.Root would follow links
// that stay inside; a hostile .git has no business holding any).
type dir struct{ f *os.File }

// errLink is returned when a path component is a symlink (or not a
// directory where one is needed).
var errLink = errors.New("symbolic link or non-directory in path")

func openDir(path string) (*dir, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, mapErr(&os.PathError{Op: "open", Path: path, Err: err})
	}
	return &dir{os.NewFile(uintptr(fd), path)}, nil
}

func (d *dir) Close() error { return d.f.Close() }

func (d *dir) fd() int { return int(d.f.Fd()) }

// open opens rel (slash-separated, no "", "." or ".." components) below d
// with flags | O_NOFOLLOW; intermediate components must be real
// directories.
func (d *dir) open(rel string, flags int) (*os.File, error) {
	parts := strings.Split(rel, "/")
	for _, p := range parts {
		if p == "" || p == "." || p == ".." {
			return nil, fmt.Errorf("%s: invalid path", rel)
		}
	}
	cur := d.fd()
	var opened []int
	defer func() {
		for _, fd := range opened {
			unix.Close(fd)
		}
	}()
	for _, p := range parts[:len(parts)-1] {
		fd, err := unix.Openat(cur, p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, mapErr(&os.PathError{Op: "open", Path: rel, Err: err})
		}
		opened = append(opened, fd)
		cur = fd
	}
	fd, err := unix.Openat(cur, parts[len(parts)-1], flags|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, mapErr(&os.PathError{Op: "open", Path: rel, Err: err})
	}
	return os.NewFile(uintptr(fd), rel), nil
}

func (d *dir) sub(rel string) (*dir, error) {
	f, err := d.open(rel, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	return &dir{f}, nil
}

// openRegular opens rel for reading and makes sure it is a regular file
// (O_NONBLOCK: a FIFO must not block the open).
func (d *dir) openRegular(rel string) (*os.File, int64, error) {
	f, err := d.open(rel, unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("%s: %w", rel, errNotRegular)
	}
	return f, fi.Size(), nil
}

var errNotRegular = errors.New("not a regular file")

// readFile reads the regular file rel, refusing one larger than max.
func (d *dir) readFile(rel string, max int64) ([]byte, error) {
	f, size, err := d.openRegular(rel)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if size > max {
		return nil, fmt.Errorf("%s: %w (%d bytes)", rel, ErrTooLarge, size)
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: %w", rel, ErrTooLarge)
	}
	return b, nil
}

// mapErr turns ELOOP/ENOTDIR (O_NOFOLLOW met a symlink, or a file stood
// where a directory was expected) into errLink.
func mapErr(err *os.PathError) error {
	if errors.Is(err.Err, unix.ELOOP) || errors.Is(err.Err, unix.ENOTDIR) {
		return fmt.Errorf("%s: %w", err.Path, errLink)
	}
	return err
}
