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

// TestRemoteTag: ls-remote output of a shallow clone's remote; peeled
// lines decide for annotated tags, and malformed lines are skipped.
func TestRemoteTag(t *testing.T) {
	c := "1111111111111111111111111111111111111111"
	o := "2222222222222222222222222222222222222222"
	tagObj := "3333333333333333333333333333333333333333"
	tagObj2 := "4444444444444444444444444444444444444444"
	for _, tc := range []struct{ name, out, want string }{
		{"none", "", ""},
		{"lightweight", c + "\trefs/tags/v1.0.0\n", "v1.0.0"},
		{"annotated", tagObj + "\trefs/tags/v2.0.0\n" + tagObj + "\trefs/tags/v2.0.0^{}\n", ""},
		{"annotated peeled", tagObj + "\trefs/tags/v2.0.0\n" + c + "\trefs/tags/v2.0.0^{}\n", "v2.0.0"},
		{"annotated wins", c + "\trefs/tags/v9.0.0\n" + tagObj + "\trefs/tags/v2.0.0\n" + c + "\trefs/tags/v2.0.0^{}\n", "v2.0.0"},
		{"highest semver", tagObj + "\trefs/tags/v1.10.0\n" + c + "\trefs/tags/v1.10.0^{}\n" + tagObj2 + "\trefs/tags/v1.9.0\n" + c + "\trefs/tags/v1.9.0^{}\n", "v1.10.0"},
		{"other commit", o + "\trefs/tags/v1.0.0\n", ""},
		{"branch", c + "\trefs/heads/main\n", ""},
		{"bad name", c + "\trefs/tags/a..b\n" + c + "\trefs/tags/x y\n", ""},
		{"short id", "111111\trefs/tags/v1\n", ""},
		{"crlf", c + "\trefs/tags/v3\r\n", "v3"},
	} {
		if got := RemoteTag(tc.out, c); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

func FuzzRemoteTag(f *testing.F) {
	c := "1111111111111111111111111111111111111111"
	f.Add(c + "\trefs/tags/v1.0.0\n" + c + "\trefs/tags/v1.0.0^{}\n")
	f.Add("x\ty\n\t\n")
	f.Fuzz(func(t *testing.T, out string) {
		tag := RemoteTag(out, c)
		if tag != "" && !validRefName("refs/tags/"+tag) {
			t.Fatalf("tag %q", tag)
		}
	})
}
