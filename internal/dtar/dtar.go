// Package dtar is kettle's one deterministic tar.gz writer: the result
// bundle (bundle.Write), pnpm's dist tarball and the benchmarks' source
// archives all go through it. The bytes depend only on the entries written
// (names, contents, exec bits, symlink targets) and their order: owner 0:0
// without user or group names, Epoch timestamps, mode 0755 for directories
// and executables, 0644 for other files, 0777 for symlinks, USTAR headers
// (GNU long names when a name does not fit; never PAX records, which would
// carry times or user names), and a gzip header without name or time.
//
// Compression is parallel gzip (klauspost/pgzip) in blocks of BlockSize,
// each compressed with the previous block's tail as dictionary: the bytes
// never depend on the number of goroutines or on scheduling, so the same
// entries give the same tarball on any machine, whatever GOMAXPROCS.
package dtar

import (
	"archive/tar"
	"fmt"
	"io"
	"runtime"
	"time"

	"github.com/klauspost/pgzip"
)

// Epoch is the modification time of every entry.
var Epoch = time.Unix(0, 0).UTC()

const (
	BlockSize = 1 << 20
	Level     = 1 // BestSpeed: results are mostly binaries, where higher levels gain a few percent at 3-5× the time
)

// Writer writes a deterministic tar.gz. Its methods are not safe for
// concurrent use.
type Writer struct {
	zw *pgzip.Writer
	tw *tar.Writer
}

// NewWriter starts a tar.gz on w.
func NewWriter(w io.Writer) (*Writer, error) {
	zw, err := NewGzipWriter(w)
	if err != nil {
		return nil, err
	}
	return &Writer{zw: zw, tw: tar.NewWriter(zw)}, nil
}

// NewGzipWriter is the deterministic parallel gzip writer of Writer (no
// name, no time in the header; see BlockSize).
func NewGzipWriter(w io.Writer) (*pgzip.Writer, error) {
	zw, err := pgzip.NewWriterLevel(w, Level)
	if err != nil {
		return nil, err
	}
	if err := zw.SetConcurrency(BlockSize, 2*runtime.GOMAXPROCS(0)); err != nil {
		return nil, err
	}
	// pgzip writes a zero time.Time as its (non-zero) Unix seconds; the
	// epoch is written as 0, as compress/gzip writes "no time".
	zw.ModTime = time.Unix(0, 0)
	return zw, nil
}

// Dir writes a directory entry; name has no trailing slash.
func (w *Writer) Dir(name string) error {
	return w.header(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: 0o755})
}

// File writes a regular file of size bytes read from r. Exactly size bytes
// are copied: a source that is longer is cut, one that is shorter fails
// (a file that grows or shrinks while packed cannot corrupt the archive).
func (w *Writer) File(name string, exec bool, size int64, r io.Reader) error {
	mode := int64(0o644)
	if exec {
		mode = 0o755
	}
	if err := w.header(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: size}); err != nil {
		return err
	}
	if _, err := io.CopyN(w.tw, r, size); err != nil {
		return fmt.Errorf("tar: pack %s: %w", name, err)
	}
	return nil
}

// Symlink writes a symbolic link to target (stored, never followed).
func (w *Writer) Symlink(name, target string) error {
	return w.header(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777})
}

// Close ends the tar stream and the gzip stream; it does not close the
// underlying writer.
func (w *Writer) Close() error {
	if err := w.tw.Close(); err != nil {
		w.zw.Close()
		return err
	}
	return w.zw.Close()
}

// header fixes every field that would make the bytes depend on the
// machine, then writes h as USTAR if it fits, GNU otherwise.
func (w *Writer) header(h *tar.Header) error {
	h.ModTime = Epoch
	h.Uid, h.Gid = 0, 0
	h.Uname, h.Gname = "", ""
	h.Format = tar.FormatUSTAR
	if err := w.tw.WriteHeader(h); err != nil {
		h.Format = tar.FormatGNU
		if err2 := w.tw.WriteHeader(h); err2 != nil {
			return fmt.Errorf("tar: header %s: %w", h.Name, err2)
		}
	}
	return nil
}
