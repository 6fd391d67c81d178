package pnpm

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/kettle-build/kettle/toolchain"
)

// makeDist writes a dist/ tree with the given mtime and file modes.
func makeDist(t *testing.T, mtime time.Time, fileMode os.FileMode) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"dist/index.js":     "module.exports = 1;\n",
		"dist/a/b.js":       "b\n",
		"dist/a.txt":        "a\n",
		"dist/z/deep/c.css": "c {}\n",
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o700)
		if err := os.WriteFile(p, []byte(body), fileMode); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(filepath.Join(dir, "dist", "empty"), 0o700)
	os.WriteFile(filepath.Join(dir, "dist", "run"), []byte("#!/bin/sh\n"), 0o700)
	os.Symlink("a/b.js", filepath.Join(dir, "dist", "link.js"))
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			os.Lchown(p, os.Getuid(), os.Getgid())
			os.Chtimes(p, mtime, mtime)
		}
		return nil
	})
	return dir
}

func pack(t *testing.T, dir string) ([]byte, error) {
	t.Helper()
	o, err := toolchain.OpenOutputs(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	var b bytes.Buffer
	err = PackDir(o, dir, "dist", &b)
	return b.Bytes(), err
}

func TestPackDirDeterministic(t *testing.T) {
	a, err := pack(t, makeDist(t, time.Unix(1e9, 0), 0o600))
	if err != nil {
		t.Fatal(err)
	}
	b, err := pack(t, makeDist(t, time.Now(), 0o644))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatal("same content, different times and modes: different tarballs")
	}

	zr, err := gzip.NewReader(bytes.NewReader(a))
	if err != nil {
		t.Fatal(err)
	}
	if zr.Name != "" || !zr.ModTime.IsZero() {
		t.Errorf("gzip header name %q mtime %v", zr.Name, zr.ModTime)
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" || !h.ModTime.Equal(Epoch) {
			t.Errorf("%s: owner %d:%d %q:%q mtime %v", h.Name, h.Uid, h.Gid, h.Uname, h.Gname, h.ModTime)
		}
		want := map[string]int64{"dist/run": 0o755, "dist/link.js": 0o777, "dist/index.js": 0o644}[h.Name]
		if h.Typeflag == tar.TypeDir {
			want = 0o755
		}
		if want != 0 && h.Mode != want {
			t.Errorf("%s: mode %o, want %o", h.Name, h.Mode, want)
		}
		if h.Name == "dist/link.js" && (h.Typeflag != tar.TypeSymlink || h.Linkname != "a/b.js") {
			t.Errorf("symlink %+v", h)
		}
	}
	want := []string{"dist/", "dist/a/", "dist/a/b.js", "dist/a.txt", "dist/empty/", "dist/index.js",
		"dist/link.js", "dist/run", "dist/z/", "dist/z/deep/", "dist/z/deep/c.css"}
	if len(names) != len(want) {
		t.Fatalf("entries %q, want %q", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Fatalf("entries %q, want %q", names, want)
		}
	}
}

func TestPackDirRefuses(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(dist string) error
	}{
		{"absolute symlink", func(d string) error { return os.Symlink("/etc/passwd", filepath.Join(d, "x")) }},
		{"escaping symlink", func(d string) error { return os.Symlink("../../secret", filepath.Join(d, "a", "x")) }},
		{"symlink to parent", func(d string) error { return os.Symlink("..", filepath.Join(d, "x")) }},
		{"fifo", func(d string) error { return syscall.Mkfifo(filepath.Join(d, "x"), 0o644) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := makeDist(t, time.Now(), 0o644)
			if err := tc.setup(filepath.Join(dir, "dist")); err != nil {
				t.Fatal(err)
			}
			if _, err := pack(t, dir); !errors.Is(err, ErrUnsafeEntry) {
				t.Fatalf("err %v, want ErrUnsafeEntry", err)
			}
		})
	}

	// dist itself a symlink, out of the project or inside it: refused.
	for _, target := range []string{t.TempDir(), "node_modules"} {
		dir := t.TempDir()
		os.MkdirAll(filepath.Join(dir, "node_modules"), 0o755)
		os.WriteFile(filepath.Join(dir, "node_modules", "x.js"), []byte("x"), 0o644)
		os.Symlink(target, filepath.Join(dir, "dist"))
		if _, err := pack(t, dir); err == nil {
			t.Fatalf("packed a dist/ symlinked to %s", target)
		}
	}
	// A directory inside dist/ replaced by a symlink (to a directory of
	// the project or of the server) is stored as a symlink or refused,
	// never followed.
	dir := makeDist(t, time.Now(), 0o644)
	os.RemoveAll(filepath.Join(dir, "dist", "z"))
	os.Symlink(t.TempDir(), filepath.Join(dir, "dist", "z"))
	if _, err := pack(t, dir); !errors.Is(err, ErrUnsafeEntry) {
		t.Fatalf("dist/z symlinked out: %v", err)
	}
	// A file hard-linked to one outside dist/ (a server file the build
	// could name) is refused.
	dir = makeDist(t, time.Now(), 0o644)
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte("secret"), 0o600)
	if err := os.Link(secret, filepath.Join(dir, "dist", "leak")); err == nil {
		if _, err := pack(t, dir); !errors.Is(err, toolchain.ErrUnsafeOutput) {
			t.Fatalf("hard link packed: %v", err)
		}
	}
}
