// Package bundle writes and safely reads the result tarball of a build
// (docs/api.md#the-result-tarball): a gzipped tar with one top directory holding artifacts/,
// build-config/, provenance.json, manifest.json and evidence.json.
//
// Write is deterministic: the same directory contents give the same bytes,
// whoever owns the files and whenever they were written. Extract is meant for
// clients reading a tarball from the network: it refuses anything that could
// write outside the destination or exhaust the disk.
package bundle

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/klauspost/pgzip"

	"github.com/kettle-build/kettle/internal/dtar"
)

// Epoch is the modification time of every entry Write produces.
var Epoch = dtar.Epoch

// Sentinel errors of Extract, checked with errors.Is.
var (
	ErrUnsafePath  = errors.New("unsafe path in tarball")
	ErrEntryType   = errors.New("unsupported entry type in tarball")
	ErrTooLarge    = errors.New("tarball exceeds size limit")
	ErrTooMany     = errors.New("tarball exceeds entry limit")
	ErrNoTop       = errors.New("tarball must have exactly one top-level directory")
	ErrDuplicate   = errors.New("duplicate path in tarball")
	ErrNotRegular  = errors.New("result directory holds a file that is not regular")
	ErrInvalidName = errors.New("invalid top-level name")
)

// Compression of Write: see internal/dtar (parallel gzip, deterministic
// whatever the number of threads).
const (
	BlockSize = dtar.BlockSize
	Level     = dtar.Level
)

// Options tune Write.
type Options struct {
	// Progress, when set, is called with the bytes of file content packed
	// so far and the total, every ProgressEvery bytes and once at the end.
	Progress      func(done, total int64)
	ProgressEvery int64 // default 8 MiB
}

// Write packs dir as top/… into w as a deterministic gzip tar: entries in
// lexical walk order, uid/gid 0 without user names, Epoch timestamps, mode
// 0755 for directories and executables and 0644 for other files. Only
// directories and regular files are allowed.
func Write(w io.Writer, top string, dir string) error {
	return WriteWith(w, top, dir, Options{})
}

// WriteWith is Write with progress reporting.
func WriteWith(w io.Writer, top string, dir string, o Options) error {
	if !validTop(top) {
		return fmt.Errorf("bundle: %w: %q", ErrInvalidName, top)
	}
	type entry struct {
		path, name string
		dir        bool
	}
	// Walk first: the total makes progress meaningful, and the walk is
	// cheap beside compressing.
	var list []entry
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		name := top
		if rel != "." {
			name = path.Join(top, filepath.ToSlash(rel))
		}
		switch {
		case d.IsDir():
			list = append(list, entry{p, name, true})
		case d.Type().IsRegular():
			if fi, err := d.Info(); err == nil {
				total += fi.Size()
			}
			list = append(list, entry{p, name, false})
		default:
			return fmt.Errorf("bundle: %w: %s", ErrNotRegular, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		return err
	}
	tw, err := dtar.NewWriter(w)
	if err != nil {
		return err
	}
	pr := &progress{fn: o.Progress, every: o.ProgressEvery, total: total}
	if pr.every <= 0 {
		pr.every = 8 << 20
	}
	for _, e := range list {
		if e.dir {
			err = tw.Dir(e.name)
		} else {
			err = writeFile(tw, e.path, e.name, pr)
		}
		if err != nil {
			tw.Close()
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	pr.end()
	return nil
}

// NewGzipWriter is the deterministic parallel gzip writer of Write.
func NewGzipWriter(w io.Writer) (*pgzip.Writer, error) { return dtar.NewGzipWriter(w) }

// progress counts packed content bytes for Options.Progress.
type progress struct {
	fn                func(done, total int64)
	every, done, last int64
	total             int64
}

func (p *progress) add(n int64) {
	p.done += n
	if p.fn != nil && p.done-p.last >= p.every {
		p.last = p.done
		p.fn(p.done, p.total)
	}
}

func (p *progress) end() {
	if p.fn != nil {
		p.fn(p.done, max(p.total, p.done))
	}
}

// countReader reports what passes through it to a progress.
type countReader struct {
	r io.Reader
	p *progress
}

func (c countReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.p.add(int64(n))
	return n, err
}

func writeFile(tw *dtar.Writer, p, name string, pr *progress) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("bundle: %w: %s", ErrNotRegular, name)
	}
	if err := tw.File(name, fi.Mode().Perm()&0o111 != 0, fi.Size(), countReader{f, pr}); err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	return nil
}

func validTop(top string) bool {
	return top != "" && top != "." && top != ".." && !strings.ContainsAny(top, "/\\\x00")
}

// Limits bound what Extract accepts. Zero fields take the defaults.
type Limits struct {
	MaxBytes   int64 // total bytes of regular files; default 8 GiB
	MaxEntries int   // number of entries; default 100,000
}

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = 8 << 30
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = 100_000
	}
	return l
}

// Extract unpacks a result tarball read from r under dest (an existing
// directory) and returns the path of its top directory. Only directories and
// regular files are accepted; absolute paths, "..", links, devices, FIFOs,
// duplicate paths, entries outside a single top directory and anything over
// lim are refused. All writes go through an os.Root at dest, so nothing can
// land outside it even if dest already contains symbolic links. On error,
// what was written so far is left in place for the caller to remove.
func Extract(r io.Reader, dest string, lim Limits) (string, error) {
	lim = lim.withDefaults()
	zr, err := gzip.NewReader(r)
	if err != nil {
		return "", fmt.Errorf("bundle: not a gzip stream: %w", err)
	}
	zr.Multistream(false)
	root, err := os.OpenRoot(dest)
	if err != nil {
		return "", fmt.Errorf("bundle: %w", err)
	}
	defer root.Close()

	tr := tar.NewReader(zr)
	var (
		top     string
		entries int
		total   int64
		seen    = map[string]bool{}
	)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", fmt.Errorf("bundle: read tarball: %w", err)
		}
		entries++
		if entries > lim.MaxEntries {
			return "", fmt.Errorf("bundle: %w (%d entries)", ErrTooMany, lim.MaxEntries)
		}
		name, err := cleanName(h.Name)
		if err != nil {
			return "", err
		}
		first, _, _ := strings.Cut(name, "/")
		if top == "" {
			top = first
		} else if first != top {
			return "", fmt.Errorf("bundle: %w", ErrNoTop)
		}
		if seen[name] {
			return "", fmt.Errorf("bundle: %w: %q", ErrDuplicate, name)
		}
		seen[name] = true
		switch h.Typeflag {
		case tar.TypeDir:
			if err := mkdirAll(root, name); err != nil {
				return "", err
			}
		case tar.TypeReg:
			if name == top {
				return "", fmt.Errorf("bundle: %w", ErrNoTop)
			}
			if h.Size < 0 || h.Size > lim.MaxBytes-total {
				return "", fmt.Errorf("bundle: %w (%d bytes)", ErrTooLarge, lim.MaxBytes)
			}
			total += h.Size
			if err := writeEntry(root, name, h, tr); err != nil {
				return "", err
			}
		default:
			return "", fmt.Errorf("bundle: %w: %q (type %q)", ErrEntryType, name, h.Typeflag)
		}
	}
	if top == "" {
		return "", fmt.Errorf("bundle: %w: empty tarball", ErrNoTop)
	}
	if !seen[top] {
		// A top directory without its own entry is fine, but it must exist.
		if fi, err := root.Stat(top); err != nil || !fi.IsDir() {
			return "", fmt.Errorf("bundle: %w", ErrNoTop)
		}
	}
	return filepath.Join(dest, filepath.FromSlash(top)), nil
}

// cleanName returns the slash-separated relative form of a tar entry name, or
// ErrUnsafePath.
func cleanName(n string) (string, error) {
	if n == "" || strings.ContainsAny(n, "\\\x00") || strings.HasPrefix(n, "/") {
		return "", fmt.Errorf("bundle: %w: %q", ErrUnsafePath, n)
	}
	trimmed := strings.TrimSuffix(n, "/")
	for _, part := range strings.Split(trimmed, "/") {
		if part == "" || part == "." || part == ".." {
			return "", fmt.Errorf("bundle: %w: %q", ErrUnsafePath, n)
		}
	}
	return trimmed, nil
}

func mkdirAll(root *os.Root, name string) error {
	if err := root.MkdirAll(filepath.FromSlash(name), 0o755); err != nil {
		return fmt.Errorf("bundle: create %s: %w", name, err)
	}
	return nil
}

func writeEntry(root *os.Root, name string, h *tar.Header, r io.Reader) error {
	if dir := path.Dir(name); dir != "." {
		if err := mkdirAll(root, dir); err != nil {
			return err
		}
	}
	mode := os.FileMode(0o644)
	if h.Mode&0o111 != 0 {
		mode = 0o755
	}
	f, err := root.OpenFile(filepath.FromSlash(name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("bundle: create %s: %w", name, err)
	}
	n, err := io.Copy(f, io.LimitReader(r, h.Size))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n != h.Size {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return fmt.Errorf("bundle: write %s: %w", name, err)
	}
	return nil
}
