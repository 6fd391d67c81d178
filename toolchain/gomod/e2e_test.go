package gomod_test

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
	"github.com/kettle-build/kettle/toolchain/gomod"
	"github.com/kettle-build/kettle/verify"
)

// TestPipelineGo builds testdata/projects/go-hello (a dependency from the Go
// module proxy) and go-nodeps (no go.sum) through pipeline.Run, the build
// phase in bubblewrap where it runs, with evidence from the insecure
// attester, and verifies each result as `kettle verify --allow-insecure`.
func TestPipelineGo(t *testing.T) {
	for _, tool := range []string{"go", "git"} {
		testenv.NeedTool(t, tool)
	}
	testenv.NeedReachable(t, "https://proxy.golang.org/github.com/google/uuid/@v/v1.6.0.info")

	ctx := context.Background()
	runner, err := sandbox.New("bwrap")
	if err != nil {
		// Locally the build may run unsandboxed; CI must exercise bwrap.
		testenv.Need(t, !testenv.CI(), fmt.Sprintf("bubblewrap is unavailable: %v", err))
		t.Logf("bubblewrap unavailable (%v): building without a sandbox", err)
		runner = sandbox.NewNone()
	}
	t.Logf("sandbox: %s", runner.Name())
	att, err := attest.New(ctx, "insecure")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		project, lockfile string
		artifacts         []string
		deps              int
	}{
		{"go-hello", gomod.SumFile, []string{"cmd-hello", "hello", "kettle-greet"}, 1},
		{"go-nodeps", gomod.ModFile, []string{"nodeps"}, 0},
	} {
		t.Run(tc.project, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), tc.project)
			gitProject(t, filepath.Join("..", "..", "testdata", "projects", tc.project), dir)
			res, err := pipeline.RunDir(ctx, pipeline.Options{Dir: dir, Runner: runner, Attester: att, Env: env()})
			if err != nil {
				t.Fatalf("Run: %v (%s: %s)", err, failure.KindOf(err), failure.Message(err))
			}
			var names []string
			for _, a := range res.Artifacts {
				names = append(names, a.Name)
			}
			if res.Toolchain != "go" || res.Lockfile != tc.lockfile || strings.Join(names, ",") != strings.Join(tc.artifacts, ",") {
				t.Fatalf("toolchain %s lockfile %s artifacts %v", res.Toolchain, res.Lockfile, names)
			}
			bd := res.Statement.Predicate.BuildDefinition
			if !strings.HasSuffix(bd.BuildType, "go@v1") || bd.ExternalParameters.BuildCommand != gomod.BuildCommand {
				t.Errorf("buildType %q, command %q", bd.BuildType, bd.ExternalParameters.BuildCommand)
			}
			if len(bd.ResolvedDependencies) != tc.deps {
				t.Errorf("deps %+v", bd.ResolvedDependencies)
			}
			goTool, ok := bd.InternalParameters.Toolchain.Get("go")
			if !ok || len(bd.InternalParameters.Toolchain) != 2 || bd.InternalParameters.Toolchain[1].Name != "kettle" {
				t.Fatalf("toolchain %+v", bd.InternalParameters.Toolchain)
			}
			src := bd.ExternalParameters.Source.Digest
			root, err := provenance.MerkleRoot(gomod.MerkleLeaves(src["gitCommit"], src["gitTree"], goTool,
				bd.InternalParameters.LockfileHash["sha256"], bd.ResolvedDependencies))
			if err != nil || res.Statement.Predicate.RunDetails.Byproducts[0].Digest["sha256"] != root {
				t.Errorf("merkle root %s, recomputed %s (%v)", res.Statement.Predicate.RunDetails.Byproducts[0].Digest["sha256"], root, err)
			}
			if _, err := os.Stat(filepath.Join(res.OutDir, "build-config", tc.lockfile)); err != nil {
				t.Error(err)
			}
			if tc.project == "go-hello" {
				// Reproducible: the same commit built in another directory
				// (another job) gives the same binaries.
				dir2 := filepath.Join(t.TempDir(), "elsewhere", tc.project)
				os.MkdirAll(filepath.Dir(dir2), 0o755)
				gitProject(t, filepath.Join("..", "..", "testdata", "projects", tc.project), dir2)
				res2, err := pipeline.RunDir(ctx, pipeline.Options{Dir: dir2, Runner: runner, Env: env()})
				if err != nil {
					t.Fatalf("second Run: %v", err)
				}
				for i, a := range res2.Artifacts {
					if a != res.Artifacts[i] {
						t.Errorf("not reproducible: %+v vs %+v", a, res.Artifacts[i])
					}
				}
			}
			rep, err := verify.Bundle(ctx, res.OutDir, verify.WithAllowInsecureUnsafe(), verify.WithoutExpectationsUnsafe())
			if err != nil {
				t.Fatal(err)
			}
			if !rep.Passed() {
				j, _ := rep.JSON()
				t.Fatalf("verify failed:\n%s", j)
			}
		})
	}
}

// TestPipelineGoTampered: a go.sum hash that does not match the module the
// proxy serves fails the build with DependencyFetchFailed, before anything
// is built, with a message naming the module and no server path.
func TestPipelineGoTampered(t *testing.T) {
	for _, tool := range []string{"go", "git"} {
		testenv.NeedTool(t, tool)
	}
	testenv.NeedReachable(t, "https://proxy.golang.org/github.com/google/uuid/@v/v1.6.0.info")
	dir := filepath.Join(t.TempDir(), "go-hello")
	if err := exec.Command("cp", "-a", filepath.Join("..", "..", "testdata", "projects", "go-hello"), dir).Run(); err != nil {
		t.Fatal(err)
	}
	sum := filepath.Join(dir, gomod.SumFile)
	b, _ := os.ReadFile(sum)
	os.WriteFile(sum, []byte(strings.Replace(string(b), "h1:NIva", "h1:NIvb", 1)), 0o644)
	_, err := pipeline.RunDir(context.Background(), pipeline.Options{Dir: dir, Runner: sandbox.NewNone(), Env: env()})
	msg := failure.Message(err)
	if failure.KindOf(err) != failure.DependencyFetchFailed || !strings.Contains(msg, "github.com/google/uuid@v1.6.0: checksum mismatch") {
		t.Fatalf("err %v (%s: %q)", err, failure.KindOf(err), msg)
	}
	if strings.Contains(msg, dir) || strings.Contains(msg, os.TempDir()) {
		t.Fatalf("message leaks a path: %q", msg)
	}
}

// env is pipeline.DefaultEnv with go's directory on PATH.
func env() []string {
	e := pipeline.DefaultEnv()
	goBin, err := exec.LookPath("go")
	if err != nil {
		return e
	}
	for i, kv := range e {
		if strings.HasPrefix(kv, "PATH=") {
			e[i] = kv + ":" + filepath.Dir(goBin)
		}
	}
	return e
}

func gitProject(t *testing.T, src, dst string) {
	t.Helper()
	if err := exec.Command("cp", "-a", src, dst).Run(); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"init", "-q", "-b", "main"}, {"add", "-A"}, {"commit", "-q", "-m", "test project"},
		{"remote", "add", "origin", "https://example.com/" + filepath.Base(dst) + ".git"},
	} {
		cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.com"}, args...)...)
		cmd.Dir = dst
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
}
