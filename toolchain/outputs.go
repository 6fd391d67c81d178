package toolchain

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrUnsafeOutput is wrapped by every refusal of a build output: a symlink
// at any path component, a non-regular file, a hard link to a file outside
// the collected tree, or more bytes than the budget.
var ErrUnsafeOutput = errors.New("unsafe build output")

// DefaultMaxOutputBytes bounds what one build's artifacts may add up to
// (apparent size) when the caller gives no budget.
const DefaultMaxOutputBytes = 8 << 30

// Outputs reads what a build wrote, from the trusted process, after the
// sandbox has exited. The build owned the tree, so every name in it is
// hostile: paths are resolved below the root with no symlink followed at any
// component (openat2 RESOLVE_NO_SYMLINKS|RESOLVE_BENEATH, or one O_NOFOLLOW
// openat per component on kernels without it), only regular files are read,
// and the total apparent size is bounded. See docs/security.md.
type Outputs struct {
	root *os.File
	max  int64
	used int64
	// links counts, per inode, the names found by ScanLinks.
	links map[fileKey]uint64
}

type fileKey struct{ dev, ino uint64 }

// OpenOutputs opens dir (a directory kettle created, e.g. the project) for
// collecting outputs; maxBytes ≤ 0 means DefaultMaxOutputBytes.
func OpenOutputs(dir string, maxBytes int64) (*Outputs, error) {
	f, err := os.OpenFile(dir, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open output root: %w", err)
	}
	if maxBytes <= 0 {
		maxBytes = DefaultMaxOutputBytes
	}
	return &Outputs{root: f, max: maxBytes}, nil
}

// Close releases the root.
func (o *Outputs) Close() error { return o.root.Close() }

// Used is the number of bytes copied so far.
func (o *Outputs) Used() int64 { return o.used }

func cleanRel(rel string) (string, error) {
	rel = path.Clean(filepath.ToSlash(rel))
	if rel == "." || rel == "" {
		return ".", nil
	}
	if path.IsAbs(rel) || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("%w: %q leaves the output root", ErrUnsafeOutput, rel)
	}
	return rel, nil
}

// open resolves rel below the root without following any symlink.
func (o *Outputs) open(rel string, flags int) (*os.File, error) {
	rel, err := cleanRel(rel)
	if err != nil {
		return nil, err
	}
	flags |= unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_NONBLOCK
	fd, err := unix.Openat2(int(o.root.Fd()), rel, &unix.OpenHow{
		Flags:   uint64(flags),
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if errors.Is(err, unix.ENOSYS) {
		fd, err = openEach(int(o.root.Fd()), rel, flags)
	}
	if err != nil {
		if errors.Is(err, unix.ENOTDIR) {
			// O_DIRECTORY on a symlink as the last component.
			if fi, lerr := o.Lstat(rel); lerr == nil && fi.Mode()&fs.ModeSymlink != 0 {
				err = unix.ELOOP
			}
		}
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV) {
			return nil, fmt.Errorf("%w: %s: a symlink or mount point on the path", ErrUnsafeOutput, rel)
		}
		return nil, &fs.PathError{Op: "open", Path: rel, Err: err}
	}
	return os.NewFile(uintptr(fd), rel), nil
}

// openEach is the fallback for kernels without openat2: one openat per
// component, each with O_NOFOLLOW.
func openEach(dirfd int, rel string, flags int) (int, error) {
	parts := strings.Split(rel, "/")
	cur := dirfd
	for i, p := range parts {
		f := unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
		if i == len(parts)-1 {
			f = flags
		}
		fd, err := unix.Openat(cur, p, f, 0)
		if cur != dirfd {
			unix.Close(cur)
		}
		if err != nil {
			return -1, err
		}
		cur = fd
	}
	return cur, nil
}

// Lstat describes rel without following a symlink at any component.
func (o *Outputs) Lstat(rel string) (fs.FileInfo, error) {
	rel, err := cleanRel(rel)
	if err != nil {
		return nil, err
	}
	dir, base := path.Split(rel)
	var d *os.File
	if dir == "" {
		d = o.root
	} else {
		if d, err = o.open(strings.TrimSuffix(dir, "/"), unix.O_RDONLY|unix.O_DIRECTORY); err != nil {
			return nil, err
		}
		defer d.Close()
	}
	if rel == "." {
		return o.root.Stat()
	}
	var st unix.Stat_t
	if err := unix.Fstatat(int(d.Fd()), base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, &fs.PathError{Op: "lstat", Path: rel, Err: err}
	}
	return statInfo{name: base, st: st}, nil
}

// ReadDir lists the directory rel (no symlink on its path). It returns
// fs.ErrNotExist when rel does not exist, and ErrUnsafeOutput when it or a
// parent is a symlink.
func (o *Outputs) ReadDir(rel string) ([]fs.DirEntry, error) {
	d, err := o.open(rel, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.ReadDir(-1)
}

// ScanLinks walks rel and remembers how many names each inode has inside
// it, so that Copy accepts a hard link whose every name is in the tree
// (cargo hard-links target/release/<bin> to target/release/deps/<bin>-<hash>)
// and refuses one that also has a name elsewhere.
func (o *Outputs) ScanLinks(rel string) error {
	if o.links == nil {
		o.links = map[fileKey]uint64{}
	}
	return o.walk(rel, func(rel string, st *unix.Stat_t) error {
		if st.Mode&unix.S_IFMT == unix.S_IFREG && st.Nlink > 1 {
			o.links[fileKey{uint64(st.Dev), st.Ino}]++
		}
		return nil
	})
}

// Walk calls fn for every entry below rel in lexical order (directories
// before their contents); symlinks are reported, never followed.
func (o *Outputs) Walk(rel string, fn func(rel string, info fs.FileInfo) error) error {
	return o.walk(rel, func(p string, st *unix.Stat_t) error {
		return fn(p, statInfo{name: path.Base(p), st: *st})
	})
}

func (o *Outputs) walk(rel string, fn func(rel string, st *unix.Stat_t) error) error {
	d, err := o.open(rel, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	names, err := d.Readdirnames(-1)
	if err != nil {
		d.Close()
		return err
	}
	sort.Strings(names)
	var dirs []string
	for _, n := range names {
		var st unix.Stat_t
		if err := unix.Fstatat(int(d.Fd()), n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			d.Close()
			return err
		}
		p := path.Join(rel, n)
		if err := fn(p, &st); err != nil {
			d.Close()
			return err
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			dirs = append(dirs, p)
		}
	}
	d.Close()
	for _, p := range dirs {
		if err := o.walk(p, fn); err != nil {
			return err
		}
	}
	return nil
}

// OpenFile opens the regular file rel for reading, refusing symlinks on the
// path, non-regular files and hard links with names outside the scanned
// tree, and counts its size against the budget.
func (o *Outputs) OpenFile(rel string) (*os.File, fs.FileInfo, error) {
	f, err := o.open(rel, unix.O_RDONLY)
	if err != nil {
		return nil, nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, nil, err
	}
	info := statInfo{name: path.Base(rel), st: st}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		f.Close()
		return nil, nil, fmt.Errorf("%w: %s is not a regular file", ErrUnsafeOutput, rel)
	case st.Nlink > 1 && o.links[fileKey{uint64(st.Dev), st.Ino}] < st.Nlink:
		f.Close()
		return nil, nil, fmt.Errorf("%w: %s is a hard link to a file outside the build's output", ErrUnsafeOutput, rel)
	case st.Size > o.max-o.used:
		f.Close()
		return nil, nil, fmt.Errorf("%w: the artifacts exceed %d bytes", ErrUnsafeOutput, o.max)
	}
	o.used += st.Size
	return f, info, nil
}

// Copy copies the regular file rel to dstDir/name (mode 0755 when the
// owner could execute it, else 0644) and hashes it. At most the size seen
// when it was opened is copied: a file that grows is cut, not followed.
func (o *Outputs) Copy(rel, dstDir, name string) (Artifact, error) {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return Artifact{}, fmt.Errorf("artifact name %q: not a plain file name", name)
	}
	in, fi, err := o.OpenFile(rel)
	if err != nil {
		return Artifact{}, err
	}
	defer in.Close()
	dst := filepath.Join(dstDir, name)
	if err := os.Remove(dst); err != nil && !errors.Is(err, os.ErrNotExist) {
		return Artifact{}, err
	}
	mode := os.FileMode(0o644)
	if fi.Mode()&0o100 != 0 {
		mode = 0o755
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return Artifact{}, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), io.LimitReader(in, fi.Size()))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil && n != fi.Size() {
		err = fmt.Errorf("%w: %s changed size while it was copied", ErrUnsafeOutput, rel)
	}
	if err != nil {
		os.Remove(dst)
		return Artifact{}, fmt.Errorf("copy artifact %s: %w", name, err)
	}
	return Artifact{Name: name, SHA256: hex.EncodeToString(h.Sum(nil)), Size: n}, nil
}

// statInfo is an fs.FileInfo from a Stat_t.
type statInfo struct {
	name string
	st   unix.Stat_t
}

func (s statInfo) Name() string { return s.name }
func (s statInfo) Size() int64  { return s.st.Size }
func (s statInfo) Mode() fs.FileMode {
	m := fs.FileMode(s.st.Mode & 0o777)
	switch s.st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		m |= fs.ModeDir
	case unix.S_IFLNK:
		m |= fs.ModeSymlink
	case unix.S_IFIFO:
		m |= fs.ModeNamedPipe
	case unix.S_IFSOCK:
		m |= fs.ModeSocket
	case unix.S_IFCHR:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		m |= fs.ModeDevice
	}
	return m
}
func (s statInfo) ModTime() time.Time { return time.Unix(s.st.Mtim.Unix()) }
func (s statInfo) IsDir() bool        { return s.st.Mode&unix.S_IFMT == unix.S_IFDIR }
func (s statInfo) Sys() any           { return &s.st }

// Nlink is the number of names of the file.
func (s statInfo) Nlink() uint64 { return s.st.Nlink }
