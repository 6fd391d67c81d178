package gitid

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/kettle-build/kettle/internal/testenv"
)

// TestExactTag compares ExactTag with `git describe --tags --exact-match`
// semantics on real repositories: lightweight, annotated, nested and packed
// tags, tags of other commits, none at all.
func TestExactTag(t *testing.T) {
	testenv.NeedTool(t, "git")
	dir := t.TempDir()
	gitCmd(t, dir, "init", "-q", "-b", "main")
	os.WriteFile(filepath.Join(dir, "a"), []byte("1"), 0o644)
	gitCmd(t, dir, "add", ".")
	gitCmd(t, dir, "commit", "-q", "-m", "one")
	first := gitCmd(t, dir, "rev-parse", "HEAD")
	gitCmd(t, dir, "tag", "v0.1.0")
	os.WriteFile(filepath.Join(dir, "a"), []byte("2"), 0o644)
	gitCmd(t, dir, "commit", "-q", "-am", "two")
	head := gitCmd(t, dir, "rev-parse", "HEAD")
	gd := filepath.Join(dir, ".git")

	if got := ExactTag(gd, head); got != "" {
		t.Fatalf("no tag at HEAD: got %q", got)
	}
	if got := ExactTag(gd, first); got != "v0.1.0" {
		t.Fatalf("lightweight tag: got %q", got)
	}
	gitCmd(t, dir, "tag", "zz-light")
	if got := ExactTag(gd, head); got != "zz-light" {
		t.Fatalf("got %q", got)
	}
	gitCmd(t, dir, "tag", "-a", "-m", "release", "v1.2.0")
	gitCmd(t, dir, "tag", "-a", "-m", "release", "v1.10.0")
	gitCmd(t, dir, "tag", "-a", "-m", "nested", "release/v0.9.0")
	// annotated wins over lightweight, then the highest version
	if got := ExactTag(gd, head); got != "v1.10.0" {
		t.Fatalf("loose annotated: got %q", got)
	}
	gitCmd(t, dir, "pack-refs", "--all")
	if got := ExactTag(gd, head); got != "v1.10.0" {
		t.Fatalf("packed: got %q", got)
	}
	gitCmd(t, dir, "tag", "-d", "v1.10.0", "v1.2.0", "zz-light")
	if got := ExactTag(gd, head); got != "release/v0.9.0" {
		t.Fatalf("nested: got %q", got)
	}
	// A tag of a tag.
	gitCmd(t, dir, "tag", "-a", "-m", "outer", "v2.0.0", "release/v0.9.0^{tag}")
	if got := ExactTag(gd, head); got != "v2.0.0" {
		t.Fatalf("tag of a tag: got %q", got)
	}
	// A tag ref that is a symlink out of .git is not followed.
	outside := filepath.Join(t.TempDir(), "evil")
	os.WriteFile(outside, []byte(head+"\n"), 0o644)
	os.Symlink(outside, filepath.Join(gd, "refs", "tags", "v9.9.9"))
	if got := ExactTag(gd, head); got != "v2.0.0" {
		t.Fatalf("symlinked tag followed: got %q", got)
	}
	if got := ExactTag(filepath.Join(dir, "nope"), head); got != "" {
		t.Fatalf("no repo: %q", got)
	}
}
