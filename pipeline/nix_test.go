package pipeline

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kettle-build/kettle/events"
	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/internal/testenv"
	"github.com/kettle-build/kettle/provenance"
	"github.com/kettle-build/kettle/sandbox"
)

// TestNixFlake builds the flake (a fixed-output derivation, a path: input,
// builders /bin/sh) twice from two directories.
func TestNixFlake(t *testing.T) {
	env := toolEnv(t)
	needTool(t, env, "nix")
	runner := bwrapRunner(t)
	base := t.TempDir()
	dirA := filepath.Join(base, "a", "flake")
	dirB := filepath.Join(base, "b", "other", "flake")
	commit := gitProject(t, "nix-flake", dirA)
	gitProject(t, "nix-flake", dirB)

	before := hostStore(t)
	var results []*Result
	var rec *recorder
	var caches []string
	for i, dir := range []string{dirA, dirB} {
		rec = &recorder{}
		cache := filepath.Join(base, fmt.Sprint("cache", i))
		caches = append(caches, cache)
		res, err := Run(t.Context(), Options{Dir: dir, Runner: runner, Env: env, Events: rec, CacheDir: cache})
		if err != nil {
			t.Fatalf("Run: %v (%s)\nevents: %v", err, failure.KindOf(err), rec.ev)
		}
		results = append(results, res)
	}
	res := results[0]
	st := res.Statement
	bd := st.Predicate.BuildDefinition
	if bd.BuildType != DefaultBuildTypeBase+"nix@v1" || bd.ExternalParameters.Source.Digest["gitCommit"] != commit {
		t.Errorf("buildType %s source %+v", bd.BuildType, bd.ExternalParameters.Source)
	}
	ip := bd.InternalParameters
	if ip.Evaluation == nil || ip.Evaluation.DerivationCount != 2 || ip.Evaluation.FetchCount != 1 {
		t.Errorf("evaluation %+v", ip.Evaluation)
	}
	if len(ip.FlakeInputs) != 1 || ip.FlakeInputs[0].Name != "greeting" || !strings.HasPrefix(ip.FlakeInputs[0].NarHash, "sha256-") {
		t.Errorf("flakeInputs %+v", ip.FlakeInputs)
	}
	if len(ip.Toolchain) != 2 || ip.Toolchain[0].Name != "nix" || ip.Toolchain[1].Name != "kettle" {
		t.Errorf("toolchain %+v", ip.Toolchain)
	}
	const fodHash = "65AafoUx3/XpH8FUdq852HFgHXK8zU1gNrJTlQ0rFo0="
	deps := bd.ResolvedDependencies
	if len(deps) != 1 || deps[0].URI != "pkg:nix-fetch/kettle-greeting-src?hash=sha256:"+fodHash || deps[0].Digest["sha256"] != fodHash ||
		deps[0].Annotations == nil || deps[0].Annotations.URL != "https://example.com/kettle-greeting-src.txt" ||
		deps[0].Annotations.OutputHashMode != "flat" || !strings.HasSuffix(deps[0].Annotations.DrvPath, "-kettle-greeting-src.drv") {
		t.Errorf("dependencies %+v %+v", deps, deps[0].Annotations)
	}
	// Only the executable in bin/ is an artifact.
	if len(st.Subject) != 1 || st.Subject[0].Name != "kettle-hello" {
		t.Fatalf("subjects %+v", st.Subject)
	}
	// The artifact names its share/ file in the job's store, which is gone
	// after the job: only the first line comes from the script itself.
	out, _ := exec.Command(filepath.Join(dirA, OutDirName, "artifacts", "kettle-hello")).Output()
	if !strings.HasPrefix(string(out), "Hello from a path input\n") {
		t.Errorf("artifact output %q", out)
	}
	for _, c := range caches {
		if _, err := os.Lstat(filepath.Join(c, "nix")); !os.IsNotExist(err) {
			t.Errorf("the job's Nix store is still there after the job: %v", err)
		}
	}
	// (Other processes on the machine may use the host's store: only this
	// flake's own names must not appear there.)
	for _, n := range newEntries(before, hostStore(t)) {
		if strings.Contains(n, "kettle-hello") || strings.Contains(n, "kettle-greeting") {
			t.Errorf("the build wrote %s to the host's /nix/store", n)
		}
	}
	if _, err := os.Stat(filepath.Join(dirA, OutDirName, "build-config", "flake.lock")); err != nil {
		t.Error(err)
	}
	nix, _ := ip.Toolchain.Get("nix")
	lock, _ := os.ReadFile(filepath.Join(dirA, "flake.lock"))
	want, _ := provenance.MerkleRoot([]string{commit, bd.ExternalParameters.Source.Digest["gitTree"], sha256hex(lock),
		"fetch:kettle-greeting-src:sha256:" + fodHash, nix.SHA256, nix.Version})
	if got := st.Predicate.RunDetails.Byproducts[0].Digest["sha256"]; got != want {
		t.Errorf("merkle root %s, want %s", got, want)
	}
	if m := rec.msgs(events.Detect); len(m) != 1 || m[0] != "Detected Nix project" {
		t.Errorf("detect %q", m)
	}
	if b := rec.msgs(events.Build); !contains(b, "Running `"+bd.ExternalParameters.BuildCommand+"`") || b[len(b)-1] != "Build command finished" {
		t.Errorf("build events %q", b)
	}
	if results[1].Artifacts[0] != res.Artifacts[0] {
		t.Errorf("artifacts differ: %+v %+v", res.Artifacts, results[1].Artifacts)
	}
	if a, b := withoutMetadata(t, res.Provenance), withoutMetadata(t, results[1].Provenance); !bytes.Equal(a, b) {
		t.Errorf("provenance differs apart from metadata:\n%s\n%s", a, b)
	}
}

// TestNixWithoutLock: a flake without inputs builds without flake.lock
// (Nix 2.8 writes none for it); the provenance then has no lockfileHash,
// the result no build-config/, and the lockfile's Merkle leaf is "". A
// flake with inputs but no flake.lock is refused as InvalidSource.
func TestNixWithoutLock(t *testing.T) {
	env := toolEnv(t)
	needTool(t, env, "nix")
	runner := bwrapRunner(t)
	dir := filepath.Join(t.TempDir(), "flake")
	commit := gitProject(t, "nix-noinputs", dir)
	rec := &recorder{}
	res, err := Run(t.Context(), Options{Dir: dir, Runner: runner, Env: env, Events: rec})
	if err != nil {
		t.Fatalf("Run: %v (%s)\nevents: %v", err, failure.KindOf(err), rec.ev)
	}
	if !hasArtifact(res, "kettle-noinputs") {
		t.Errorf("artifacts %+v", res.Artifacts)
	}
	bd := res.Statement.Predicate.BuildDefinition
	if bd.InternalParameters.LockfileHash != nil || bytes.Contains(res.Provenance, []byte("lockfileHash")) {
		t.Errorf("provenance records a lockfile hash without a lockfile:\n%s", res.Provenance)
	}
	if _, err := os.Stat(filepath.Join(dir, OutDirName, "build-config")); !os.IsNotExist(err) {
		t.Errorf("build-config/ without a lockfile: %v", err)
	}
	nix, _ := bd.InternalParameters.Toolchain.Get("nix")
	want, _ := provenance.MerkleRoot([]string{commit, bd.ExternalParameters.Source.Digest["gitTree"], "", nix.SHA256, nix.Version})
	if got := res.Statement.Predicate.RunDetails.Byproducts[0].Digest["sha256"]; got != want {
		t.Errorf("merkle root %s, want %s", got, want)
	}

	// With an input and no lock: refused, whatever the input is.
	dir = filepath.Join(t.TempDir(), "flake")
	copyTree(t, filepath.Join(projectsDir(), "nix-flake"), dir)
	os.Remove(filepath.Join(dir, "flake.lock"))
	_, err = Run(t.Context(), Options{Dir: dir, Runner: runner, Env: env, Events: &recorder{}})
	if failure.KindOf(err) != failure.InvalidSource || !strings.Contains(failure.Message(err), "flake.lock") {
		t.Fatalf("err %v (%s: %q)", err, failure.KindOf(err), failure.Message(err))
	}
}

// bwrapRunner is the bubblewrap runner (Nix builds need it: the job's store
// is mounted at /nix); missing bubblewrap skips, or fails with CI=true.
func bwrapRunner(t *testing.T) sandbox.Runner {
	t.Helper()
	r, err := sandbox.New("bwrap")
	testenv.Need(t, err == nil, fmt.Sprintf("bubblewrap cannot run here (%v)", err))
	return r
}

// hostStore lists the machine's /nix/store (nil when there is none): no job
// may add to it.
func hostStore(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir("/nix/store")
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func newEntries(before, after []string) []string {
	old := map[string]bool{}
	for _, n := range before {
		old[n] = true
	}
	var out []string
	for _, n := range after {
		if !old[n] {
			out = append(out, n)
		}
	}
	return out
}
