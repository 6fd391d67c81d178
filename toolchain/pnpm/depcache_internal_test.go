package pnpm

import (
	"context"
	"crypto/sha512"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/kettle-build/kettle/depcache"
	"github.com/kettle-build/kettle/toolchain"
)

func sri(b []byte) string {
	s := sha512.Sum512(b)
	return "sha512-" + base64.StdEncoding.EncodeToString(s[:])
}

// TestFillVerifiesIntegrity: what the fetch sandbox left as a download
// enters the shared cache only as kettle's own copy whose bytes have the
// lockfile's integrity. Bytes that do not match (a subverted mirror or
// pnpm), a symlink to the right bytes, a FIFO, a sha1 integrity: none is
// cached; a hard link to the right bytes is copied, never linked.
func TestFillVerifiesIntegrity(t *testing.T) {
	c, err := depcache.Open(filepath.Join(t.TempDir(), "depcache"), 1<<30, nil)
	if err != nil {
		t.Fatal(err)
	}
	dl := t.TempDir()
	good := []byte("the real tarball")
	write := func(name string, b []byte) string {
		p := filepath.Join(dl, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	goodFile := write("good.tgz", good)
	hard := filepath.Join(dl, "hard.tgz")
	if err := os.Link(goodFile, hard); err != nil {
		t.Fatal(err)
	}
	sym := filepath.Join(dl, "sym.tgz")
	os.Symlink(goodFile, sym)
	fifo := filepath.Join(dl, "fifo.tgz")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	hardTo := func(p string) string {
		if err := os.Link(p, p+".link"); err != nil {
			t.Fatal(err)
		}
		return p + ".link"
	}
	sha1Int := "sha1-" + base64.StdEncoding.EncodeToString(make([]byte, 20))
	cases := []struct {
		name, integrity, out string
		cached               bool
	}{
		{"good", sri(good), goodFile, true},
		{"hardlink-copied", sri([]byte("x" + string(good))), hardTo(write("hx.tgz", []byte("x"+string(good)))), true},
		{"wrong-bytes", sri([]byte("what the lockfile pins")), write("evil.tgz", []byte("evil bytes")), false},
		{"symlink", sri([]byte("via symlink")), sym, false},
		{"fifo", sri([]byte("via fifo")), fifo, false},
		{"sha1", sha1Int, write("sha1.tgz", []byte("sha1")), false},
		{"missing", sri([]byte("never downloaded")), filepath.Join(dl, "none.tgz"), false},
	}
	d := &Driver{}
	u := &cacheUse{}
	for _, tc := range cases {
		u.misses = append(u.misses, miss{pkg: RegistryPackage{Name: tc.name, Version: "1.0.0", Integrity: tc.integrity}, out: tc.out})
	}
	var log []string
	w := &toolchain.Workspace{DepCache: c, CacheDir: dl, Log: func(s string) { log = append(log, s) }}
	if n := d.fill(context.Background(), w, u); n != 2 {
		t.Fatalf("filled %d, want 2\n%s", n, strings.Join(log, "\n"))
	}
	for _, tc := range cases {
		if got := c.Has(depcache.Key{Kind: KindTarball, Digest: tc.integrity}); got != tc.cached {
			t.Errorf("%s: cached %v, want %v", tc.name, got, tc.cached)
		}
	}
	// The cached file is a new inode of the cache's, not the download.
	l := c.NewLease()
	defer l.Release()
	entry, ok := c.Get(depcache.Key{Kind: KindTarball, Digest: sri(good)}, l)
	if !ok {
		t.Fatal("good entry refused")
	}
	a, _ := os.Stat(filepath.Join(entry, TarballFile))
	b, _ := os.Stat(hard)
	if os.SameFile(a, b) || a.Mode().Perm() != 0o444 {
		t.Fatalf("entry file is the download's inode or writable (%v)", a.Mode())
	}
	for _, l := range log {
		if strings.Contains(l, dl) {
			t.Errorf("log names a server path: %s", l)
		}
	}
	t.Logf("log:\n%s", strings.Join(log, "\n"))
}

func TestVerifyIntegrity(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	os.WriteFile(p, []byte("abc"), 0o644)
	if err := VerifyIntegrity(p, sri([]byte("abc"))); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{sri([]byte("abd")), "sha1-qZk+NkcGgWq6PiVxeFDCbJzQ2J0=", "nodash", "md5-xyz"} {
		if err := VerifyIntegrity(p, bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestTarballPath(t *testing.T) {
	for _, tc := range [][3]string{
		{"ms", "2.1.3", "ms/-/ms-2.1.3.tgz"},
		{"@types/ms", "2.1.0", "@types/ms/-/ms-2.1.0.tgz"},
	} {
		if got := tarballPath(tc[0], tc[1]); got != tc[2] {
			t.Errorf("%s@%s: %s", tc[0], tc[1], got)
		}
	}
	for _, n := range []string{"../x", "@s/../x", "a/b", "@s/a/b", "a b", "a?b", "a%2f"} {
		if pkgName.MatchString(n) && !strings.Contains(n, "..") {
			t.Errorf("name %q accepted", n)
		}
	}
	if registryURL([]string{"npm_config_registry=http://r.example/npm"}) != "http://r.example/npm/" || registryURL(nil) != DefaultRegistry {
		t.Error("registryURL")
	}
}
