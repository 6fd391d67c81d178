package cargo

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// errCrate is wrapped by every reason extractCrate refuses a .crate.
var errCrate = errors.New("crate not extracted")

// extractCrate extracts the .crate data (a gzip tar; the attacker's bytes,
// which the Cargo.lock checksum only pins) into dst, an empty directory of
// the trusted process: only regular files and directories, every name
// under "<name>-<version>/" and written without that prefix, no absolute
// name, no "." or ".." component, no link of any kind, no device or FIFO,
// no name twice, at most maxCrateEntries names and maxUnpackedBytes of
// content; writes go through an os.Root on dst. Files keep only their
// executable bit. Anything else refuses the whole crate: the job built it
// from cargo's own extraction anyway, it is just not cached.
func extractCrate(data []byte, name, version, dst string) error {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("%w: %v", errCrate, err)
	}
	zr.Multistream(false)
	root, err := os.OpenRoot(dst)
	if err != nil {
		return err
	}
	defer root.Close()
	prefix := name + "-" + version + "/"
	tr := tar.NewReader(&capReader{r: zr, left: maxUnpackedBytes + 1<<20})
	var total int64
	seen := map[string]bool{}
	for n := 0; ; n++ {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: %v", errCrate, err)
		}
		if n >= maxCrateEntries {
			return fmt.Errorf("%w: more than %d entries", errCrate, maxCrateEntries)
		}
		rel, ok := strings.CutPrefix(h.Name, prefix)
		if !ok {
			return fmt.Errorf("%w: an entry outside %s", errCrate, prefix)
		}
		rel = strings.TrimSuffix(rel, "/")
		if h.Typeflag == tar.TypeDir && rel == "" {
			continue
		}
		if !cleanRel(rel) {
			return fmt.Errorf("%w: entry name %q", errCrate, clip(h.Name))
		}
		if rel == ".cargo-checksum.json" || rel == ".cargo-ok" {
			return fmt.Errorf("%w: it holds %s", errCrate, rel)
		}
		if seen[rel] {
			return fmt.Errorf("%w: %q twice", errCrate, clip(rel))
		}
		seen[rel] = true
		if d := path.Dir(rel); d != "." {
			if err := root.MkdirAll(d, 0o755); err != nil {
				return fmt.Errorf("%w: %v", errCrate, err)
			}
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(rel, 0o755); err != nil {
				return fmt.Errorf("%w: %v", errCrate, err)
			}
		case tar.TypeReg, tar.TypeRegA:
			if h.Size < 0 || total+h.Size > maxUnpackedBytes {
				return fmt.Errorf("%w: more than %d bytes unpacked", errCrate, maxUnpackedBytes)
			}
			total += h.Size
			mode := os.FileMode(0o644)
			if h.Mode&0o111 != 0 {
				mode = 0o755
			}
			f, err := root.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
			if err != nil {
				return fmt.Errorf("%w: %v", errCrate, err)
			}
			_, err = io.CopyN(f, tr, h.Size)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("%w: %v", errCrate, err)
			}
		default:
			return fmt.Errorf("%w: %q is not a regular file or directory", errCrate, clip(rel))
		}
	}
}

// cleanRel accepts a relative slash path with no empty, "." or ".."
// component and no NUL or backslash.
func cleanRel(rel string) bool {
	if rel == "" || strings.ContainsAny(rel, "\x00\\") || path.IsAbs(rel) {
		return false
	}
	for _, c := range strings.Split(rel, "/") {
		if c == "" || c == "." || c == ".." {
			return false
		}
	}
	return true
}

// capReader fails once more than left bytes were read (the gzip stream's
// decompressed size: a small .crate can inflate to far more).
type capReader struct {
	r    io.Reader
	left int64
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, fmt.Errorf("%w: decompresses to more than %d bytes", errCrate, maxUnpackedBytes)
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}
