package gomod

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestSeedCache(t *testing.T) {
	seed := t.TempDir()
	os.MkdirAll(filepath.Join(seed, "ab"), 0o755)
	os.WriteFile(filepath.Join(seed, "ab", "abcd-d"), []byte("entry"), 0o444)
	os.WriteFile(filepath.Join(seed, "README"), []byte("readme"), 0o444)
	os.WriteFile(filepath.Join(seed, "trim.txt"), []byte("1"), 0o644)
	dst := filepath.Join(t.TempDir(), "cache")
	os.Mkdir(dst, 0o755)
	if err := seedCache(seed, dst); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "ab", "abcd-d")); err != nil || string(b) != "entry" {
		t.Fatalf("entry %q %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(dst, "trim.txt")); !os.IsNotExist(err) {
		t.Fatalf("trim.txt shared: %v", err)
	}
	a, _ := os.Stat(filepath.Join(seed, "README"))
	b, _ := os.Stat(filepath.Join(dst, "README"))
	if !os.SameFile(a, b) {
		t.Log("not hard-linked (copied)")
	} else if n := b.Sys().(*syscall.Stat_t).Nlink; n != 2 {
		t.Fatalf("link count %d", n)
	}
	// The build cache directories are the build's own (go adds entries).
	if fi, _ := os.Stat(filepath.Join(dst, "ab")); fi.Mode().Perm() != 0o755 {
		t.Fatalf("dir mode %v", fi.Mode())
	}
}
