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

// TestCloneLocalRepoConfigNotHonoured: with --allow-local-repos a client
// may name a repository on the server's disk whose config and hooks it
// wrote (e.g. one a build left behind). Cloning it runs none of it: git
// upload-pack of the source repository ignores packObjectsHook outside
// protected config and runs no hooks; kettle's own clone has an empty
// template, core.hooksPath=/dev/null, no system/global config, and no
// filter drivers, so the tree's .gitattributes names nothing that runs.
func TestCloneLocalRepoConfigNotHonoured(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "ran")
	cmd := "sh -c 'echo ran >> " + marker + "'"
	r := makeRepo(t, "proj", func(work string) {
		os.WriteFile(filepath.Join(work, ".gitattributes"), []byte("* filter=evil diff=evil\nREADME ident\n"), 0o644)
	})
	bare := filepath.Join(r.base, "proj.git")
	for _, kv := range [][2]string{
		{"uploadpack.packObjectsHook", cmd},
		{"core.fsmonitor", cmd},
		{"core.sshCommand", cmd},
		{"core.alternateRefsCommand", cmd},
		{"filter.evil.smudge", cmd},
		{"filter.evil.process", cmd},
		{"filter.evil.required", "true"},
		{"diff.evil.textconv", cmd},
		{"core.hooksPath", filepath.Join(bare, "hooks")},
		{"include.path", filepath.Join(bare, "more.cfg")},
	} {
		gitT(t, bare, "config", kv[0], kv[1])
	}
	os.WriteFile(filepath.Join(bare, "more.cfg"), []byte("[core]\n\tpager = "+cmd+"\n"), 0o644)
	os.MkdirAll(filepath.Join(bare, "hooks"), 0o755)
	for _, h := range []string{"post-checkout", "pre-upload", "post-upload-pack", "reference-transaction", "post-index-change", "fsmonitor-watchman"} {
		os.WriteFile(filepath.Join(bare, "hooks", h), []byte("#!/bin/sh\necho ran >> "+marker+"\n"), 0o755)
	}
	for _, url := range []string{bare, "file://" + bare} {
		for _, ref := range []string{"", r.c1} {
			tree, err := Clone(context.Background(), url, ref, jobDirs(t), localPolicy)
			if err != nil {
				t.Fatalf("clone %s %s: %v", url, ref, err)
			}
			if ref == "" && (tree.Identity == nil || tree.Identity.Commit != r.head) {
				t.Errorf("identity %+v", tree.Identity)
			}
			// Nothing of the source repository's config reached the clone.
			cfg, _ := os.ReadFile(filepath.Join(tree.Dir, ".git", "config"))
			if strings.Contains(string(cfg), "evil") || strings.Contains(string(cfg), marker) {
				t.Errorf("clone config:\n%s", cfg)
			}
		}
	}
	if b, err := os.ReadFile(marker); err == nil {
		t.Fatalf("a command of the cloned repository ran: %q", b)
	}
	// Control: the same clone with the filter in the clone's own config
	// does run it, so the marker would have shown a leak.
	gitT(t, t.TempDir(), "-c", "filter.evil.smudge="+cmd, "clone", "-q", "--no-local", bare, "ctl")
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("control: the filter did not run (%v); the test proves nothing", err)
	}
}

// TestExtractLoneGitTop: an archive holding only .git/ does not make .git
// the project directory (nor the result's top directory).
func TestExtractLoneGitTop(t *testing.T) {
	id, path, body := aCommit()
	archive := filepath.Join(t.TempDir(), "a.tgz")
	os.WriteFile(archive, tgzOf(t, tent{name: ".git/HEAD", body: id + "\n"}, tent{name: ".git/" + path, body: body}), 0o600)
	tree, err := Extract(context.Background(), archive, t.TempDir(), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if tree.Top != "" || filepath.Base(tree.Dir) == ".git" || tree.Identity.Commit != id {
		t.Fatalf("tree %+v identity %+v", tree, tree.Identity)
	}
}
