package e2e

import (
	"bytes"
	"context"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kettle-build/kettle/bench/harness"
	"github.com/kettle-build/kettle/bundle"
	"github.com/kettle-build/kettle/internal/testenv"
	"github.com/kettle-build/kettle/provenance"
	"github.com/kettle-build/kettle/verify"
)

// toolchainProject is a test project of testdata/projects built by the
// tests of issue 8: Go (a module from the Go module proxy) and pnpm (two
// packages from the npm registry).
type toolchainProject struct {
	name      string   // directory under testdata/projects
	toolchain string   // driver name in GET /build/{id} and the provenance
	title     string   // what the detect event names
	lockfile  string   // build-config/<lockfile>
	tools     []string // binaries the build needs
	probe     string   // a URL that answers when the registry is reachable
	artifacts []string // artifact names, sorted
}

var toolchainProjects = []toolchainProject{
	{"go-hello", "go", "Go", "go.sum", []string{"go", "git"},
		"https://proxy.golang.org/github.com/google/uuid/@v/v1.6.0.info", []string{"cmd-hello", "hello", "kettle-greet"}},
	{"pnpm-hello", "pnpm", "Pnpm", "pnpm-lock.yaml", []string{"pnpm", "node"},
		"https://registry.npmjs.org/ms", []string{"dist.tar.gz"}},
}

// needToolchain skips the test when a binary of p is missing or its
// registry does not answer.
func needToolchain(t *testing.T, p toolchainProject) {
	t.Helper()
	for _, tool := range p.tools {
		testenv.NeedTool(t, tool)
	}
	testenv.NeedReachable(t, p.probe)
}

// copyProject copies testdata/projects/<name> to a new directory, without
// build outputs, and returns its path.
func copyProject(t *testing.T, name string) string {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(root, "testdata", "projects", name)
	dst := filepath.Join(t.TempDir(), name)
	harness.CopyTree(t, src, dst, "kettle-build", "node_modules", ".git")
	return dst
}

// artifactNames lists dir/artifacts, sorted.
func artifactNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, "artifacts"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

// checkProvenance reads dir/provenance.json and checks the toolchain's
// buildType and that every artifact is a subject.
func checkProvenance(t *testing.T, dir string, p toolchainProject) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "provenance.json"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := provenance.Parse(b)
	if err != nil {
		t.Fatalf("provenance.json: %v", err)
	}
	if bt := st.Predicate.BuildDefinition.BuildType; !strings.HasSuffix(bt, p.toolchain+"@v1") {
		t.Errorf("buildType %q", bt)
	}
	var subjects []string
	for _, s := range st.Subject {
		subjects = append(subjects, s.Name)
	}
	if strings.Join(subjects, ",") != strings.Join(p.artifacts, ",") {
		t.Errorf("subjects %v, want %v", subjects, p.artifacts)
	}
	if len(st.Predicate.BuildDefinition.ResolvedDependencies) == 0 {
		t.Errorf("no resolved dependencies")
	}
}

// TestToolchainsService (issue 8): go-hello and pnpm-hello uploaded as
// source_data to a real `kettle serve` (insecure attester, --sandbox auto)
// build, and the downloaded bundles pass verify.Bundle with the request's
// nonce and `kettle verify --nonce … --allow-insecure`.
func TestToolchainsService(t *testing.T) {
	_, c := server(t, "", "--workers", "2")
	harness.WaitReady(t, c)
	for _, p := range toolchainProjects {
		t.Run(p.toolchain, func(t *testing.T) {
			t.Parallel()
			needToolchain(t, p)
			archive := harness.Targz(t, copyProject(t, p.name), p.name)
			nonce := harness.NewNonce()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			id, err := c.SubmitArchive(ctx, archive, p.name+".tar.gz", nonce)
			if err != nil {
				t.Fatal(err)
			}
			evs, err := c.Wait(ctx, id)
			if err != nil {
				t.Fatalf("events of %s: %v", id, err)
			}
			res, err := harness.ParseComplete(evs[len(evs)-1])
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != "ok" {
				t.Fatalf("build failed: %+v\n%s", res, eventLog(evs))
			}
			if !hasEvent(evs, "detect", p.title) {
				t.Errorf("no %s detection:\n%s", p.title, eventLog(evs))
			}
			if st, err := c.Status(ctx, id); err != nil || st["toolchain"] != p.toolchain {
				t.Errorf("status %v (%v)", st, err)
			}

			var buf bytes.Buffer
			if _, _, err := c.Download(ctx, id, &buf); err != nil {
				t.Fatal(err)
			}
			dir, err := bundle.Extract(bytes.NewReader(buf.Bytes()), t.TempDir(), bundle.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{"provenance.json", "evidence.json", "manifest.json", "build-config/" + p.lockfile} {
				if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
					t.Errorf("result lacks %s", f)
				}
			}
			if got := artifactNames(t, dir); strings.Join(got, ",") != strings.Join(p.artifacts, ",") {
				t.Errorf("artifacts %v, want %v", got, p.artifacts)
			}
			checkProvenance(t, dir, p)

			nb, _ := hex.DecodeString(nonce)
			rep, err := verify.Bundle(ctx, dir, verify.WithNonce(nb), verify.WithAllowInsecureUnsafe())
			if err != nil {
				t.Fatal(err)
			}
			if !rep.Passed() {
				j, _ := rep.JSON()
				t.Fatalf("verify failed:\n%s", j)
			}
			kettleVerify(t, dir, "--nonce", nonce, "--allow-insecure")
			// Another nonce must not verify.
			if rep, err := verify.Bundle(ctx, dir, verify.WithNonce([]byte("another nonce")), verify.WithAllowInsecureUnsafe()); err == nil && rep.Passed() {
				t.Error("verify passed with a wrong nonce")
			}
		})
	}
}

// TestToolchainsCLI (issue 8): `kettle build` on copies of go-hello and
// pnpm-hello exits 0 and writes provenance.json, manifest.json, the
// lockfile and the artifacts; `kettle attest --attester insecure` on
// another copy gives a bundle that `kettle verify --allow-insecure` passes.
func TestToolchainsCLI(t *testing.T) {
	for _, p := range toolchainProjects {
		t.Run(p.toolchain, func(t *testing.T) {
			t.Parallel()
			needToolchain(t, p)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()

			dir := copyProject(t, p.name)
			cmd := exec.CommandContext(ctx, kettleBin, "build", "--sandbox", sandboxMode(),
				"--source-uri", "https://example.com/"+p.name+".git", dir)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("kettle build: %v\n%s", err, out)
			}
			out := filepath.Join(dir, "kettle-build")
			for _, f := range []string{"provenance.json", "manifest.json", "build-config/" + p.lockfile} {
				if _, err := os.Stat(filepath.Join(out, f)); err != nil {
					t.Errorf("kettle build wrote no %s", f)
				}
			}
			if got := artifactNames(t, out); strings.Join(got, ",") != strings.Join(p.artifacts, ",") {
				t.Errorf("artifacts %v, want %v", got, p.artifacts)
			}
			checkProvenance(t, out, p)

			dir2 := copyProject(t, p.name)
			nonce := harness.NewNonce()
			cmd = exec.CommandContext(ctx, kettleBin, "attest", "--sandbox", sandboxMode(), "--attester", "insecure",
				"--nonce", nonce, "--source-uri", "https://example.com/"+p.name+".git", dir2)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("kettle attest: %v\n%s", err, out)
			}
			kettleVerify(t, filepath.Join(dir2, "kettle-build"), "--nonce", nonce, "--allow-insecure")
		})
	}
}
