package pnpm_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kettle-build/kettle/attest"
	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/internal/testenv"
	"github.com/kettle-build/kettle/pipeline"
	"github.com/kettle-build/kettle/provenance"
	"github.com/kettle-build/kettle/sandbox"
	"github.com/kettle-build/kettle/toolchain/pnpm"
	"github.com/kettle-build/kettle/verify"
)

// TestPipelinePnpm builds testdata/projects/pnpm-hello through
// pipeline.Run (build phase in bubblewrap where it runs, else unsandboxed),
// with evidence from the insecure attester, and verifies the result
// directory as `kettle verify --allow-insecure` does.
func TestPipelinePnpm(t *testing.T) {
	for _, tool := range []string{"pnpm", "node", "git"} {
		testenv.NeedTool(t, tool)
	}
	testenv.NeedReachable(t, "https://registry.npmjs.org/ms")

	ctx := context.Background()
	runner, err := sandbox.New("bwrap")
	if err != nil {
		// Locally the build may run unsandboxed; CI must exercise bwrap.
		testenv.Need(t, !testenv.CI(), fmt.Sprintf("bubblewrap is unavailable: %v", err))
		t.Logf("bubblewrap unavailable (%v): building without a sandbox", err)
		runner = sandbox.NewNone()
	}
	t.Logf("sandbox: %s", runner.Name())
	dir := filepath.Join(t.TempDir(), "pnpm-hello")
	gitProject(t, filepath.Join("..", "..", "testdata", "projects", "pnpm-hello"), dir)
	att, err := attest.New(ctx, "insecure")
	if err != nil {
		t.Fatal(err)
	}
	nonce := []byte("0123456789abcdef")
	res, err := pipeline.RunDir(ctx, pipeline.Options{Dir: dir, Runner: runner, Attester: att, Nonce: nonce})
	if err != nil {
		t.Fatalf("Run: %v (%s: %s)", err, failure.KindOf(err), failure.Message(err))
	}
	if res.Toolchain != "pnpm" || len(res.Artifacts) != 1 || res.Artifacts[0].Name != pnpm.ArtifactName {
		t.Fatalf("result %+v", res)
	}
	bd := res.Statement.Predicate.BuildDefinition
	if !strings.HasSuffix(bd.BuildType, "pnpm@v1") || bd.ExternalParameters.BuildCommand != pnpm.BuildCommand {
		t.Errorf("buildType %q, command %q", bd.BuildType, bd.ExternalParameters.BuildCommand)
	}
	var names []string
	for _, tool := range bd.InternalParameters.Toolchain {
		names = append(names, tool.Name)
	}
	if strings.Join(names, ",") != "pnpm,node,kettle" {
		t.Errorf("toolchain %v", names)
	}
	if want := map[bool]string{true: "", false: runner.Name()}[runner.Name() == "bwrap"]; bd.InternalParameters.Sandbox != want {
		t.Errorf("sandbox recorded as %q, want %q", bd.InternalParameters.Sandbox, want)
	}
	if len(bd.ResolvedDependencies) != 2 {
		t.Errorf("deps %+v", bd.ResolvedDependencies)
	}
	// The Merkle root is recomputable from provenance.json alone.
	node, _ := bd.InternalParameters.Toolchain.Get("node")
	pn, _ := bd.InternalParameters.Toolchain.Get("pnpm")
	src := bd.ExternalParameters.Source.Digest
	root, err := provenance.MerkleRoot(pnpm.MerkleLeaves(src["gitCommit"], src["gitTree"], node, pn,
		bd.InternalParameters.LockfileHash["sha256"], bd.ResolvedDependencies))
	if err != nil || res.Statement.Predicate.RunDetails.Byproducts[0].Digest["sha256"] != root {
		t.Errorf("merkle root %s, recomputed %s (%v)", res.Statement.Predicate.RunDetails.Byproducts[0].Digest["sha256"], root, err)
	}
	if _, err := os.Stat(filepath.Join(res.OutDir, "build-config", pnpm.LockfileName)); err != nil {
		t.Error(err)
	}

	rep, err := verify.Bundle(ctx, res.OutDir, verify.WithAllowInsecureUnsafe(), verify.WithNonce(nonce))
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Passed() {
		j, _ := rep.JSON()
		t.Fatalf("verify failed:\n%s", j)
	}
}

// TestPipelinePnpmTampered: an integrity in pnpm-lock.yaml that does not
// match the registry's tarball fails the build with DependencyFetchFailed.
func TestPipelinePnpmTampered(t *testing.T) {
	for _, tool := range []string{"pnpm", "node"} {
		testenv.NeedTool(t, tool)
	}
	testenv.NeedReachable(t, "https://registry.npmjs.org/ms")
	dir := filepath.Join(t.TempDir(), "pnpm-hello")
	if err := exec.Command("cp", "-a", filepath.Join("..", "..", "testdata", "projects", "pnpm-hello"), dir).Run(); err != nil {
		t.Fatal(err)
	}
	lock := filepath.Join(dir, pnpm.LockfileName)
	b, _ := os.ReadFile(lock)
	// ms pinned to @types/ms's integrity: well-formed, wrong.
	os.WriteFile(lock, []byte(strings.Replace(string(b),
		"sha512-6FlzubTLZG3J2a/NVCAleEhjzq5oxgHyaCU9yYXvcLsvoVaHJq/s5xXI6/XXP6tz7R9xAOtHnSO/tXtF3WRTlA==",
		"sha512-GsCCIZDE/p3i96vtEqx+7dBUGXrc7zeSK3wwPHIaRThS+9OhWIXRqzs4d6k1SVU8g91DrNRWxWUGhp5KXQb2VA==", 1)), 0o644)
	env := append(pipeline.DefaultEnv(), "npm_config_fetch_retries=0")
	_, err := pipeline.RunDir(context.Background(), pipeline.Options{Dir: dir, Runner: sandbox.NewNone(), Env: env})
	msg := failure.Message(err)
	if failure.KindOf(err) != failure.DependencyFetchFailed || !strings.Contains(msg, "ERR_PNPM_TARBALL_INTEGRITY") {
		t.Fatalf("err %v (%s: %q)", err, failure.KindOf(err), msg)
	}
	if strings.Contains(msg, dir) || strings.Contains(msg, os.TempDir()) {
		t.Fatalf("message leaks a path: %q", msg)
	}
}

func gitProject(t *testing.T, src, dst string) {
	t.Helper()
	if err := exec.Command("cp", "-a", src, dst).Run(); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"init", "-q", "-b", "main"}, {"add", "-A"}, {"commit", "-q", "-m", "test project"},
		{"remote", "add", "origin", "https://example.com/pnpm-hello.git"},
	} {
		cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.com"}, args...)...)
		cmd.Dir = dst
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
}
