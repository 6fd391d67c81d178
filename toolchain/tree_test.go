package toolchain

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/dirhash"
)

// TestHashTree: the same digest as dirhash.HashDir on an honest tree, and
// every hostile entry refused without blocking (docs/security.md).
func TestHashTree(t *testing.T) {
	proj := t.TempDir()
	os.MkdirAll(filepath.Join(proj, "lib", "sub"), 0o755)
	os.WriteFile(filepath.Join(proj, "lib", "a.go"), []byte("package a\n"), 0o644)
	os.WriteFile(filepath.Join(proj, "lib", "sub", "b.go"), []byte("package b\n"), 0o644)
	root, err := os.OpenRoot(proj)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	want, err := dirhash.HashDir(filepath.Join(proj, "lib"), "m@v1", dirhash.Hash1)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := HashTree(root, "lib", "m@v1", false); err != nil || "h1:"+got != want {
		t.Fatalf("HashTree = %q, %v; dirhash %q", got, err, want)
	}

	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o600)
	hostile := func(name string, mk func(dir string) error) {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(proj, name)
			os.MkdirAll(dir, 0o755)
			os.WriteFile(filepath.Join(dir, "ok.go"), []byte("package ok\n"), 0o644)
			if err := mk(dir); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { _, err := HashTree(root, name, "", true); done <- err }()
			select {
			case err := <-done:
				if err == nil {
					t.Fatal("hashed")
				}
				if strings.Contains(err.Error(), outside) {
					t.Errorf("error names the outside path: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("HashTree blocked")
			}
		})
	}
	hostile("fifo", func(d string) error { return syscall.Mkfifo(filepath.Join(d, "p"), 0o644) })
	hostile("link-to-fifo", func(d string) error {
		if err := syscall.Mkfifo(filepath.Join(proj, "pipe"), 0o644); err != nil {
			return err
		}
		return os.Symlink("../pipe", filepath.Join(d, "p"))
	})
	hostile("link-out", func(d string) error { return os.Symlink(filepath.Join(outside, "secret"), filepath.Join(d, "s")) })
	hostile("link-to-dir", func(d string) error { return os.Symlink("../lib", filepath.Join(d, "l")) })
	if _, err := HashTree(root, "lib", "", false); err != nil {
		t.Fatal(err)
	}
}

// TestReadProjectFileHostile: a lockfile that is a FIFO (directly or
// through a symlink) or larger than the bound is an error, at once.
func TestReadProjectFileHostile(t *testing.T) {
	proj := t.TempDir()
	syscall.Mkfifo(filepath.Join(proj, "Cargo.lock"), 0o644)
	os.Symlink("Cargo.lock", filepath.Join(proj, "go.sum"))
	f, _ := os.Create(filepath.Join(proj, "flake.lock"))
	f.Truncate(MaxProjectFile + 1)
	f.Close()
	for _, name := range []string{"Cargo.lock", "go.sum", "flake.lock"} {
		done := make(chan error, 1)
		go func() { _, err := ReadProjectFile(proj, name); done <- err }()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("%s: read", name)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: ReadProjectFile blocked", name)
		}
	}
}
