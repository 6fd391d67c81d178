package e2e

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kettle-build/kettle/bench/harness"
	"github.com/kettle-build/kettle/internal/testenv"
)

// securitySourceServer starts `kettle serve` with bubblewrap and RT set in
// its environment: the finding's filter command writes $RT/PWNED-….
func securitySourceServer(t *testing.T, rt string) *harness.Client {
	t.Helper()
	testenv.NeedTool(t, "bwrap")
	testenv.NeedTool(t, "git")
	testenv.NeedTool(t, "tar")
	dataDir := filepath.Join(harness.DataDir(t), "data")
	args := []string{"--attester", "insecure", "--sandbox", "bwrap", "--log-format", "json", "--workers", "2", "--shutdown-timeout", "2m"}
	_, c := harness.StartTest(t, harness.Config{Bin: kettleBin, DataDir: dataDir, Args: args, Env: []string{"RT=" + rt}}, true)
	return c
}

// tarCmd packs dir with the system tar, as the finding's make-archive.sh
// does (symlinks kept as links).
func tarCmd(t *testing.T, dir string) []byte {
	t.Helper()
	out, err := exec.Command("tar", "-czf", "-", "-C", filepath.Dir(dir), filepath.Base(dir)).Output()
	if err != nil {
		t.Fatalf("tar: %v", err)
	}
	return out
}

func provenanceSource(t *testing.T, c *harness.Client, id string) (digest map[string]string, uri string) {
	t.Helper()
	tarball, _ := download(t, c, id)
	b, err := os.ReadFile(filepath.Join(extract(t, tarball), "provenance.json"))
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Predicate struct {
			BuildDefinition struct {
				ExternalParameters struct {
					Source struct {
						Digest map[string]string `json:"digest"`
						URI    string            `json:"uri"`
					} `json:"source"`
				} `json:"externalParameters"`
			} `json:"buildDefinition"`
		} `json:"predicate"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	s := p.Predicate.BuildDefinition.ExternalParameters.Source
	return s.Digest, s.URI
}

// TestSecuritySourceGitConfigSymlink is finding
// host-rce-gitconfig-symlink-archive through a real server: the archive
// whose .git/config is a symlink to a config defining a clean filter is
// refused (InvalidSource) and its command never runs; the same attack with
// the filter in a regular .git/config (sanitised, and no git runs on the
// host anyway) builds without running it; an honest upload beside them
// builds; uploaded checkouts made by real git record git's own commit and
// tree, and a dirty one records no commit.
func TestSecuritySourceGitConfigSymlink(t *testing.T) {
	rt := t.TempDir()
	c := securitySourceServer(t, rt)
	markers := func() []string {
		ents, _ := os.ReadDir(rt)
		var n []string
		for _, e := range ents {
			n = append(n, e.Name())
		}
		return n
	}

	// 1. The finding's archive, byte for byte.
	archive, err := os.ReadFile(filepath.Join("..", "..", "testdata", "security", "host-rce-gitconfig-symlink-archive", "gitcfg-symlink.tar.gz"))
	if err != nil {
		t.Fatal(err)
	}
	_, evs, res := buildAndWait(t, c, harness.BuildRequest{Nonce: harness.NewNonce(), SourceData: base64.StdEncoding.EncodeToString(archive), SourceName: "gitcfg-symlink.tar.gz"})
	if res.Status != "failed" || res.ErrorType != "InvalidSource" || !strings.Contains(res.Error, "symbolic links are not allowed in or as .git") {
		t.Errorf("symlinked .git/config: %+v\n%s", res, eventLog(evs))
	}

	// 1b. The same archive rebuilt as make-archive.sh does, its filter
	// writing into this test's directory (the stored one names /tmp/rt).
	gcs := filepath.Join(t.TempDir(), "gitcfg-symlink")
	project(t, gcs, "rt-gitcfg", 0)
	os.WriteFile(filepath.Join(gcs, ".gitattributes"), []byte("Cargo.toml filter=rt\n"), 0o644)
	git(t, gcs, "init", "-q", "-b", "main")
	git(t, gcs, "add", "-A")
	git(t, gcs, "commit", "-q", "-m", "init")
	cfg, err := os.ReadFile(filepath.Join(gcs, ".git", "config"))
	if err != nil {
		t.Fatal(err)
	}
	cfg = append(cfg, "[filter \"rt\"]\n\tclean = sh -c \"id > "+filepath.Join(rt, "PWNED-single-archive-2")+"; cat\"\n"...)
	os.WriteFile(filepath.Join(gcs, "gitcfg"), cfg, 0o644)
	os.Remove(filepath.Join(gcs, ".git", "config"))
	if err := os.Symlink("../gitcfg", filepath.Join(gcs, ".git", "config")); err != nil {
		t.Fatal(err)
	}
	_, evs, res = buildAndWait(t, c, harness.BuildRequest{Nonce: harness.NewNonce(), SourceData: base64.StdEncoding.EncodeToString(tarCmd(t, gcs))})
	if res.Status != "failed" || res.ErrorType != "InvalidSource" || !strings.Contains(res.Error, "symbolic links are not allowed in or as .git") {
		t.Errorf("rebuilt symlinked .git/config: %+v\n%s", res, eventLog(evs))
	}

	// A checkout made by real git, with the attacker's filter in a
	// regular .git/config and .gitattributes applying it.
	work := filepath.Join(t.TempDir(), "gitcfg")
	project(t, work, "rt-gitcfg", 0)
	os.WriteFile(filepath.Join(work, ".gitattributes"), []byte("Cargo.toml filter=rt\n* diff=rt\n"), 0o644)
	git(t, work, "init", "-q", "-b", "main")
	git(t, work, "add", "-A")
	git(t, work, "commit", "-q", "-m", "init")
	git(t, work, "gc", "-q", "--prune=now") // packed objects and refs
	commit, tree := git(t, work, "rev-parse", "HEAD"), git(t, work, "rev-parse", "HEAD^{tree}")
	marker := filepath.Join(rt, "PWNED-regular-config")
	f, err := os.OpenFile(filepath.Join(work, ".git", "config"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("[filter \"rt\"]\n\tclean = sh -c \"id > " + marker + "; cat\"\n\tsmudge = sh -c \"id > " + marker + "; cat\"\n" +
		"[diff \"rt\"]\n\ttextconv = sh -c \"id > " + marker + "\"\n[core]\n\tfsmonitor = sh -c \"id > " + marker + "\"\n")
	f.Close()

	// 2. An honest upload without .git, beside the attacks.
	plain := filepath.Join(t.TempDir(), "plain")
	project(t, plain, "plain", 0)
	for _, tc := range []struct {
		name  string
		dir   string
		dirty bool
	}{{"plain", plain, false}, {"git clean", work, false}, {"git dirty", work, true}} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.dirty {
				os.WriteFile(filepath.Join(work, "src", "main.rs"), []byte("fn main() { println!(\"changed\"); }\n"), 0o644)
			}
			data := harness.Targz(t, tc.dir, filepath.Base(tc.dir))
			id, evs, res := buildAndWait(t, c, harness.BuildRequest{Nonce: harness.NewNonce(), SourceData: base64.StdEncoding.EncodeToString(data)})
			if res.Status != "ok" {
				t.Fatalf("build failed: %+v\n%s", res, eventLog(evs))
			}
			digest, uri := provenanceSource(t, c, id)
			warned := hasEvent(evs, "init", "uncommitted changes")
			switch {
			case tc.dir == plain:
				if digest["gitCommit"] != "" || len(digest["gitTree"]) != 40 || len(digest["sha256"]) != 64 || warned {
					t.Errorf("plain upload: %v %q", digest, uri)
				}
			case !tc.dirty:
				if digest["gitCommit"] != commit || digest["gitTree"] != tree || uri != "" || warned {
					t.Errorf("clean checkout: %v %q, git says %s %s", digest, uri, commit, tree)
				}
			default:
				if digest["gitCommit"] != "" || digest["gitTree"] == tree || len(digest["gitTree"]) != 40 || !warned {
					t.Errorf("dirty checkout: %v warned=%v\n%s", digest, warned, eventLog(evs))
				}
			}
		})
	}
	if m := markers(); len(m) != 0 {
		t.Fatalf("an attacker's git command ran on the host: %v", m)
	}
}
