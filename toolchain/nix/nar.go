package nix

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"syscall"
)

// ErrNAR is wrapped by every problem hashing a directory as a NAR.
var ErrNAR = errors.New("cannot hash path input")

// NAR limits for a path input: its whole serialisation and its depth.
const (
	maxNARBytes = 4 << 30
	maxNARDepth = 256
)

// NARHash returns the SRI sha256 ("sha256-<base64>") of the Nix archive
// (NAR) serialisation of rel below root, as `nix hash path` computes it and
// as flake.lock's narHash records it. Everything is read through root
// (os.Root: nothing outside it can be named); symlinks are serialised as
// links and never followed, rel itself and its parents must not be
// symlinks, and a file with more than one name (a hard link, which could be
// a name for a file outside the project) is refused.
func NARHash(root *os.Root, rel string) (string, error) {
	if !cleanRelative(rel) {
		return "", fmt.Errorf("%w: %q is not a relative path inside the project", ErrNAR, rel)
	}
	rel = path.Clean(rel)
	// No component of rel may be a symlink: Nix's path input and our hash
	// must name the same real directory.
	parts := strings.Split(rel, "/")
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		fi, err := root.Lstat(p)
		if err != nil {
			return "", fmt.Errorf("%w: %w", ErrNAR, err)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return "", fmt.Errorf("%w: %s is a symlink", ErrNAR, p)
		}
		if i < len(parts)-1 && !fi.IsDir() {
			return "", fmt.Errorf("%w: %s is not a directory", ErrNAR, p)
		}
	}
	h := sha256.New()
	if err := writeNAR(h, root, rel); err != nil {
		return "", err
	}
	return "sha256-" + base64.StdEncoding.EncodeToString(h.Sum(nil)), nil
}

// writeNAR writes the NAR of rel below root to out.
func writeNAR(out io.Writer, root *os.Root, rel string) error {
	w := &narWriter{w: out}
	if err := w.str("nix-archive-1"); err != nil {
		return err
	}
	return w.node(root, rel, 0)
}

// narWriter writes NAR tokens: each string is its length (u64 little
// endian), its bytes and zero padding to a multiple of 8.
type narWriter struct {
	w io.Writer
	n int64
}

var zeros [8]byte

func (w *narWriter) add(n int64) error {
	w.n += n
	if w.n > maxNARBytes {
		return fmt.Errorf("%w: larger than %d bytes", ErrNAR, int64(maxNARBytes))
	}
	return nil
}

func (w *narWriter) str(s string) error {
	var l [8]byte
	binary.LittleEndian.PutUint64(l[:], uint64(len(s)))
	if err := w.add(8 + int64(len(s)) + pad(int64(len(s)))); err != nil {
		return err
	}
	w.w.Write(l[:])
	io.WriteString(w.w, s)
	w.w.Write(zeros[:pad(int64(len(s)))])
	return nil
}

func (w *narWriter) strs(ss ...string) error {
	for _, s := range ss {
		if err := w.str(s); err != nil {
			return err
		}
	}
	return nil
}

func pad(n int64) int64 { return (8 - n%8) % 8 }

// node serialises the entry rel (already known not to be reached through
// a symlink).
func (w *narWriter) node(root *os.Root, rel string, depth int) error {
	if depth > maxNARDepth {
		return fmt.Errorf("%w: deeper than %d directories", ErrNAR, maxNARDepth)
	}
	fi, err := root.Lstat(rel)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNAR, err)
	}
	if err := w.strs("(", "type"); err != nil {
		return err
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := root.Readlink(rel)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrNAR, err)
		}
		if err := w.strs("symlink", "target", target); err != nil {
			return err
		}
	case fi.Mode().IsRegular():
		if err := w.file(root, rel, fi); err != nil {
			return err
		}
	case fi.IsDir():
		if err := w.str("directory"); err != nil {
			return err
		}
		names, err := readDirNames(root, rel)
		if err != nil {
			return err
		}
		for _, n := range names {
			if err := w.strs("entry", "(", "name", n, "node"); err != nil {
				return err
			}
			if err := w.node(root, rel+"/"+n, depth+1); err != nil {
				return err
			}
			if err := w.str(")"); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("%w: %s is not a file, directory or symlink", ErrNAR, rel)
	}
	return w.str(")")
}

func (w *narWriter) file(root *os.Root, rel string, fi fs.FileInfo) error {
	f, err := root.OpenFile(rel, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNAR, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNAR, err)
	}
	if !st.Mode().IsRegular() || !os.SameFile(st, fi) {
		return fmt.Errorf("%w: %s changed while it was read", ErrNAR, rel)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Nlink > 1 {
		return fmt.Errorf("%w: %s is a hard link", ErrNAR, rel)
	}
	if err := w.str("regular"); err != nil {
		return err
	}
	if st.Mode()&0o100 != 0 {
		if err := w.strs("executable", ""); err != nil {
			return err
		}
	}
	if err := w.str("contents"); err != nil {
		return err
	}
	size := st.Size()
	if err := w.add(8 + size + pad(size)); err != nil {
		return err
	}
	var l [8]byte
	binary.LittleEndian.PutUint64(l[:], uint64(size))
	w.w.Write(l[:])
	n, err := io.Copy(w.w, io.LimitReader(f, size))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNAR, err)
	}
	if n != size {
		return fmt.Errorf("%w: %s changed size while it was read", ErrNAR, rel)
	}
	w.w.Write(zeros[:pad(size)])
	return nil
}

// readDirNames lists a directory in NAR order (bytewise).
func readDirNames(root *os.Root, rel string) ([]string, error) {
	d, err := root.OpenFile(rel, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_DIRECTORY, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNAR, err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNAR, err)
	}
	sort.Strings(names)
	return names, nil
}
