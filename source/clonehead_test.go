package source

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kettle-build/kettle/source/gitid"
)

// checkGitHead checks a clone's identity against git's own answer in the
// checkout (HEAD^{commit}, HEAD^{tree}) and against the one-process
// rev-parse kettle falls back to.
func checkGitHead(t *testing.T, tree *Tree) {
	t.Helper()
	commit := git(t, tree.Dir, "rev-parse", "--verify", "HEAD^{commit}")
	treeID := git(t, tree.Dir, "rev-parse", "--verify", "HEAD^{tree}")
	if tree.Commit != commit || tree.Identity.Commit != commit || tree.Identity.Tree != treeID {
		t.Errorf("identity %+v (commit %s), git says commit %s tree %s", tree.Identity, tree.Commit, commit, treeID)
	}
	g := &gitCmd{root: filepath.Dir(tree.Dir), home: t.TempDir(), local: true}
	if c, tr, err := g.revParseHead(t.Context(), tree.Dir); err != nil || c != commit || tr != treeID {
		t.Errorf("revParseHead = %s %s %v, git says %s %s", c, tr, err, commit, treeID)
	}
}

// bareRepo makes base/name.git holding one commit with message msg, in the
// given object format; it returns the file:// URL and the commit.
func bareRepo(t *testing.T, format, name, msg string) (string, string) {
	t.Helper()
	base := t.TempDir()
	work := filepath.Join(base, "work")
	os.Mkdir(work, 0o755)
	git(t, work, "init", "-q", "--object-format="+format)
	os.WriteFile(filepath.Join(work, "README"), []byte("hello\n"), 0o644)
	msgFile := filepath.Join(base, "msg")
	os.WriteFile(msgFile, []byte(msg), 0o644)
	git(t, work, "add", "-A")
	git(t, work, "commit", "-q", "-F", msgFile)
	head := git(t, work, "rev-parse", "HEAD")
	bare := filepath.Join(base, name+".git")
	git(t, base, "clone", "-q", "--bare", work, bare)
	git(t, bare, "config", "uploadpack.allowReachableSHA1InWant", "true")
	return "file://" + bare, head
}

// TestCloneSHA256 clones a SHA-256 repository by its default branch and by
// its exact 64-hex commit: the identity is git's, in SHA-256.
func TestCloneSHA256(t *testing.T) {
	url, head := bareRepo(t, "sha256", "proj", "one\n")
	if len(head) != 64 {
		t.Fatalf("head %q is not SHA-256", head)
	}
	for _, ref := range []string{"", head} {
		t.Run("ref="+ref, func(t *testing.T) {
			tree, err := Clone(context.Background(), url, ref, jobDirs(t), localPolicy)
			if err != nil {
				t.Fatal(err)
			}
			if tree.Commit != head || len(tree.Identity.Tree) != 64 {
				t.Fatalf("tree %+v identity %+v, want commit %s", tree, tree.Identity, head)
			}
			checkGitHead(t, tree)
			if h, err := gitid.ReadHead(filepath.Join(tree.Dir, ".git")); err != nil || h.Commit != head || h.Format != gitid.SHA256 {
				t.Errorf("gitid.ReadHead of the clone: %+v %v (kettle reads the identity with it)", h, err)
			}
			if got, err := gitid.TreeHash(t.Context(), tree.Dir, gitid.SHA256); err != nil || got != tree.Identity.Tree {
				t.Errorf("gitid.TreeHash %s %v, want %s", got, err, tree.Identity.Tree)
			}
		})
	}
}

// TestCloneHeadFallback: a commit the Go reader declines (over its 16 MiB
// object limit) still clones, with git's answer for commit and tree.
func TestCloneHeadFallback(t *testing.T) {
	url, head := bareRepo(t, "sha1", "big", strings.Repeat("a long commit message line\n", 17<<20/27+1))
	work := jobDirs(t)
	tree, err := Clone(context.Background(), url, "", work, localPolicy)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gitid.ReadHead(filepath.Join(tree.Dir, ".git")); !errors.Is(err, gitid.ErrTooLarge) {
		t.Fatalf("gitid.ReadHead of the clone: %v, want ErrTooLarge (the test no longer takes the fallback)", err)
	}
	if tree.Commit != head {
		t.Fatalf("commit %s, want %s", tree.Commit, head)
	}
	checkGitHead(t, tree)
}
