package toolchain

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// TestOutputsRefuseLinks: every way a build could make the trusted process
// read outside its tree is refused (docs/security.md, "Artifact collection").
func TestOutputsRefuseLinks(t *testing.T) {
	host := t.TempDir()
	secret := filepath.Join(host, "secret")
	os.WriteFile(secret, []byte("host secret"), 0o600)
	os.Mkdir(filepath.Join(host, "dir"), 0o755)
	os.WriteFile(filepath.Join(host, "dir", "token"), []byte("tok"), 0o600)

	proj := t.TempDir()
	mk := func(p string) string { p = filepath.Join(proj, p); os.MkdirAll(filepath.Dir(p), 0o755); return p }
	os.WriteFile(mk("target/release/ok"), []byte("binary"), 0o755)
	os.Symlink(filepath.Join(host, "dir"), mk("target/linkdir"))         // symlinked directory component
	os.Symlink(secret, mk("target/release/sym"))                         // symlinked file
	os.Symlink("../release", mk("target/inner/rel"))                     // in-tree symlink: still refused
	os.Link(secret, mk("target/release/hard"))                           // hard link to a file outside
	os.WriteFile(mk("target/release/deps/bin-123"), []byte("b"), 0o755)  // cargo's own hard link pair
	os.Link(mk("target/release/deps/bin-123"), mk("target/release/bin")) //
	if err := os.Symlink(filepath.Join(host, "dir"), mk("linkedroot")); err != nil {
		t.Fatal(err)
	}

	o, err := OpenOutputs(proj, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if err := o.ScanLinks("target/release"); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	for _, tc := range []struct {
		rel  string
		want error
	}{
		{"target/release/ok", nil},
		{"target/release/bin", nil},
		{"target/linkdir/token", ErrUnsafeOutput},
		{"linkedroot/token", ErrUnsafeOutput},
		{"target/release/sym", ErrUnsafeOutput},
		{"target/inner/rel/ok", ErrUnsafeOutput},
		{"target/release/hard", ErrUnsafeOutput},
		{"../" + filepath.Base(host) + "/secret", ErrUnsafeOutput},
		{"target/release/missing", fs.ErrNotExist},
	} {
		_, err := o.Copy(tc.rel, dst, filepath.Base(tc.rel))
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("Copy(%s) = %v, want %v", tc.rel, err, tc.want)
		}
	}
	if _, err := o.ReadDir("target/linkdir"); !errors.Is(err, ErrUnsafeOutput) {
		t.Errorf("ReadDir through a symlink: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "ok")); string(b) != "binary" {
		t.Errorf("copied content %q", b)
	}
}

func TestOutputsBudget(t *testing.T) {
	proj := t.TempDir()
	os.WriteFile(filepath.Join(proj, "a"), make([]byte, 600), 0o644)
	os.WriteFile(filepath.Join(proj, "b"), make([]byte, 600), 0o644)
	f, _ := os.Create(filepath.Join(proj, "sparse"))
	f.Truncate(1 << 40) // 1 TiB apparent, no blocks
	f.Close()
	o, err := OpenOutputs(proj, 1000)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	dst := t.TempDir()
	if a, err := o.Copy("a", dst, "a"); err != nil || a.Size != 600 {
		t.Fatal(a, err)
	}
	if _, err := o.Copy("b", dst, "b"); !errors.Is(err, ErrUnsafeOutput) {
		t.Errorf("second file over budget: %v", err)
	}
	if _, err := o.Copy("sparse", dst, "sparse"); !errors.Is(err, ErrUnsafeOutput) {
		t.Errorf("sparse file over budget: %v", err)
	}
}
