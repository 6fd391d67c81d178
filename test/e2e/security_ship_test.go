package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kettle-build/kettle/bench/harness"
	"github.com/kettle-build/kettle/internal/testenv"
)

// configRepo publishes testdata/projects/go-nodeps with kettle.toml set
// to cfg, plus setup's changes, as a tagged git repository.
func configRepo(t *testing.T, cfg string, setup func(work, outside string)) gitRepo {
	t.Helper()
	root := t.TempDir()
	work := filepath.Join(root, "work", "nodeps")
	src := copyProject(t, "go-nodeps")
	if err := os.CopyFS(work, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(work, "cmd", "real"), 0o755)
	os.WriteFile(filepath.Join(work, "cmd", "real", "main.go"), []byte("package main\n\nvar version = \"dev\"\n\nfunc main() { println(\"real\", version) }\n"), 0o644)
	os.WriteFile(filepath.Join(work, "kettle.toml"), []byte(cfg), 0o644)
	if setup != nil {
		setup(work, filepath.Join(root, "outside"))
	}
	git(t, work, "init", "-q", "-b", "main")
	git(t, work, "add", "-A")
	git(t, work, "commit", "-q", "-m", "config")
	git(t, work, "tag", "v1.2.3")
	return gitRepo{URL: publish(t, root, work, "nodeps"), Commit: git(t, work, "rev-parse", "HEAD")}
}

// TestSecurityBuildConfig (issue 18, docs/security/ship.md): hostile
// kettle.toml files through a real kettle serve. Each is refused as
// InvalidSource naming kettle.toml before anything runs (no marker from a
// -toolexec or a shell metacharacter on the host), and an honest
// configuration of the same project builds and stamps its tag.
func TestSecurityBuildConfig(t *testing.T) {
	testenv.NeedTool(t, "go")
	testenv.NeedTool(t, "git")
	marker := filepath.Join(harness.DataDir(t), "marker")
	hostile := []struct {
		name, cfg, want string
		setup           func(work, outside string)
	}{
		{"extldflags through a space", "[go]\nldflags = [\"-X main.version=1 -extldflags=-static\"]\n", "value", nil},
		{"toolexec", "[go]\nldflags = [\"-toolexec=/bin/touch " + marker + "\"]\n", "only", nil},
		{"quotes", "[go]\nldflags = [\"-X 'main.version=a b' -linkmode=external\"]\n", "importpath.name", nil},
		{"package outside", "[go]\npackages = [\"./../../outside\"]\n", "outside", nil},
		{"package import path", "[go]\npackages = [\"github.com/evil/pkg\"]\n", "start with", nil},
		{"package symlink", "[go]\npackages = [\"./cmd/link\"]\n", "symlink", func(work, _ string) {
			os.Symlink("real", filepath.Join(work, "cmd", "link"))
		}},
		{"dir dotdot", "dir = \"cmd/../..\"\n", "outside", nil},
		// The source refuses a symlink out of the tree; one inside it
		// (to a directory of the project) is kettle.toml's to refuse.
		{"dir symlink", "dir = \"ext/real\"\n", "symlink", func(work, _ string) {
			os.Symlink("cmd", filepath.Join(work, "ext"))
		}},
		{"feature metacharacters", "[cargo]\nfeatures = [\"a;touch " + marker + "\"]\n", "features", nil},
		{"script metacharacters", "[pnpm]\nscript = \"build; touch " + marker + "\"\n", "script", nil},
		{"section of another toolchain", "[cargo]\nbins = [\"x\"]\n", "[cargo] section", nil},
	}
	_, c := server(t, "", "--workers", "2")
	harness.WaitReady(t, c)
	for _, tc := range hostile {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			repo := configRepo(t, tc.cfg, tc.setup)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			id, err := c.Submit(ctx, harness.BuildRequest{Nonce: harness.NewNonce(), RepoURL: repo.URL, RepoRef: "v1.2.3"})
			if err != nil {
				t.Fatal(err)
			}
			evs, err := c.Wait(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			res, _ := harness.ParseComplete(evs[len(evs)-1])
			if res.Status == "ok" || res.ErrorType != "InvalidSource" || !strings.Contains(res.Error, "kettle.toml") || !strings.Contains(res.Error, tc.want) {
				t.Fatalf("result %+v, want InvalidSource about kettle.toml (%q)\n%s", res, tc.want, harness.Tail(eventLog(evs), 2000))
			}
			if strings.Contains(eventLog(evs), "Running `") {
				t.Errorf("a build command ran:\n%s", eventLog(evs))
			}
		})
	}
	t.Run("honest", func(t *testing.T) {
		t.Parallel()
		repo := configRepo(t, "[go]\npackages = [\"./cmd/real\"]\nldflags = [\"-X main.version={version}\"]\n", nil)
		// By commit: the clone fetches no tag, so the version comes from
		// the remote's tags (ls-remote).
		dir := buildConfigured(t, c, repo, repo.Commit, 2*time.Minute)
		if got := strings.TrimSpace(runArtifact(t, dir, "real")); got != "real v1.2.3" {
			t.Fatalf("real printed %q", got)
		}
	})
	t.Cleanup(func() {
		if _, err := os.Stat(marker); err == nil {
			t.Error("a hostile kettle.toml ran a command on the host")
		}
	})
}
