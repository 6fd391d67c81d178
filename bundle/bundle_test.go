package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files")

// makeResult lays out a result directory like pipeline.Run's OutDir.
func makeResult(t *testing.T, mtime time.Time, umaskedMode os.FileMode) string {
	t.Helper()
	dir := t.TempDir()
	files := []struct {
		name string
		body string
		mode os.FileMode
	}{
		{"artifacts/hello", "\x7fELF fake binary", 0o755 & umaskedMode},
		{"artifacts/world", "another binary", 0o700},
		{"build-config/Cargo.lock", "# lock\n", 0o600},
		{"provenance.json", "{\n  \"_type\": \"x\"\n}", 0o644 & umaskedMode},
		{"manifest.json", "{}", 0o644},
		{"evidence.json", `{"platform":"insecure","evidence":{}}`, 0o644},
	}
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f.body), f.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, f.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestWriteGolden(t *testing.T) {
	var a, b bytes.Buffer
	if err := Write(&a, "demo", makeResult(t, time.Now(), 0o777)); err != nil {
		t.Fatal(err)
	}
	// Other times and permission bits that do not affect exec: same bytes.
	if err := Write(&b, "demo", makeResult(t, time.Unix(1e9, 0), 0o750)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("Write is not deterministic")
	}
	golden := filepath.Join("testdata", "demo.tar.gz")
	if *update {
		if err := os.WriteFile(golden, a.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), want) {
		t.Fatalf("tarball differs from %s (run with -update if the change is intended)", golden)
	}
}

func TestWriteHeaders(t *testing.T) {
	var buf bytes.Buffer
	if err := Write(&buf, "demo", makeResult(t, time.Now(), 0o777)); err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		names = append(names, h.Name)
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" || !h.ModTime.Equal(Epoch) {
			t.Errorf("%s: owner/time not normalised: %+v", h.Name, h)
		}
		if len(h.PAXRecords) != 0 {
			t.Errorf("%s: PAX records %v", h.Name, h.PAXRecords)
		}
		wantMode := int64(0o644)
		switch h.Name {
		case "demo/artifacts/hello", "demo/artifacts/world":
			wantMode = 0o755
		}
		if h.Typeflag == tar.TypeDir {
			wantMode = 0o755
		}
		if h.Mode != wantMode {
			t.Errorf("%s: mode %o, want %o", h.Name, h.Mode, wantMode)
		}
	}
	want := []string{"demo/", "demo/artifacts/", "demo/artifacts/hello", "demo/artifacts/world",
		"demo/build-config/", "demo/build-config/Cargo.lock", "demo/evidence.json", "demo/manifest.json", "demo/provenance.json"}
	if len(names) != len(want) {
		t.Fatalf("entries %q, want %q", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Fatalf("entries %q, want %q", names, want)
		}
	}
}

func TestWriteRefusesLinksAndBadTop(t *testing.T) {
	dir := makeResult(t, time.Now(), 0o777)
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "artifacts", "link")); err != nil {
		t.Fatal(err)
	}
	if err := Write(&bytes.Buffer{}, "demo", dir); !errors.Is(err, ErrNotRegular) {
		t.Fatalf("symlink: err = %v, want ErrNotRegular", err)
	}
	for _, top := range []string{"", ".", "..", "a/b"} {
		if err := Write(&bytes.Buffer{}, top, t.TempDir()); !errors.Is(err, ErrInvalidName) {
			t.Errorf("top %q: err = %v", top, err)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	src := makeResult(t, time.Now(), 0o777)
	var buf bytes.Buffer
	if err := Write(&buf, "demo", src); err != nil {
		t.Fatal(err)
	}
	dest := t.TempDir()
	top, err := Extract(&buf, dest, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if top != filepath.Join(dest, "demo") {
		t.Fatalf("top = %s", top)
	}
	for _, name := range []string{"artifacts/hello", "build-config/Cargo.lock", "provenance.json", "evidence.json"} {
		a, _ := os.ReadFile(filepath.Join(src, name))
		b, err := os.ReadFile(filepath.Join(top, name))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s differs after round trip: %v", name, err)
		}
	}
	fi, err := os.Stat(filepath.Join(top, "artifacts", "hello"))
	if err != nil || fi.Mode().Perm()&0o100 == 0 {
		t.Errorf("exec bit lost: %v %v", fi.Mode(), err)
	}
}

type entry struct {
	name     string
	typ      byte
	body     string
	linkname string
	size     int64 // when non-zero, overrides len(body) in the header
}

func makeTar(t testing.TB, entries []entry) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Linkname: e.linkname, Format: tar.FormatGNU}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

func TestExtractHostile(t *testing.T) {
	reg := byte(tar.TypeReg)
	big := bytes.Repeat([]byte("a"), 2048)
	tests := []struct {
		name    string
		entries []entry
		lim     Limits
		want    error
	}{
		{"absolute", []entry{{name: "/etc/evil", typ: reg, body: "x"}}, Limits{}, ErrUnsafePath},
		{"dotdot", []entry{{name: "top/../../evil", typ: reg, body: "x"}}, Limits{}, ErrUnsafePath},
		{"dotdot-top", []entry{{name: "../evil", typ: reg, body: "x"}}, Limits{}, ErrUnsafePath},
		{"dot", []entry{{name: "./top/x", typ: reg, body: "x"}}, Limits{}, ErrUnsafePath},
		{"backslash", []entry{{name: "top\\..\\x", typ: reg, body: "x"}}, Limits{}, ErrUnsafePath},
		{"symlink", []entry{{name: "top/", typ: tar.TypeDir}, {name: "top/l", typ: tar.TypeSymlink, linkname: "/etc"}}, Limits{}, ErrEntryType},
		{"symlink-then-file", []entry{{name: "top/l", typ: tar.TypeSymlink, linkname: ".."}, {name: "top/l/x", typ: reg, body: "x"}}, Limits{}, ErrEntryType},
		{"hardlink", []entry{{name: "top/h", typ: tar.TypeLink, linkname: "/etc/passwd"}}, Limits{}, ErrEntryType},
		{"chardev", []entry{{name: "top/c", typ: tar.TypeChar}}, Limits{}, ErrEntryType},
		{"fifo", []entry{{name: "top/f", typ: tar.TypeFifo}}, Limits{}, ErrEntryType},
		{"two-tops", []entry{{name: "a/x", typ: reg, body: "x"}, {name: "b/x", typ: reg, body: "x"}}, Limits{}, ErrNoTop},
		{"file-at-top", []entry{{name: "x", typ: reg, body: "x"}}, Limits{}, ErrNoTop},
		{"duplicate", []entry{{name: "top/x", typ: reg, body: "x"}, {name: "top/x", typ: reg, body: "y"}}, Limits{}, ErrDuplicate},
		{"too-large", []entry{{name: "top/x", typ: reg, body: string(big)}}, Limits{MaxBytes: 1024}, ErrTooLarge},
		{"too-many", []entry{{name: "top/a", typ: reg}, {name: "top/b", typ: reg}, {name: "top/c", typ: reg}}, Limits{MaxEntries: 2}, ErrTooMany},
		{"empty", nil, Limits{}, ErrNoTop},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			parent := t.TempDir()
			dest := filepath.Join(parent, "dest")
			if err := os.Mkdir(dest, 0o755); err != nil {
				t.Fatal(err)
			}
			_, err := Extract(bytes.NewReader(makeTar(t, tc.entries)), dest, tc.lim)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if _, err := os.Stat(filepath.Join(parent, "evil")); err == nil {
				t.Fatal("wrote outside dest")
			}
		})
	}
}

func TestExtractThroughPreexistingSymlink(t *testing.T) {
	parent := t.TempDir()
	dest := filepath.Join(parent, "dest")
	os.Mkdir(dest, 0o755)
	outside := filepath.Join(parent, "outside")
	os.Mkdir(outside, 0o755)
	if err := os.Symlink(outside, filepath.Join(dest, "top")); err != nil {
		t.Fatal(err)
	}
	_, err := Extract(bytes.NewReader(makeTar(t, []entry{{name: "top/x", typ: tar.TypeReg, body: "x"}})), dest, Limits{})
	if err == nil {
		t.Fatal("extract through a symlink leaving dest succeeded")
	}
	if _, err := os.Stat(filepath.Join(outside, "x")); err == nil {
		t.Fatal("wrote outside dest")
	}
}

func TestExtractCorrupt(t *testing.T) {
	good := makeTar(t, []entry{{name: "top/x", typ: tar.TypeReg, body: "hello world"}})
	for name, data := range map[string][]byte{
		"not-gzip":  []byte("PK\x03\x04 not a tarball"),
		"truncated": good[:len(good)/2],
	} {
		if _, err := Extract(bytes.NewReader(data), t.TempDir(), Limits{}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func FuzzExtract(f *testing.F) {
	f.Add(makeTar(f, []entry{{name: "top/", typ: tar.TypeDir}, {name: "top/x", typ: tar.TypeReg, body: "x"}}))
	f.Add(makeTar(f, []entry{{name: "top/../x", typ: tar.TypeReg, body: "x"}}))
	f.Add(makeTar(f, []entry{{name: "top/l", typ: tar.TypeSymlink, linkname: "/"}}))
	f.Fuzz(func(t *testing.T, data []byte) {
		parent := t.TempDir()
		dest := filepath.Join(parent, "dest")
		os.Mkdir(dest, 0o755)
		top, err := Extract(bytes.NewReader(data), dest, Limits{MaxBytes: 1 << 20, MaxEntries: 100})
		if err == nil {
			if rel, rerr := filepath.Rel(dest, top); rerr != nil || rel == "." || filepath.IsLocal(rel) == false {
				t.Fatalf("top %q outside dest", top)
			}
		}
		ents, _ := os.ReadDir(parent)
		if len(ents) != 1 {
			t.Fatalf("wrote outside dest: %v", ents)
		}
	})
}

func TestLongNames(t *testing.T) {
	dir := t.TempDir()
	long := strings.Repeat("n", 150)
	p := filepath.Join(dir, "artifacts", long)
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	var a, b bytes.Buffer
	if err := Write(&a, "demo", dir); err != nil {
		t.Fatal(err)
	}
	Write(&b, "demo", dir)
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("not deterministic")
	}
	top, err := Extract(&a, t.TempDir(), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(top, "artifacts", long)); err != nil || string(got) != "x" {
		t.Fatalf("long name lost: %v", err)
	}
}
