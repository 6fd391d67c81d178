package e2e

// Regression tests for the Cargo findings of the security review, through a
// real `kettle serve` with bubblewrap. Projects: testdata/security/cargo-*;
// rules: docs/security/cargo.md.

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kettle-build/kettle/bench/harness"
	"github.com/kettle-build/kettle/internal/testenv"
)

// securityServer starts `kettle serve` with bubblewrap (required: these
// tests are about what escapes it), two workers, and extra environment.
func securityServer(t *testing.T, env []string) (*harness.Server, *harness.Client) {
	t.Helper()
	testenv.NeedTool(t, "bwrap")
	testenv.NeedTool(t, "cargo")
	dataDir := filepath.Join(harness.DataDir(t), "data")
	args := []string{"--attester", "insecure", "--sandbox", "bwrap", "--allow-local-repos",
		"--allow-private-networks", "--log-format", "json", "--shutdown-timeout", "2m", "--workers", "2"}
	return harness.StartTest(t, harness.Config{Bin: kettleBin, DataDir: dataDir, Args: args, Env: env}, true)
}

// securityProject copies testdata/security/<name> into a new directory,
// replacing each placeholder of repl in every file, and returns its path.
func securityProject(t *testing.T, name string, repl map[string]string) string {
	t.Helper()
	src := filepath.Join("..", "..", "testdata", "security", name)
	dst := filepath.Join(t.TempDir(), filepath.Base(name))
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(dst, rel)
		if fi.IsDir() {
			return os.MkdirAll(out, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		s := string(b)
		for k, v := range repl {
			s = strings.ReplaceAll(s, k, v)
		}
		return os.WriteFile(out, []byte(s), fi.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func submitDir(t *testing.T, c *harness.Client, dir string) string {
	t.Helper()
	archive := harness.Targz(t, dir, filepath.Base(dir))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id, err := c.Submit(ctx, harness.BuildRequest{Nonce: harness.NewNonce(),
		SourceData: base64.StdEncoding.EncodeToString(archive), SourceName: filepath.Base(dir) + ".tar.gz"})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func waitJob(t *testing.T, c *harness.Client, id string) ([]harness.Event, harness.Complete) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	evs, err := c.Wait(ctx, id)
	if err != nil {
		t.Fatalf("events of %s: %v", id, err)
	}
	res, err := harness.ParseComplete(evs[len(evs)-1])
	if err != nil {
		t.Fatal(err)
	}
	return evs, res
}

// honestBeside submits an honest Cargo project now and returns a function
// that checks it built and printed what it should.
func honestBeside(t *testing.T, c *harness.Client) func() {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "honest")
	project(t, dir, "honest", 0)
	id := submitDir(t, c, dir)
	return func() {
		t.Helper()
		evs, res := waitJob(t, c, id)
		if res.Status != "ok" {
			t.Fatalf("the honest build beside the attack failed: %+v\n%s", res, eventLog(evs))
		}
		tarball, _ := download(t, c, id)
		out, err := exec.Command(filepath.Join(extract(t, tarball), "artifacts", "honest")).Output()
		if err != nil || string(out) != "hello from kettle\n" {
			t.Fatalf("honest artifact printed %q (%v)", out, err)
		}
	}
}

// resultText is everything a client gets of a job: events and, when it
// succeeded, every file of the result.
func resultText(t *testing.T, c *harness.Client, id string, evs []harness.Event, res harness.Complete) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(eventLog(evs))
	if res.Status == "ok" {
		tarball, _ := download(t, c, id)
		dir := extract(t, tarball)
		filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() {
				data, _ := os.ReadFile(p)
				b.WriteString(p + "\n" + string(data) + "\n")
			}
			return nil
		})
	}
	return b.String()
}

// TestSecurityCargoReleaseSymlink (finding cargo-artifact-dir-symlink-host-read):
// build.rs replaces target/release with a symlink to a directory that holds
// a secret on the host; kettle refuses the symlinked output directory with
// BuildFailed and publishes nothing of it. Also the racy variant (the
// symlink swapped after cargo is done; either refused or honest, never the
// secret) and the cross-tenant one (target/release → the server's TMPDIR,
// where uploads are spooled, while another user's build runs).
func TestSecurityCargoReleaseSymlink(t *testing.T) {
	spool, err := os.MkdirTemp("", "kettle-e2e-spool-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(spool) })
	_, c := securityServer(t, []string{"TMPDIR=" + spool})
	// A host directory under /tmp: the build can create the same path in
	// its private /tmp, which is how the symlink got past cargo.
	secretDir, err := os.MkdirTemp("", "kettle-e2e-secrets-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(secretDir) })
	const secret = "s3cret-token-1796278761"
	if err := os.WriteFile(filepath.Join(secretDir, "token"), []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("cargo-release-symlink", func(t *testing.T) {
		honest := honestBeside(t, c)
		dir := securityProject(t, "cargo-artifact-dir-symlink/cargo-release-symlink", map[string]string{"@SECRET_DIR@": secretDir})
		id := submitDir(t, c, dir)
		evs, res := waitJob(t, c, id)
		if res.Status != "failed" || res.ErrorType != "BuildFailed" || !strings.Contains(res.Error, "symlink") {
			t.Fatalf("result %+v, want BuildFailed naming the symlink\n%s", res, eventLog(evs))
		}
		if all := resultText(t, c, id, evs, res); strings.Contains(all, secret) {
			t.Fatal("the host secret reached the client")
		}
		honest()
	})

	t.Run("cargo-release-symlink2 (racy)", func(t *testing.T) {
		honest := honestBeside(t, c)
		// A host-only directory (the sandbox's /tmp is its own).
		hostOnly := filepath.Join(secretDir, "host-only")
		os.MkdirAll(hostOnly, 0o700)
		os.WriteFile(filepath.Join(hostOnly, "id_rt"), []byte("host-only secret "+secret), 0o600)
		for i := 0; i < 2; i++ {
			dir := securityProject(t, "cargo-artifact-dir-symlink/cargo-release-symlink2", map[string]string{"@SECRET_DIR@": hostOnly})
			id := submitDir(t, c, dir)
			evs, res := waitJob(t, c, id)
			// Which way the race goes decides: honest artifacts, the
			// symlink refused, or (killed between its mv and ln -s) no
			// target/release at all.
			if res.Status != "ok" && res.ErrorType != "BuildFailed" && res.ErrorType != "NoArtifacts" {
				t.Fatalf("result %+v\n%s", res, eventLog(evs))
			}
			if all := resultText(t, c, id, evs, res); strings.Contains(all, secret) {
				t.Fatal("the host secret reached the client")
			}
		}
		honest()
	})

	t.Run("cargo-steal-spool", func(t *testing.T) {
		victimDir := securityProject(t, "cargo-artifact-dir-symlink/slow-victim", map[string]string{"@SLEEP@": "12"})
		victim := submitDir(t, c, victimDir)
		time.Sleep(2 * time.Second)
		dir := securityProject(t, "cargo-artifact-dir-symlink/cargo-steal-spool", map[string]string{"@SPOOL_DIR@": spool})
		id := submitDir(t, c, dir)
		evs, res := waitJob(t, c, id)
		if res.Status != "failed" || res.ErrorType != "BuildFailed" {
			t.Fatalf("result %+v, want BuildFailed\n%s", res, eventLog(evs))
		}
		all := resultText(t, c, id, evs, res)
		if strings.Contains(all, "PROPRIETARY-VICTIM-SOURCE") || strings.Contains(all, "kettle-source-") {
			t.Fatal("the victim's upload reached the attacker")
		}
		vevs, vres := waitJob(t, c, victim)
		if vres.Status != "ok" {
			t.Fatalf("victim: %+v\n%s", vres, eventLog(vevs))
		}
	})
}

// TestSecurityCargoPathDepOutside (finding host-rce-git-filter-via-path-dependency):
// a workspace-member glob naming another running job's directory (staged by
// its build.rs as a git work tree with a clean filter), and a path
// dependency climbing to an absolute store path, are refused with
// InvalidSource before anything runs; no git runs on the host (no marker),
// and the refusal echoes nothing kettle found on disk.
func TestSecurityCargoPathDepOutside(t *testing.T) {
	s, c := securityServer(t, nil)
	markerDir := t.TempDir()
	marker := filepath.Join(markerDir, "PWNED-host-rce")

	stagerDir := securityProject(t, "cargo-path-dep-outside/rce-stager", map[string]string{"@MARKER@": marker, "@SLEEP@": "20"})
	stager := submitDir(t, c, stagerDir)
	waitEvent(t, c, stager, "build", 30*time.Second)
	time.Sleep(3 * time.Second) // build.rs has staged the directory

	// A directory outside any project that is a git work tree with a
	// filter, for the absolute variant.
	staged := filepath.Join(s.DataDir, "..", "staged-gitrce")
	os.MkdirAll(staged, 0o755)
	os.WriteFile(filepath.Join(staged, "Cargo.toml"), []byte("[package]\nname = \"rt-stager\"\nversion = \"0.1.0\"\n"), 0o644)

	for _, tc := range []struct {
		name string
		repl map[string]string
	}{
		{"rce-trigger", map[string]string{"@JOB@": stager}},
		{"rce-trigger-abs", map[string]string{"@STAGED@": staged}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			honest := honestBeside(t, c)
			dir := securityProject(t, "cargo-path-dep-outside/"+tc.name, tc.repl)
			id := submitDir(t, c, dir)
			evs, res := waitJob(t, c, id)
			if res.Status != "failed" || res.ErrorType != "InvalidSource" || !strings.Contains(res.Error, "leaves the project") {
				t.Fatalf("result %+v, want InvalidSource (leaves the project)\n%s", res, eventLog(evs))
			}
			if strings.Contains(res.Error, "src-") || strings.Contains(res.Error, s.DataDir) {
				t.Errorf("the refusal echoes what kettle found on disk: %q", res.Error)
			}
			if hasEvent(evs, "build", "Fetching") {
				t.Errorf("something ran before the refusal:\n%s", eventLog(evs))
			}
			honest()
		})
	}
	waitJob(t, c, stager)
	if b, err := os.ReadFile(marker); err == nil {
		t.Fatalf("the git filter ran on the host: %s", b)
	}
}

// TestSecurityCargoFetchExec (finding cargo-fetch-phase-code-exec): the
// project's build.rustc-wrapper never runs, in the fetch (which runs in a
// copy holding only the manifests and Cargo.lock) or in the build (where it
// is overridden); the payload server it would download from gets no
// request, and the build succeeds without the payload.
func TestSecurityCargoFetchExec(t *testing.T) {
	var hits atomic.Int32
	payload := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write([]byte("payload-v1: content served from the network at fetch time"))
	}))
	t.Cleanup(payload.Close)
	_, c := securityServer(t, nil)
	honest := honestBeside(t, c)
	dir := securityProject(t, "cargo-fetch-exec", map[string]string{"@PAYLOAD_URL@": payload.URL + "/payload.txt"})
	id := submitDir(t, c, dir)
	evs, res := waitJob(t, c, id)
	if res.Status != "ok" {
		t.Fatalf("result %+v\n%s", res, eventLog(evs))
	}
	if hasEvent(evs, "build", "RT: wrapper running") || hasEvent(evs, "build", "payload downloaded") {
		t.Fatalf("the wrapper ran:\n%s", eventLog(evs))
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the payload server got %d requests", n)
	}
	tarball, _ := download(t, c, id)
	out, err := exec.Command(filepath.Join(extract(t, tarball), "artifacts", "rt-fetch-exec")).Output()
	if err != nil || string(out) != "embedded at build time: none\n" {
		t.Fatalf("artifact printed %q (%v)", out, err)
	}
	honest()
}

// TestSecurityCargoVendorLie (finding provenance-dependency-misrepresentation,
// cargo part): a vendored crate whose .cargo-checksum.json lists no files is
// refused with InvalidSource; an honest vendored crate (every file listed,
// package checksum = Cargo.lock's) builds offline and is recorded as local
// code (file:vendor/<crate>, dirhash h1), not as the registry package.
func TestSecurityCargoVendorLie(t *testing.T) {
	_, c := securityServer(t, nil)
	dir := securityProject(t, "cargo-vendor-lie", nil)
	id := submitDir(t, c, dir)

	// The honest twin: the same project with a consistent checksum file.
	honestDir := securityProject(t, "cargo-vendor-lie", nil)
	files := map[string]string{}
	for _, f := range []string{"Cargo.toml", "src/lib.rs"} {
		b, _ := os.ReadFile(filepath.Join(honestDir, "vendor/itoa", f))
		files[f] = sha256hex(b)
	}
	sum := "49f1f14873335454500d59611f1cf4a4b0f786f9ac11f4312a78e4cf2566695b"
	js, _ := json.Marshal(map[string]any{"files": files, "package": sum})
	os.WriteFile(filepath.Join(honestDir, "vendor/itoa/.cargo-checksum.json"), js, 0o644)
	hid := submitDir(t, c, honestDir)

	evs, res := waitJob(t, c, id)
	if res.Status != "failed" || res.ErrorType != "InvalidSource" || !strings.Contains(res.Error, ".cargo-checksum.json lists no files") {
		t.Fatalf("result %+v, want InvalidSource\n%s", res, eventLog(evs))
	}
	hevs, hres := waitJob(t, c, hid)
	if hres.Status != "ok" {
		t.Fatalf("honest vendored build: %+v\n%s", hres, eventLog(hevs))
	}
	htar, _ := download(t, c, hid)
	out := extract(t, htar)
	var prov struct {
		Predicate struct {
			BuildDefinition struct {
				ResolvedDependencies []struct {
					Digest map[string]string `json:"digest"`
					Name   string            `json:"name"`
					URI    string            `json:"uri"`
				} `json:"resolvedDependencies"`
			} `json:"buildDefinition"`
		} `json:"predicate"`
	}
	b, _ := os.ReadFile(filepath.Join(out, "provenance.json"))
	if err := json.Unmarshal(b, &prov); err != nil {
		t.Fatal(err)
	}
	deps := prov.Predicate.BuildDefinition.ResolvedDependencies
	if len(deps) != 1 || deps[0].URI != "file:vendor/itoa" || deps[0].Name != "itoa" || deps[0].Digest["h1"] == "" || deps[0].Digest["sha256"] != "" {
		t.Fatalf("resolvedDependencies %+v, want itoa as local code", deps)
	}
}

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
