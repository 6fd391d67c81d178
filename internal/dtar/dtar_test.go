package dtar

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
)

func write(t *testing.T, big []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := NewWriter(&b)
	if err != nil {
		t.Fatal(err)
	}
	long := "top/" + strings.Repeat("d", 120) + "-file" // one component over 100 bytes: no USTAR prefix split
	steps := []func() error{
		func() error { return w.Dir("top") },
		func() error { return w.File("top/run", true, 3, strings.NewReader("#!\n")) },
		func() error { return w.File("top/big", false, int64(len(big)), bytes.NewReader(big)) },
		func() error { return w.Symlink("top/link", "run") },
		func() error { return w.File(long, false, 1, strings.NewReader("xy")) }, // cut to its size
	}
	for _, s := range steps {
		if err := s(); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestDeterministic: the same entries give the same bytes whatever
// GOMAXPROCS, across several compression blocks, and every header is
// normalised (USTAR or GNU, no PAX records, 0:0, Epoch, fixed modes).
func TestDeterministic(t *testing.T) {
	big := make([]byte, 5*BlockSize+777)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range big {
		if (i/65536)%2 == 0 {
			big[i] = byte(rng.Uint32())
		} else {
			big[i] = byte(i / 1000)
		}
	}
	var first []byte
	for _, procs := range []int{1, 2, 8} {
		prev := runtime.GOMAXPROCS(procs)
		got := write(t, big)
		runtime.GOMAXPROCS(prev)
		if first == nil {
			first = got
		} else if !bytes.Equal(got, first) {
			t.Fatalf("GOMAXPROCS=%d changes the bytes", procs)
		}
	}
	zr, err := gzip.NewReader(bytes.NewReader(first))
	if err != nil {
		t.Fatal(err)
	}
	if zr.Name != "" || !zr.ModTime.IsZero() {
		t.Errorf("gzip header name %q mtime %v", zr.Name, zr.ModTime)
	}
	tr := tar.NewReader(zr)
	want := map[string]int64{"top/": 0o755, "top/run": 0o755, "top/big": 0o644, "top/link": 0o777}
	n := 0
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" || !h.ModTime.Equal(Epoch) || len(h.PAXRecords) != 0 {
			t.Errorf("%s: not normalised: %+v", h.Name, h)
		}
		if m, ok := want[h.Name]; ok && h.Mode != m {
			t.Errorf("%s: mode %o, want %o", h.Name, h.Mode, m)
		}
		switch h.Name {
		case "top/big":
			b, _ := io.ReadAll(tr)
			if !bytes.Equal(b, big) {
				t.Error("big file differs after a round trip")
			}
		case "top/link":
			if h.Typeflag != tar.TypeSymlink || h.Linkname != "run" {
				t.Errorf("symlink %+v", h)
			}
		default:
			if strings.HasSuffix(h.Name, "-file") {
				if h.Format != tar.FormatGNU || h.Size != 1 {
					t.Errorf("long name: format %v size %d", h.Format, h.Size)
				}
			}
		}
	}
	if n != 5 {
		t.Errorf("%d entries, want 5", n)
	}
}

// TestShortSource: a source shorter than the size it was announced with
// fails instead of writing a corrupt archive.
func TestShortSource(t *testing.T) {
	w, err := NewWriter(io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.File("f", false, 10, strings.NewReader("abc")); err == nil {
		t.Fatal("a short file was packed")
	}
}
