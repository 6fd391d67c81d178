package main

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/kettle-build/kettle/attest"
	"github.com/kettle-build/kettle/bundle"
	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/internal/testenv"
	"github.com/kettle-build/kettle/pipeline"
	"github.com/kettle-build/kettle/sandbox"
)

// fakeSubmit is what the fake server received.
type fakeSubmit struct {
	Nonce      []byte
	RepoURL    string
	RepoRef    string
	ArchiveSum string // hex sha256 of source_data, for an upload
}

// fakeKettle is a server that speaks kettle's API and answers every build
// with a result it builds itself through the real pipeline (sim-snp
// evidence bound to the client's nonce): what a rogue front end, a MITM or
// a swapped job store can hand a client. build says what it builds.
func fakeKettle(t *testing.T, build func(t *testing.T, s fakeSubmit) (resultDir string)) *httptest.Server {
	t.Helper()
	var (
		mu      sync.Mutex
		tarball []byte
	)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /build", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Nonce      string `json:"nonce"`
			RepoURL    string `json:"repo_url"`
			RepoRef    string `json:"repo_ref"`
			SourceData string `json:"source_data"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		nonce, err := hex.DecodeString(body.Nonce)
		if err != nil {
			http.Error(w, "nonce", http.StatusBadRequest)
			return
		}
		s := fakeSubmit{Nonce: nonce, RepoURL: body.RepoURL, RepoRef: body.RepoRef}
		if body.SourceData != "" {
			data, err := base64.StdEncoding.DecodeString(body.SourceData)
			if err != nil {
				http.Error(w, "source_data", http.StatusBadRequest)
				return
			}
			sum := sha256.Sum256(data)
			s.ArchiveSum = hex.EncodeToString(sum[:])
		}
		dir := build(t, s)
		var b bytes.Buffer
		if err := bundle.Write(&b, "result", dir); err != nil {
			t.Error(err)
			http.Error(w, err.Error(), 500)
			return
		}
		mu.Lock()
		tarball = b.Bytes()
		mu.Unlock()
		fmt.Fprintln(w, `{"job_id":"job-1"}`)
	})
	mux.HandleFunc("GET /build/job-1/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "id: 0\ndata: {\"type\":\"build\",\"message\":\"ok\"}\n\nid: 1\ndata: {\"type\":\"complete\",\"result\":{\"status\":\"ok\"}}\n\n")
	})
	mux.HandleFunc("GET /build/job-1/result", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		b := tarball
		mu.Unlock()
		sum := sha256.Sum256(b)
		w.Header().Set("Content-Disposition", `attachment; filename="result.tar.gz"`)
		w.Header().Set("X-Kettle-Result-SHA256", hex.EncodeToString(sum[:]))
		w.Write(b)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// goProject writes a dependency-free Go module printing msg.
func goProject(t *testing.T, dir, msg string) {
	t.Helper()
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.com/hello\n\ngo 1.22\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\""+msg+"\") }\n"), 0o644)
}

// pipelineBuild builds dir like a kettle worker would (sim-snp evidence
// for nonce) and returns the result directory.
func pipelineBuild(t *testing.T, dir string, nonce []byte, sourceURI, archiveSHA256 string) string {
	t.Helper()
	att, err := attest.New(context.Background(), "sim-snp")
	if err != nil {
		t.Fatal(err)
	}
	goBin, _ := exec.LookPath("go")
	env := pipeline.DefaultEnv()
	for i, kv := range env {
		if strings.HasPrefix(kv, "PATH=") {
			env[i] = kv + ":" + filepath.Dir(goBin)
		}
	}
	out := filepath.Join(t.TempDir(), "out")
	_, err = pipeline.RunDir(context.Background(), pipeline.Options{Dir: dir, OutDir: out, Runner: sandbox.NewNone(),
		Attester: att, Nonce: nonce, SourceURI: sourceURI, ArchiveSHA256: archiveSHA256, Env: env})
	if err != nil {
		t.Fatalf("pipeline: %v (%s: %s)", err, failure.KindOf(err), failure.Message(err))
	}
	return out
}

// zipSum is the sha256 of a ZIP of dir (what an attacker would upload to
// get a build of it).
func zipSum(t *testing.T, dir string) string {
	t.Helper()
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for _, n := range []string{"go.mod", "main.go"} {
		data, _ := os.ReadFile(filepath.Join(dir, n))
		f, _ := zw.Create(n)
		f.Write(data)
	}
	zw.Close()
	sum := sha256.Sum256(b.Bytes())
	return hex.EncodeToString(sum[:])
}

// TestRemoteBuildSourceBinding: `kettle remote build` checks that the
// result is a build of what it sent, not only that it binds its nonce. A
// fake server answers with genuinely built and attested results (sim-snp,
// the client's nonce) of another source: the client says FAILED, names the
// source mismatch and exits 1; an honest answer passes.
func TestRemoteBuildSourceBinding(t *testing.T) {
	testenv.NeedTool(t, "go")
	testenv.NeedTool(t, "git")
	tmp := t.TempDir()
	roots := filepath.Join(tmp, "sim-roots.pem")
	if err := writeSimRoots(roots); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(tmp, "victim")
	goProject(t, victim, "victim")
	evil := filepath.Join(tmp, "evil")
	goProject(t, evil, "EVIL: attacker code under the victim job")
	evilSum := zipSum(t, evil)
	t.Chdir(tmp)
	t.Setenv("KETTLE_TOKEN", "")

	run := func(t *testing.T, srv *httptest.Server, args ...string) remoteRun {
		t.Helper()
		out := filepath.Join(t.TempDir(), "out")
		return remoteCLI(t, append([]string{"build", "--server", srv.URL, "--trust-roots", roots, "--out", out}, args...)...)
	}

	t.Run("upload: honest result passes", func(t *testing.T) {
		srv := fakeKettle(t, func(t *testing.T, s fakeSubmit) string {
			return pipelineBuild(t, victim, s.Nonce, "", s.ArchiveSum)
		})
		r := run(t, srv, victim)
		if r.code != exitOK || !strings.Contains(r.stdout, "✅ Source archive sha256 is ") || !strings.Contains(r.stdout, "Verification PASSED") {
			t.Fatal(r)
		}
		if !strings.Contains(r.stderr, "uploaded archive sha256 ") {
			t.Errorf("the upload's digest is not shown:\n%s", r)
		}
	})

	t.Run("upload: another source's attested build fails", func(t *testing.T) {
		var sent string
		srv := fakeKettle(t, func(t *testing.T, s fakeSubmit) string {
			sent = s.ArchiveSum
			return pipelineBuild(t, evil, s.Nonce, "", evilSum)
		})
		r := run(t, srv, victim, "--json")
		if r.code != exitFailed {
			t.Fatal(r)
		}
		var rep struct {
			Passed bool   `json:"passed"`
			Upload string `json:"upload_sha256"`
			Source string `json:"source_sha256"`
			Checks []struct {
				Name string `json:"name"`
				OK   bool   `json:"ok"`
			} `json:"checks"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
			t.Fatalf("%v\n%s", err, r)
		}
		if rep.Passed || rep.Upload != sent || rep.Source != evilSum {
			t.Errorf("report: %+v (sent %s)", rep, sent)
		}
		// Everything else about the forged result is fine: only the
		// source check catches it.
		var failed []string
		for _, c := range rep.Checks {
			if !c.OK {
				failed = append(failed, c.Name)
			}
		}
		if len(failed) != 1 || failed[0] != "Source archive sha256 is "+sent {
			t.Errorf("failed checks %q", failed)
		}
		if !strings.Contains(r.stderr, "FAILED: the result is not a build of the source sent") || !strings.Contains(r.stderr, evilSum) {
			t.Errorf("stderr does not name the mismatch:\n%s", r)
		}
		// And the table says so too.
		r = run(t, srv, victim)
		if r.code != exitFailed || !strings.Contains(r.stdout, "⛔ Source archive sha256 is ") || !strings.Contains(r.stdout, "Verification FAILED") ||
			!strings.Contains(r.stdout, `source archive sha256 "`+evilSum+`"`) {
			t.Error(r)
		}
	})

	// A git repository with a commit of its own, for the --repo cases.
	evilGit := filepath.Join(tmp, "evil-git")
	goProject(t, evilGit, "EVIL")
	evilCommit := remoteCheckout(t, evilGit)
	const repoURL = "https://git.example.com/victim.git"
	victimCommit := strings.Repeat("c0ffee", 6) + "c0ff"

	t.Run("repo at a commit: another commit fails", func(t *testing.T) {
		srv := fakeKettle(t, func(t *testing.T, s fakeSubmit) string {
			if s.RepoURL != repoURL || s.RepoRef != victimCommit {
				t.Errorf("submitted %+v", s)
			}
			return pipelineBuild(t, evilGit, s.Nonce, s.RepoURL, "") // claims the victim's URI
		})
		r := run(t, srv, "--repo", repoURL, "--ref", victimCommit)
		if r.code != exitFailed || !strings.Contains(r.stdout, "⛔ Git commit is "+victimCommit) ||
			!strings.Contains(r.stdout, `git commit "`+evilCommit+`"`) || !strings.Contains(r.stderr, "not a build of the source sent") {
			t.Fatal(r)
		}
		// --git-commit cannot override the --ref commit: both are checked.
		r = run(t, srv, "--repo", repoURL, "--ref", victimCommit, "--git-commit", evilCommit)
		if r.code != exitFailed || !strings.Contains(r.stdout, "⛔ Git commit is "+victimCommit) || !strings.Contains(r.stdout, "✅ Git commit is "+evilCommit) {
			t.Fatal(r)
		}
	})

	t.Run("repo at a commit: the commit asked for passes", func(t *testing.T) {
		srv := fakeKettle(t, func(t *testing.T, s fakeSubmit) string {
			return pipelineBuild(t, evilGit, s.Nonce, s.RepoURL, "")
		})
		r := run(t, srv, "--repo", repoURL, "--ref", evilCommit)
		if r.code != exitOK || !strings.Contains(r.stdout, "✅ Git commit is "+evilCommit) || !strings.Contains(r.stdout, "✅ Source URI is "+repoURL) ||
			strings.Contains(r.stderr, "not pinned") {
			t.Fatal(r)
		}
	})

	t.Run("repo at a branch: another repository fails, and the commit is not pinned", func(t *testing.T) {
		srv := fakeKettle(t, func(t *testing.T, s fakeSubmit) string {
			return pipelineBuild(t, evilGit, s.Nonce, "https://evil.example.com/x.git", "")
		})
		r := run(t, srv, "--repo", repoURL, "--ref", "main")
		if r.code != exitFailed || !strings.Contains(r.stdout, "⛔ Source URI is "+repoURL) || !strings.Contains(r.stderr, "not a build of the source sent") {
			t.Fatal(r)
		}
		srv = fakeKettle(t, func(t *testing.T, s fakeSubmit) string {
			return pipelineBuild(t, evilGit, s.Nonce, s.RepoURL, "")
		})
		r = run(t, srv, "--repo", repoURL, "--ref", "main")
		if r.code != exitOK || !strings.Contains(r.stderr, "the commit was not pinned") || !strings.Contains(r.stdout, "the commit was not pinned") {
			t.Fatal(r)
		}
	})
}

// TestRemoteBuildEnvIgnored: KETTLE_<FLAG> variables do not relax the
// verification part of `kettle remote build` (KETTLE_SERVER still works).
func TestRemoteBuildEnvIgnored(t *testing.T) {
	testenv.NeedTool(t, "go")
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "p")
	goProject(t, dir, "p")
	roots := filepath.Join(tmp, "sim-roots.pem")
	if err := writeSimRoots(roots); err != nil {
		t.Fatal(err)
	}
	srv := fakeKettle(t, func(t *testing.T, s fakeSubmit) string {
		return pipelineBuild(t, dir, s.Nonce, "", s.ArchiveSum)
	})
	t.Chdir(tmp)
	t.Setenv("KETTLE_TOKEN", "")
	t.Setenv("KETTLE_SERVER", srv.URL)
	for k, v := range map[string]string{"KETTLE_TRUST_ROOTS": roots, "KETTLE_ALLOW_INSECURE": "true", "KETTLE_ALLOW_DEBUG": "true",
		"KETTLE_AT": "2000-01-01", "KETTLE_GIT_COMMIT": strings.Repeat("1", 40)} {
		t.Setenv(k, v)
	}
	// KETTLE_TRUST_ROOTS is not read: the sim-snp evidence does not chain
	// to the real AMD roots.
	r := remoteCLI(t, "build", dir, "--out", filepath.Join(tmp, "o1"))
	if r.code != exitFailed || !strings.Contains(r.stdout, "⛔ Evidence is genuine TEE evidence") {
		t.Fatal(r)
	}
	// With the flag it passes, and KETTLE_AT / KETTLE_GIT_COMMIT changed nothing.
	r = remoteCLI(t, "build", dir, "--out", filepath.Join(tmp, "o2"), "--trust-roots", roots)
	if r.code != exitOK {
		t.Fatal(r)
	}
}
