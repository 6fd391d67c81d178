package cargo_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/kettle-build/kettle/toolchain/cargo"
)

type tarEntry struct {
	name, body, link string
	typ              byte  // tar.TypeReg when 0
	mode             int64 // 0o644 when 0
	size             int64 // len(body) when 0
}

// tarGz is a gzip tar of entries, written as given (hostile names too).
func tarGz(t testing.TB, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Size: e.size, Linkname: e.link, Format: tar.FormatPAX}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if h.Typeflag == tar.TypeReg && h.Size == 0 {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg && e.size == 0 {
			tw.Write([]byte(e.body))
		}
	}
	tw.Flush() // a header claiming more data than follows stays unclosed
	zw.Close()
	return buf.Bytes()
}

// TestExtractCrate: an honest .crate is extracted without its
// "<name>-<version>/" prefix, executable bits kept; hostile ones (path
// traversal, absolute names, entries outside the prefix, symlinks, hard
// links, FIFOs, devices, a name twice, a planted .cargo-checksum.json, a
// huge claimed size, a gzip bomb) are refused and nothing is written
// outside the destination.
func TestExtractCrate(t *testing.T) {
	ok := func(n, body string) tarEntry { return tarEntry{name: "foo-0.1.0/" + n, body: body} }
	t.Run("honest", func(t *testing.T) {
		dst := t.TempDir()
		data := tarGz(t, []tarEntry{
			{name: "foo-0.1.0/", typ: tar.TypeDir, mode: 0o755},
			ok("Cargo.toml", "[package]\n"),
			ok("src/lib.rs", "pub fn x() {}\n"),
			{name: "foo-0.1.0/configure", body: "#!/bin/sh\n", mode: 0o755},
			{name: "foo-0.1.0/empty/", typ: tar.TypeDir, mode: 0o755},
		})
		if err := cargo.ExtractCrate(data, "foo", "0.1.0", dst); err != nil {
			t.Fatal(err)
		}
		for n, want := range map[string]string{"Cargo.toml": "[package]\n", "src/lib.rs": "pub fn x() {}\n", "configure": "#!/bin/sh\n"} {
			if b, err := os.ReadFile(filepath.Join(dst, n)); err != nil || string(b) != want {
				t.Errorf("%s: %q %v", n, b, err)
			}
		}
		if fi, err := os.Stat(filepath.Join(dst, "configure")); err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("configure lost its executable bit: %v", fi)
		}
		if fi, err := os.Stat(filepath.Join(dst, "empty")); err != nil || !fi.IsDir() {
			t.Errorf("empty directory missing: %v", err)
		}
	})
	bomb := func() []byte {
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
		tw := tar.NewWriter(zw)
		tw.WriteHeader(&tar.Header{Name: "foo-0.1.0/big", Typeflag: tar.TypeReg, Mode: 0o644, Size: 600 << 20})
		zero := make([]byte, 1<<20)
		for range 600 {
			if _, err := tw.Write(zero); err != nil {
				break
			}
		}
		tw.Close()
		zw.Close()
		return buf.Bytes()
	}
	for _, tc := range []struct {
		name string
		data func() []byte
	}{
		{"dotdot", func() []byte { return tarGz(t, []tarEntry{ok("../../escape", "x")}) }},
		{"dotdot-inside", func() []byte { return tarGz(t, []tarEntry{ok("src/../../escape", "x")}) }},
		{"absolute", func() []byte { return tarGz(t, []tarEntry{{name: "/tmp/escape", body: "x"}}) }},
		{"outside-prefix", func() []byte { return tarGz(t, []tarEntry{{name: "bar-0.1.0/x", body: "x"}}) }},
		{"prefix-lookalike", func() []byte { return tarGz(t, []tarEntry{{name: "foo-0.1.0x/x", body: "x"}}) }},
		{"symlink", func() []byte {
			return tarGz(t, []tarEntry{{name: "foo-0.1.0/src", typ: tar.TypeSymlink, link: "/etc"}, ok("src/passwd", "x")})
		}},
		{"hardlink", func() []byte {
			return tarGz(t, []tarEntry{{name: "foo-0.1.0/passwd", typ: tar.TypeLink, link: "/etc/passwd"}})
		}},
		{"fifo", func() []byte { return tarGz(t, []tarEntry{{name: "foo-0.1.0/p", typ: tar.TypeFifo}}) }},
		{"device", func() []byte { return tarGz(t, []tarEntry{{name: "foo-0.1.0/d", typ: tar.TypeChar}}) }},
		{"twice", func() []byte { return tarGz(t, []tarEntry{ok("a", "1"), ok("a", "2")}) }},
		{"file-then-dir", func() []byte { return tarGz(t, []tarEntry{ok("a", "1"), ok("a/b", "2")}) }},
		{"checksum-file", func() []byte { return tarGz(t, []tarEntry{ok(".cargo-checksum.json", "{}")}) }},
		{"cargo-ok", func() []byte { return tarGz(t, []tarEntry{ok(".cargo-ok", "{}")}) }},
		{"huge-claim", func() []byte { return tarGz(t, []tarEntry{{name: "foo-0.1.0/big", size: 1 << 40}}) }},
		{"gzip-bomb", bomb},
		{"not-gzip", func() []byte { return []byte("not a crate") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			dst := filepath.Join(base, "dst")
			os.Mkdir(dst, 0o755)
			if err := cargo.ExtractCrate(tc.data(), "foo", "0.1.0", dst); err == nil {
				t.Fatal("extracted")
			}
			assertContained(t, base, dst)
		})
	}
}

// assertContained: nothing but dst under base, and only regular files
// and directories in dst.
func assertContained(t testing.TB, base, dst string) {
	t.Helper()
	filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if p != base && p != dst && !strings.HasPrefix(p, dst+string(filepath.Separator)) {
			t.Errorf("written outside the destination: %s", p)
		}
		if !d.IsDir() && !d.Type().IsRegular() {
			t.Errorf("not a regular file: %s", p)
		}
		return nil
	})
	if _, err := os.Lstat("/tmp/escape"); err == nil {
		t.Error("/tmp/escape was written")
	}
}

// FuzzExtractCrate: whatever the bytes, extractCrate writes only regular
// files and directories, and only under its destination.
func FuzzExtractCrate(f *testing.F) {
	f.Add(tarGz(f, []tarEntry{{name: "foo-0.1.0/Cargo.toml", body: "[package]\n"}}))
	f.Add(tarGz(f, []tarEntry{{name: "foo-0.1.0/../x", body: "x"}}))
	f.Add(tarGz(f, []tarEntry{{name: "foo-0.1.0/l", typ: tar.TypeSymlink, link: "/"}, {name: "foo-0.1.0/l/x", body: "x"}}))
	f.Add([]byte{0x1f, 0x8b})
	f.Fuzz(func(t *testing.T, data []byte) {
		base := t.TempDir()
		dst := filepath.Join(base, "dst")
		os.Mkdir(dst, 0o755)
		_ = cargo.ExtractCrate(data, "foo", "0.1.0", dst)
		assertContained(t, base, dst)
	})
}

// TestReadCrate: a fill reads the .crate the fetch left only as a regular
// file (no symlink followed, no FIFO opened to block on), within the size
// bound, into memory, and only when its sha256 is Cargo.lock's checksum:
// bytes changed after cargo checked them never enter the cache.
func TestReadCrate(t *testing.T) {
	dir := t.TempDir()
	good := []byte("crate bytes")
	h := sha256.Sum256(good)
	sum := hex.EncodeToString(h[:])
	os.WriteFile(filepath.Join(dir, "good.crate"), good, 0o644)
	os.WriteFile(filepath.Join(dir, "changed.crate"), []byte("crate bytez"), 0o644)
	os.Symlink("good.crate", filepath.Join(dir, "link.crate"))
	syscall.Mkfifo(filepath.Join(dir, "fifo.crate"), 0o644)
	os.Mkdir(filepath.Join(dir, "dir.crate"), 0o755)
	f, _ := os.Create(filepath.Join(dir, "big.crate"))
	f.Truncate(65<<20 + 1)
	f.Close()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if b, err := cargo.ReadCrate(root, "good.crate", sum); err != nil || !bytes.Equal(b, good) {
		t.Fatalf("good: %q %v", b, err)
	}
	for _, name := range []string{"changed.crate", "link.crate", "fifo.crate", "dir.crate", "big.crate", "../escape.crate"} {
		if _, err := cargo.ReadCrate(root, name, sum); err == nil {
			t.Errorf("%s was read", name)
		}
	}
}
