package rmtree

import (
	"os"
	"path/filepath"
	"testing"
)

func TestRemoveAll(t *testing.T) {
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	if err := os.Mkdir(outside, 0o500); err != nil {
		t.Fatal(err)
	}
	tree := filepath.Join(base, "tree")
	for _, d := range []string{"a/b/c", "d"} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(tree, "a/b/c/f"), []byte("x"), 0o444)
	// A symlink to a directory outside: removing the tree must not
	// change the target's mode.
	if err := os.Symlink(outside, filepath.Join(tree, "a/link")); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"a/b/c", "a/b", "a", "d", ""} {
		os.Chmod(filepath.Join(tree, d), 0o555)
	}
	if err := RemoveAll(tree); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(tree); !os.IsNotExist(err) {
		t.Fatalf("tree still there: %v", err)
	}
	fi, err := os.Stat(outside)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o500 {
		t.Errorf("the symlink's target changed mode: %v", fi.Mode())
	}
	if err := RemoveAll(filepath.Join(base, "missing")); err != nil {
		t.Errorf("missing dir: %v", err)
	}
	os.Chmod(outside, 0o755)
}

// TestMakeWritable checks the retry path directly (as root the first
// os.RemoveAll already succeeds): a directory gets its owner's write bit,
// a symlink to a directory is not followed.
func TestMakeWritable(t *testing.T) {
	base := t.TempDir()
	d, target := filepath.Join(base, "d"), filepath.Join(base, "target")
	for _, p := range []string{d, target} {
		if err := os.Mkdir(p, 0o555); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	makeWritable(d)
	makeWritable(link)
	for p, want := range map[string]os.FileMode{d: 0o755, target: 0o555} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", filepath.Base(p), fi.Mode().Perm(), want)
		}
	}
}
