package source

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kettle-build/kettle/internal/testenv"
)

// TestFindingGitConfigSymlinkArchive: the finding's own archive is refused
// at extraction, before anything reads its .git.
func TestFindingGitConfigSymlinkArchive(t *testing.T) {
	archive := filepath.Join("..", "testdata", "security", "host-rce-gitconfig-symlink-archive", "gitcfg-symlink.tar.gz")
	checkRefused(t, archive, Limits{}, ErrUnsafeLink, `"gitcfg-symlink/.git/config": symbolic links are not allowed in or as .git`)
}

func gitT(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestExtractGitIdentity: an uploaded checkout made by real git (loose,
// then packed) gets git's own commit and tree; a modified one is dirty
// and records no commit.
func TestExtractGitIdentity(t *testing.T) {
	testenv.NeedTool(t, "git")
	src := t.TempDir()
	writeTree(t, src, map[string]string{"Cargo.toml": "[package]\n", "src/main.rs": "fn main() {}\n", "run.sh": "#!/bin/sh\n"})
	os.Chmod(filepath.Join(src, "run.sh"), 0o755)
	os.Symlink("src/main.rs", filepath.Join(src, "main-link"))
	gitT(t, src, "init", "-q", "-b", "main")
	gitT(t, src, "add", "-A")
	gitT(t, src, "commit", "-qm", "one")
	writeTree(t, src, map[string]string{"src/main.rs": "fn main() { println!(\"2\"); }\n"})
	gitT(t, src, "commit", "-qam", "two")
	commit, tree := gitT(t, src, "rev-parse", "HEAD"), gitT(t, src, "rev-parse", "HEAD^{tree}")
	for _, step := range []string{"loose", "packed", "dirty"} {
		t.Run(step, func(t *testing.T) {
			switch step {
			case "packed":
				gitT(t, src, "gc", "-q", "--prune=now")
			case "dirty":
				writeTree(t, src, map[string]string{"build.rs": "fn main() {}\n"})
			}
			archive := filepath.Join(t.TempDir(), "a.tgz")
			if out, err := exec.Command("tar", "-czf", archive, "-C", filepath.Dir(src), filepath.Base(src)).CombinedOutput(); err != nil {
				t.Fatalf("tar: %v %s", err, out)
			}
			got, err := Extract(context.Background(), archive, t.TempDir(), Limits{})
			if err != nil {
				t.Fatal(err)
			}
			id := got.Identity
			if step == "dirty" {
				if !id.Dirty || id.Commit != "" || id.HeadCommit != commit || id.Tree == tree {
					t.Fatalf("identity %+v", id)
				}
				return
			}
			if id.Dirty || id.Commit != commit || id.Tree != tree || id.URI != "" {
				t.Fatalf("identity %+v, want %s %s", id, commit, tree)
			}
		})
	}
}

func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
