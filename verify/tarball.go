package verify

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
	"testing/fstest"
)

// MaxTarball bounds what ReadTarball holds in memory: the decoded size of
// all regular files of a result tarball. A browser tab has a few GiB at
// most, and kettle's own results are far smaller.
const MaxTarball int64 = 1 << 30

// maxTarEntries bounds the number of entries (each costs memory even
// when empty).
const maxTarEntries = 100_000

// ReadTarball reads a result tarball (`GET /build/{id}/result`: gzip or
// plain tar) into memory and returns the result directory in it: the
// archive's root when provenance.json is there, else its single top-level
// directory. Regular files, directories and symbolic links are kept (a link
// is never followed out of the archive: the in-memory tree has nothing
// else); a hard link becomes a copy of the file it names, as extraction
// makes it. Names that are absolute, contain "..", or occur twice, and
// other entry types, make the archive unreadable (ErrUnreadable): an
// extracting tool would resolve them in ways the page cannot show.
// limit bounds the files' total size (0: MaxTarball).
func ReadTarball(r io.Reader, limit int64) (fs.FS, error) {
	if limit <= 0 {
		limit = MaxTarball
	}
	br := bufio.NewReader(r)
	var src io.Reader = br
	if magic, err := br.Peek(2); err == nil && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("%w: gzip: %w", ErrUnreadable, err)
		}
		defer zr.Close()
		src = zr
	}
	tr := tar.NewReader(src)
	m := fstest.MapFS{}
	var total int64
	for n := 0; ; n++ {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: tar: %w", ErrUnreadable, err)
		}
		if n >= maxTarEntries {
			return nil, fmt.Errorf("%w: more than %d tar entries", ErrUnreadable, maxTarEntries)
		}
		name, ok := tarName(h.Name)
		if !ok {
			return nil, fmt.Errorf("%w: tar entry %q is not a plain relative path", ErrUnreadable, h.Name)
		}
		if name == "." {
			continue
		}
		if prev, dup := m[name]; dup && !(prev.Mode.IsDir() && h.Typeflag == tar.TypeDir) {
			return nil, fmt.Errorf("%w: tar entry %q occurs twice", ErrUnreadable, name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			m[name] = &fstest.MapFile{Mode: fs.ModeDir | 0o755, ModTime: h.ModTime}
		case tar.TypeReg, tar.TypeRegA:
			if h.Size < 0 || h.Size > limit-total {
				return nil, fmt.Errorf("%w: the tarball holds more than %d bytes", ErrUnreadable, limit)
			}
			var b bytes.Buffer
			if _, err := io.CopyN(&b, tr, h.Size); err != nil {
				return nil, fmt.Errorf("%w: tar entry %q: %w", ErrUnreadable, name, err)
			}
			total += h.Size
			m[name] = &fstest.MapFile{Data: b.Bytes(), Mode: 0o644, ModTime: h.ModTime}
		case tar.TypeSymlink:
			// Kept as a link: Lstat shows it, and an artifact that is one
			// fails its check as it does on disk.
			m[name] = &fstest.MapFile{Data: []byte(h.Linkname), Mode: fs.ModeSymlink | 0o777, ModTime: h.ModTime}
		case tar.TypeLink:
			target, ok := tarName(h.Linkname)
			f := m[target]
			if !ok || f == nil || !f.Mode.IsRegular() {
				return nil, fmt.Errorf("%w: hard link %q names no earlier regular file", ErrUnreadable, name)
			}
			if int64(len(f.Data)) > limit-total {
				return nil, fmt.Errorf("%w: the tarball holds more than %d bytes", ErrUnreadable, limit)
			}
			total += int64(len(f.Data))
			m[name] = &fstest.MapFile{Data: f.Data, Mode: f.Mode, ModTime: h.ModTime}
		default:
			return nil, fmt.Errorf("%w: tar entry %q has type %q, not a file, directory or link", ErrUnreadable, name, h.Typeflag)
		}
	}
	// A parent that is a link or file would make the tree ambiguous.
	for name := range m {
		for d := path.Dir(name); d != "."; d = path.Dir(d) {
			if f, ok := m[d]; ok && !f.Mode.IsDir() {
				return nil, fmt.Errorf("%w: tar entry %q is inside %q, which is not a directory", ErrUnreadable, name, d)
			}
		}
	}
	if _, ok := m[ProvenanceFile]; ok {
		return m, nil
	}
	tops := map[string]bool{}
	for name := range m {
		top, _, _ := strings.Cut(name, "/")
		tops[top] = true
	}
	if len(tops) == 1 {
		for top := range tops {
			if f, ok := m[top]; !ok || f.Mode.IsDir() {
				return fs.Sub(m, top)
			}
		}
	}
	return m, nil
}

// tarName cleans an entry name ("./a/", "a//b") to a valid fs.FS path.
func tarName(n string) (string, bool) {
	if n == "" || strings.HasPrefix(n, "/") || strings.ContainsAny(n, "\\\x00") {
		return "", false
	}
	c := path.Clean(n)
	if c != "." && !fs.ValidPath(c) {
		return "", false
	}
	for _, el := range strings.Split(n, "/") {
		if el == ".." {
			return "", false
		}
	}
	return c, true
}

// BundleTarball verifies a result tarball held in memory: ReadTarball, then
// BundleFS. name is the Report's Dir (the file's name, say).
func BundleTarball(ctx context.Context, r io.Reader, name string, opts ...BundleOption) (*Report, error) {
	fsys, err := ReadTarball(r, 0)
	if err != nil {
		return nil, err
	}
	return BundleFS(ctx, fsys, name, opts...)
}
