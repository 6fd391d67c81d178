package pipeline

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kettle-build/kettle/events"
	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/provenance"
)

// TestNixFlake builds the flake (a fixed-output derivation, a path: input,
// builders /bin/sh) twice from two directories.
func TestNixFlake(t *testing.T) {
	env := toolEnv(t)
	needTool(t, env, "nix")
	base := t.TempDir()
	dirA := filepath.Join(base, "a", "flake")
	dirB := filepath.Join(base, "b", "other", "flake")
	commit := gitProject(t, "nix-flake", dirA)
	gitProject(t, "nix-flake", dirB)

	var results []*Result
	var rec *recorder
	for _, dir := range []string{dirA, dirB} {
		rec = &recorder{}
		res, err := Run(t.Context(), Options{Dir: dir, Runner: noSandbox(), Env: env, Events: rec})
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
	out, err := exec.Command(filepath.Join(dirA, OutDirName, "artifacts", "kettle-hello")).Output()
	if err != nil || string(out) != "Hello from a path input\nHello from a fixed-output derivation\n" {
		t.Errorf("artifact output %q %v", out, err)
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

// TestNixWithoutLock: flake.nix without flake.lock is refused.
func TestNixWithoutLock(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "flake.nix"), []byte("{ outputs = { self }: { }; }"), 0o644)
	os.WriteFile(filepath.Join(dir, "Cargo.lock"), []byte("version = 4\n"), 0o644)
	_, err := Run(t.Context(), Options{Dir: dir, Runner: noSandbox()})
	if failure.KindOf(err) != failure.UnsupportedToolchain || !strings.Contains(failure.Message(err), "flake.lock") {
		t.Fatalf("err %v", err)
	}
}
