package nix_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/kettle-build/kettle/events"
	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/internal/testenv"
	"github.com/kettle-build/kettle/pipeline"
	"github.com/kettle-build/kettle/sandbox"
	"github.com/kettle-build/kettle/toolchain"
)

// fodHash is the outputHash flake.nix declares for its fixed-output
// derivation (the sha256 of what its builder writes).
const (
	fodHash = "eb901a7e8531dff5e91fc15476af39d871601d72bccd4d6036b253950d2b168d"
	fodB64  = "65AafoUx3/XpH8FUdq852HFgHXK8zU1gNrJTlQ0rFo0="
)

// TestNixFetchHashMismatch: testdata/projects/nix-flake with its
// fixed-output derivation's declared outputHash changed (the builder still
// writes the same bytes) fails the fetch phase with DependencyFetchFailed,
// Nix reporting the hash mismatch, before the package is built. A hash that
// does not match is never realised, so no store path of an earlier run can
// satisfy it.
func TestNixFetchHashMismatch(t *testing.T) {
	env := pipeline.DefaultEnv()
	_, err := toolchain.LookPath(env, "nix")
	testenv.Need(t, err == nil, "nix is not installed")
	runner, err := sandbox.New("bwrap")
	testenv.Need(t, err == nil, "bubblewrap cannot run here")
	base := t.TempDir()
	dir := filepath.Join(base, "nix-flake")
	if err := exec.Command("cp", "-a", filepath.Join("..", "..", "testdata", "projects", "nix-flake"), dir).Run(); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(dir, pipeline.OutDirName))
	flake := filepath.Join(dir, "flake.nix")
	b, err := os.ReadFile(flake)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), fodHash) {
		t.Fatalf("flake.nix does not declare outputHash %s", fodHash)
	}
	wrong := "0" + fodHash[1:] // flip the first digit: well-formed, wrong
	if err := os.WriteFile(flake, []byte(strings.Replace(string(b), fodHash, wrong, 1)), 0o644); err != nil {
		t.Fatal(err)
	}

	rec := &recorder{}
	res, err := pipeline.RunDir(t.Context(), pipeline.Options{Dir: dir, Runner: runner, Env: env, Events: rec,
		CacheDir: filepath.Join(base, "cache"), SourceURI: "https://example.com/nix-flake.git"})
	msg := failure.Message(err)
	if err == nil || failure.KindOf(err) != failure.DependencyFetchFailed {
		t.Fatalf("err %v (%s: %q), want %s\nlog:\n%s", err, failure.KindOf(err), msg, failure.DependencyFetchFailed, rec.log())
	}
	if !strings.Contains(msg, "nix fetch of fixed-output derivations") {
		t.Errorf("message %q does not name the fetch", msg)
	}
	if log := rec.log(); !strings.Contains(log, "hash mismatch in fixed-output derivation") {
		t.Errorf("nix's output does not report the hash mismatch:\n%s", log)
	}
	// Nix's "got:" hash is withheld from the log (a hash Nix computed over
	// what it read is never passed on).
	if log := rec.log(); strings.Contains(log, "sha256-"+fodB64) || strings.Contains(log, fodHash) {
		t.Errorf("the log carries the computed hash:\n%s", log)
	}
	if strings.Contains(msg, base) || strings.Contains(msg, os.TempDir()) {
		t.Errorf("message leaks a path: %q", msg)
	}
	if res != nil && len(res.Artifacts) != 0 {
		t.Errorf("artifacts after a failed fetch: %+v", res.Artifacts)
	}
	// No provenance is written for a build whose fetch failed.
	if res != nil && res.Statement != nil {
		t.Errorf("a provenance statement after a failed fetch")
	}
}

// recorder is an events.Sink keeping every message.
type recorder struct {
	mu sync.Mutex
	ev []events.Event
}

func (r *recorder) Emit(e events.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ev = append(r.ev, e)
}

func (r *recorder) log() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, e := range r.ev {
		b.WriteString(e.Msg + "\n")
	}
	return b.String()
}
