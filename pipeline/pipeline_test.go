package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kettle-build/kettle/attest"
	"github.com/kettle-build/kettle/events"
	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/internal/testenv"
	"github.com/kettle-build/kettle/provenance"
	"github.com/kettle-build/kettle/toolchain"
	"github.com/kettle-build/kettle/toolchain/cargo"
)

func needTool(t *testing.T, env []string, name string) {
	t.Helper()
	_, err := toolchain.LookPath(env, name)
	testenv.Need(t, err == nil, name+" is not installed")
}

// withoutMetadata blanks runDetails.metadata, the only part of two builds'
// provenance that may differ.
func withoutMetadata(t *testing.T, prov []byte) []byte {
	t.Helper()
	s, err := provenance.Parse(prov)
	if err != nil {
		t.Fatal(err)
	}
	s.Predicate.RunDetails.Metadata = provenance.Metadata{}
	b, err := provenance.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var (
	invocationRe = regexp.MustCompile(`^build-\d{8}-\d{6}-[0-9a-f]{8}$`)
	timeRe       = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$`)
)

// TestCargoWorkspace builds the two-binary workspace twice, from two
// different directories, and checks the result directory, the events and
// that artifacts and provenance (apart from metadata) are identical.
func TestCargoWorkspace(t *testing.T) {
	env := toolEnv(t)
	needTool(t, env, "cargo")
	base := t.TempDir()
	dirA := filepath.Join(base, "a", "ws")
	dirB := filepath.Join(base, "b", "deeper", "checkout")
	commit := gitProject(t, "cargo-workspace", dirA)
	if c := gitProject(t, "cargo-workspace", dirB); c != commit {
		t.Fatalf("test setup: commits differ: %s %s", c, commit)
	}
	nonce := []byte("0123456789abcdef")

	var results []*Result
	var recs []*recorder
	for _, dir := range []string{dirA, dirB} {
		rec := &recorder{}
		res, err := RunDir(t.Context(), Options{
			Dir:      dir,
			Runner:   noSandbox(),
			Events:   rec,
			Env:      env,
			Attester: fakeAttester{"insecure"},
			Nonce:    nonce,
		})
		if err != nil {
			t.Fatalf("Run(%s): %v (%s)\nevents: %v", dir, err, failure.KindOf(err), rec.ev)
		}
		results = append(results, res)
		recs = append(recs, rec)
	}
	res, rec := results[0], recs[0]

	// Result directory.
	out := filepath.Join(dirA, OutDirName)
	for _, f := range []string{"artifacts/hello", "artifacts/bye", "build-config/Cargo.lock", "provenance.json", "manifest.json", "evidence.json"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("missing %s", f)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(out, "artifacts")); len(ents) != 2 {
		t.Errorf("artifacts/ has %d entries, want 2", len(ents))
	}
	hello, err := exec.Command(filepath.Join(out, "artifacts", "hello"), "kettle").Output()
	if err != nil || string(hello) != "Hello, kettle!\n" {
		t.Errorf("artifacts/hello: %q %v", hello, err)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "provenance.json")); !bytes.Equal(b, res.Provenance) {
		t.Error("provenance.json differs from Result.Provenance")
	}

	// Provenance.
	st := res.Statement
	bd := st.Predicate.BuildDefinition
	if bd.BuildType != DefaultBuildTypeBase+"cargo@v1" || st.Predicate.RunDetails.Builder.ID != DefaultBuilderID {
		t.Errorf("buildType %q builder %q", bd.BuildType, st.Predicate.RunDetails.Builder.ID)
	}
	if bd.ExternalParameters.BuildCommand != "cargo build --locked --release" {
		t.Errorf("buildCommand %q", bd.ExternalParameters.BuildCommand)
	}
	src := bd.ExternalParameters.Source
	if src.URI != "https://example.com/cargo-workspace.git" || src.Digest["gitCommit"] != commit ||
		src.Digest["gitTree"] != gitRun(t, dirA, "rev-parse", "HEAD^{tree}") {
		t.Errorf("source %+v", src)
	}
	var names []string
	for _, tool := range bd.InternalParameters.Toolchain {
		names = append(names, tool.Name)
		if len(tool.SHA256) != 64 || tool.Version == "" {
			t.Errorf("tool %+v", tool)
		}
	}
	if strings.Join(names, ",") != "cargo,rustc,kettle" {
		t.Errorf("toolchain order %v", names)
	}
	if bd.InternalParameters.Sandbox != "none" {
		t.Errorf("sandbox %q, want none", bd.InternalParameters.Sandbox)
	}
	lock, _ := os.ReadFile(filepath.Join(dirA, "Cargo.lock"))
	if bd.InternalParameters.LockfileHash["sha256"] != sha256hex(lock) {
		t.Error("lockfileHash")
	}
	if len(st.Subject) != 2 || st.Subject[0].Name != "bye" || st.Subject[1].Name != "hello" {
		t.Errorf("subjects %+v", st.Subject)
	}
	md := st.Predicate.RunDetails.Metadata
	if !invocationRe.MatchString(md.InvocationID) || !timeRe.MatchString(md.StartedOn) || md.FinishedOn == nil || !timeRe.MatchString(*md.FinishedOn) {
		t.Errorf("metadata %+v", md)
	}
	rustc, _ := bd.InternalParameters.Toolchain.Get("rustc")
	cargoT, _ := bd.InternalParameters.Toolchain.Get("cargo")
	wantRoot, _ := provenance.MerkleRoot(cargo.MerkleLeaves(commit, src.Digest["gitTree"], rustc, cargoT, sha256hex(lock), nil))
	if got := st.Predicate.RunDetails.Byproducts[0].Digest["sha256"]; got != wantRoot {
		t.Errorf("merkle root %s, want %s", got, wantRoot)
	}
	if !strings.Contains(string(res.Provenance), `"resolvedDependencies": []`) {
		t.Error("empty resolvedDependencies not written as []")
	}

	// Evidence binds sha256(provenance.json) ‖ nonce.
	var ev struct {
		Platform string
		Evidence struct {
			ReportData []byte `json:"report_data"`
		}
	}
	if err := json.Unmarshal(res.Evidence, &ev); err != nil {
		t.Fatal(err)
	}
	if rd := attest.ReportData(res.Provenance, nonce); !bytes.Equal(ev.Evidence.ReportData, rd[:]) {
		t.Error("evidence does not bind the provenance and nonce")
	}

	// Manifest.
	var man map[string]any
	mb, _ := os.ReadFile(filepath.Join(out, "manifest.json"))
	if err := json.Unmarshal(mb, &man); err != nil {
		t.Fatal(err)
	}
	if man["git_commit"] != commit || man["input_merkle_root"] != wantRoot || len(man["artifacts"].([]any)) != 2 {
		t.Errorf("manifest %s", mb)
	}

	// Events, in docs/api.md order and wording.
	var kinds []events.Type
	for _, e := range rec.ev {
		if len(kinds) == 0 || kinds[len(kinds)-1] != e.Type {
			kinds = append(kinds, e.Type)
		}
	}
	if got := join(kinds); got != "detect,build,provenance,attest" {
		t.Errorf("event order %s", got)
	}
	if m := rec.msgs(events.Detect); len(m) != 1 || m[0] != "Detected Cargo project" {
		t.Errorf("detect %q", m)
	}
	b := rec.msgs(events.Build)
	if !contains(b, "Running `cargo build --locked --release`") || b[len(b)-1] != "Build command finished" || !containsPrefix(b, "   Compiling greet") {
		t.Errorf("build events %q", b)
	}
	if m := rec.msgs(events.Provenance); len(m) != 1 || m[0] != "Wrote provenance.json (input Merkle root "+wantRoot+")" {
		t.Errorf("provenance %q", m)
	}
	sum := sha256hex(res.Provenance)
	if a := rec.msgs(events.Attest); len(a) != 4 || a[0] != "Running on platform: insecure" || a[1] != InsecureWarning ||
		a[2] != "Attesting provenance.json (checksum "+sum+")" || a[3] != "Attestation complete! evidence.json written" {
		t.Errorf("attest %q", a)
	}
	for _, e := range rec.ev {
		if strings.Contains(e.Msg, base) {
			t.Errorf("event names a server path: %q", e.Msg)
		}
	}

	// Reproducible from another directory.
	for i := range res.Artifacts {
		if res.Artifacts[i] != results[1].Artifacts[i] {
			t.Errorf("artifact %d differs: %+v vs %+v", i, res.Artifacts[i], results[1].Artifacts[i])
		}
	}
	if a, b := withoutMetadata(t, res.Provenance), withoutMetadata(t, results[1].Provenance); !bytes.Equal(a, b) {
		t.Errorf("provenance differs apart from metadata:\n%s\n%s", a, b)
	}
}

// TestNonGitSource builds a plain directory (an extracted archive): no
// commit, the git tree id of the content, the archive's sha256.
func TestNonGitSource(t *testing.T) {
	env := toolEnv(t)
	needTool(t, env, "cargo")
	needTool(t, env, "git")
	dir := filepath.Join(t.TempDir(), "src")
	copyTree(t, filepath.Join(projectsDir(), "cargo-workspace"), dir)
	os.Symlink("crates/hello/src/main.rs", filepath.Join(dir, "main-link.rs"))
	os.Chmod(filepath.Join(dir, "Cargo.toml"), 0o755)

	// What git itself computes for this content.
	ref := filepath.Join(t.TempDir(), "ref")
	copyTree(t, filepath.Join(projectsDir(), "cargo-workspace"), ref)
	os.Chmod(filepath.Join(ref, "Cargo.toml"), 0o755)
	os.Symlink("crates/hello/src/main.rs", filepath.Join(ref, "main-link.rs"))
	gitRun(t, ref, "init", "-q")
	gitRun(t, ref, "add", "-A", "--force")
	wantTree := gitRun(t, ref, "write-tree")

	const archive = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
	res, err := RunDir(t.Context(), Options{Dir: dir, Runner: noSandbox(), Env: env, ArchiveSHA256: archive, SourceURI: "upload.zip"})
	if err != nil {
		t.Fatal(err)
	}
	src := res.Statement.Predicate.BuildDefinition.ExternalParameters.Source
	if src.Digest["gitCommit"] != "" || src.Digest["gitTree"] != wantTree || src.Digest["sha256"] != archive || src.URI != "upload.zip" {
		t.Errorf("source %+v, want tree %s", src, wantTree)
	}
	if !strings.Contains(string(res.Provenance), `"gitCommit": "",`) {
		t.Error("empty gitCommit not recorded")
	}
	if res.Evidence != nil {
		t.Error("evidence without an attester")
	}
	if _, err := os.Stat(filepath.Join(dir, OutDirName, "evidence.json")); !errors.Is(err, os.ErrNotExist) {
		t.Error("evidence.json written without an attester")
	}
}

func TestUnsupported(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "README"), []byte("hi"), 0o644)
	outside := filepath.Join(t.TempDir(), "Cargo.lock")
	os.WriteFile(outside, []byte("version = 4\n"), 0o644)
	os.Symlink(outside, filepath.Join(dir, "Cargo.lock")) // leaves the project: not a marker
	_, err := RunDir(t.Context(), Options{Dir: dir, Runner: noSandbox()})
	if failure.KindOf(err) != failure.UnsupportedToolchain {
		t.Fatalf("err %v, kind %s", err, failure.KindOf(err))
	}
	msg := failure.Message(err)
	for _, m := range []string{"Cargo.lock", "flake.nix"} {
		if !strings.Contains(msg, m) {
			t.Errorf("message %q does not name %s", msg, m)
		}
	}
	if strings.Contains(msg, dir) {
		t.Errorf("message names a server path: %q", msg)
	}
}

func TestBuildFailure(t *testing.T) {
	env := toolEnv(t)
	needTool(t, env, "cargo")
	dir := filepath.Join(t.TempDir(), "broken")
	copyTree(t, filepath.Join(projectsDir(), "cargo-workspace"), dir)
	os.WriteFile(filepath.Join(dir, "crates/bye/src/main.rs"), []byte("fn main() { let x: u8 = \"no\"; }\n"), 0o644)
	rec := &recorder{}
	_, err := RunDir(t.Context(), Options{Dir: dir, Runner: noSandbox(), Env: env, Events: rec})
	if failure.KindOf(err) != failure.BuildFailed {
		t.Fatalf("err %v, kind %s", err, failure.KindOf(err))
	}
	if msg := failure.Message(err); strings.Contains(msg, dir) || !strings.Contains(msg, "cargo build failed (exit status 101)") {
		t.Errorf("message %q", msg)
	}
	if !containsPrefix(rec.msgs(events.Build), "error[E0308]") {
		t.Errorf("compiler output not streamed: %q", rec.msgs(events.Build))
	}
}

func join(ts []events.Type) string {
	var s []string
	for _, t := range ts {
		s = append(s, string(t))
	}
	return strings.Join(s, ",")
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

func containsPrefix(list []string, p string) bool {
	for _, l := range list {
		if strings.HasPrefix(l, p) {
			return true
		}
	}
	return false
}

var _ = time.Second
var _ = context.Background
