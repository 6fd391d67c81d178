package pipeline

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kettle-build/kettle/source/gitid"

	"github.com/kettle-build/kettle/attest"
	"github.com/kettle-build/kettle/events"
	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/provenance"
	"github.com/kettle-build/kettle/sandbox"
	"github.com/kettle-build/kettle/toolchain"
)

// shDriver is a test double toolchain whose phases are shell scripts, to
// exercise the pipeline's error paths without a real toolchain.
type shDriver struct {
	fetch, build string // scripts; build writes out/<name> files
	// planned, when set, sees the Lock Inputs was given.
	planned func(w *toolchain.Workspace, lock *toolchain.Lock)
}

func (d *shDriver) Name() string         { return "sh" }
func (d *shDriver) Title() string        { return "Sh" }
func (d *shDriver) Lockfile() string     { return "sh.lock" }
func (d *shDriver) BuildCommand() string { return "sh build.sh" }

func (d *shDriver) Inputs(ctx context.Context, w *toolchain.Workspace, lock *toolchain.Lock) (*toolchain.Inputs, error) {
	if d.planned != nil {
		d.planned(w, lock)
	}
	h := lock.SHA256
	return &toolchain.Inputs{
		Lock:         lock,
		Toolchain:    provenance.Toolchain{{Name: "sh", Version: "sh 1", SHA256: strings.Repeat("0", 64)}},
		MerkleLeaves: func(c, t string) []string { return []string{c, t, h} },
	}, nil
}

func (d *shDriver) run(ctx context.Context, w *toolchain.Workspace, script string, network bool) error {
	return toolchain.Run(ctx, w, &sandbox.Cmd{Args: []string{"/bin/sh", "-c", script}, Env: w.Env, Network: network})
}

func (d *shDriver) Fetch(ctx context.Context, w *toolchain.Workspace) error {
	if err := d.run(ctx, w, d.fetch, true); err != nil {
		return toolchain.CommandFailed(ctx, failure.DependencyFetchFailed, "fetch", err)
	}
	return nil
}

func (d *shDriver) Build(ctx context.Context, w *toolchain.Workspace) error {
	if err := d.run(ctx, w, d.build, false); err != nil {
		return toolchain.CommandFailed(ctx, failure.BuildFailed, "sh build", err)
	}
	return nil
}

func (d *shDriver) Artifacts(ctx context.Context, w *toolchain.Workspace, dst string) ([]toolchain.Artifact, error) {
	ents, _ := os.ReadDir(filepath.Join(w.Dir, "out"))
	var out []toolchain.Artifact
	for _, e := range ents {
		a, err := toolchain.CopyArtifact(filepath.Join(w.Dir, "out", e.Name()), dst)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

func withShDriver(t testing.TB, d *shDriver) string {
	old := Detectors
	Detectors = []Detector{{"sh.lock", func() toolchain.Driver { return d }}}
	t.Cleanup(func() { Detectors = old })
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "sh.lock"), []byte("lock"), 0o644)
	return dir
}

type failingAttester struct{}

func (failingAttester) Platform() string { return "snp" }
func (failingAttester) Attest(context.Context, [attest.ReportDataSize]byte) ([]byte, error) {
	return nil, errors.New("/dev/sev-guest: ioctl failed")
}

func TestPipelineFailures(t *testing.T) {
	const ok = "mkdir -p out && echo bin > out/b && echo ok"
	tests := []struct {
		name     string
		d        shDriver
		timeout  time.Duration
		attester attest.Attester
		kind     failure.Kind
		msg      string
	}{
		{name: "fetch fails", d: shDriver{fetch: "echo no network >&2; exit 3", build: ok}, kind: failure.DependencyFetchFailed, msg: "fetch failed (exit status 3)"},
		{name: "build fails", d: shDriver{fetch: "true", build: "exit 101"}, kind: failure.BuildFailed, msg: "sh build failed (exit status 101)"},
		{name: "no artifacts", d: shDriver{fetch: "true", build: "true"}, kind: failure.NoArtifacts, msg: "the build produced no artifacts"},
		{name: "timeout", d: shDriver{fetch: "true", build: "sleep 5"}, timeout: 300 * time.Millisecond, kind: failure.Timeout, msg: "timed out"},
		{name: "attestation fails", d: shDriver{fetch: "true", build: ok}, attester: failingAttester{}, kind: failure.AttestationFailed, msg: "attestation failed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := withShDriver(t, &tc.d)
			ctx := t.Context()
			if tc.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.timeout)
				defer cancel()
			}
			start := time.Now()
			res, err := RunDir(ctx, Options{Dir: dir, Runner: noSandbox(), Attester: tc.attester})
			if res == nil || res.Toolchain != "sh" || res.Lockfile != "sh.lock" {
				t.Errorf("partial result %+v", res)
			}
			if failure.KindOf(err) != tc.kind || !strings.Contains(failure.Message(err), tc.msg) {
				t.Fatalf("err %v (kind %s), want %s %q", err, failure.KindOf(err), tc.kind, tc.msg)
			}
			if strings.Contains(failure.Message(err), dir) || strings.Contains(failure.Message(err), "/dev/") {
				t.Errorf("message leaks a path: %q", failure.Message(err))
			}
			if time.Since(start) > 4*time.Second {
				t.Errorf("took %v", time.Since(start))
			}
		})
	}
}

func TestCanceled(t *testing.T) {
	dir := withShDriver(t, &shDriver{fetch: "true", build: "sleep 5"})
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(200*time.Millisecond, cancel)
	_, err := RunDir(ctx, Options{Dir: dir, Runner: noSandbox()})
	if failure.KindOf(err) != failure.Canceled {
		t.Fatalf("err %v kind %s", err, failure.KindOf(err))
	}
}

// TestLogCap: the pipeline caps nothing itself; under the one log cap
// (events.Budget, here through events.Capped as `kettle build` uses it)
// the lines past the cap are summarised in one event and the build goes on.
func TestLogCap(t *testing.T) {
	dir := withShDriver(t, &shDriver{
		fetch: "echo fetched",
		build: "i=0; while [ $i -lt 20 ]; do echo line $i; i=$((i+1)); done; printf 'no newline'; mkdir -p out; echo x > out/a",
	})
	rec := &recorder{}
	capped := &events.Capped{Next: rec, Budget: events.Budget{MaxLines: 10}}
	if _, err := RunDir(t.Context(), Options{Dir: dir, Runner: noSandbox(), Events: capped}); err != nil {
		t.Fatal(err)
	}
	capped.Close()
	b := rec.msgs(events.Build)
	want := []string{"Fetching dependencies pinned by sh.lock", "fetched", "Running `sh build.sh`"}
	for i := 0; i < 7; i++ {
		want = append(want, fmt.Sprintf("line %d", i))
	}
	// line 7 … line 19, "no newline", "Build command finished".
	want = append(want, "[kettle] 15 more output lines omitted (120 bytes; log limit 10 lines reached)")
	if strings.Join(b, "\n") != strings.Join(want, "\n") {
		t.Fatalf("build events:\n%s\nwant\n%s", strings.Join(b, "\n"), strings.Join(want, "\n"))
	}
	all := &recorder{}
	if _, err := RunDir(t.Context(), Options{Dir: dir, Runner: noSandbox(), Events: all}); err != nil {
		t.Fatal(err)
	}
	if b := all.msgs(events.Build); len(b) != 3+20+2 || b[len(b)-2] != "no newline" {
		t.Fatalf("uncapped build events:\n%s", strings.Join(b, "\n"))
	}
}

func TestOutDirRecreatedAndOptions(t *testing.T) {
	dir := withShDriver(t, &shDriver{fetch: "true", build: "mkdir -p out && echo 1 > out/z && echo 2 > out/a"})
	out := filepath.Join(t.TempDir(), "result")
	os.MkdirAll(filepath.Join(out, "artifacts"), 0o755)
	os.WriteFile(filepath.Join(out, "artifacts", "stale"), []byte("old"), 0o444)
	res, err := RunDir(t.Context(), Options{Dir: dir, OutDir: out, Runner: noSandbox(), BuilderID: "https://b.example/id",
		BuildTypeBase: "https://b.example/types/", SourceURI: "https://git.example/r.git", Nonce: make([]byte, 16)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(out, "artifacts", "stale")); !errors.Is(err, os.ErrNotExist) {
		t.Error("stale artifact survived")
	}
	st := res.Statement
	if st.Predicate.BuildDefinition.BuildType != "https://b.example/types/sh@v1" || st.Predicate.RunDetails.Builder.ID != "https://b.example/id" ||
		st.Predicate.BuildDefinition.ExternalParameters.Source.URI != "https://git.example/r.git" {
		t.Errorf("options not applied: %+v", st.Predicate)
	}
	if st.Subject[0].Name != "a" || st.Subject[1].Name != "z" {
		t.Errorf("subjects not sorted: %+v", st.Subject)
	}
	if _, err := os.Stat(filepath.Join(out, "build-config", "sh.lock")); err != nil {
		t.Error(err)
	}
	if _, err := RunDir(t.Context(), Options{Dir: dir, Runner: noSandbox(), Nonce: make([]byte, 17)}); failure.KindOf(err) != failure.InvalidSource {
		t.Errorf("17-byte nonce: %v", err)
	}
	for _, bad := range []string{dir, filepath.Dir(dir)} {
		if _, err := RunDir(t.Context(), Options{Dir: dir, OutDir: bad, Runner: noSandbox()}); err == nil {
			t.Errorf("OutDir %s holding the project accepted", bad)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "sh.lock")); err != nil {
		t.Fatal("project deleted")
	}
}

// TestDirtyWorkingTree: a clean checkout records its commit; the output
// directory is not content; anything else the commit lacks — a modified
// file, or the outputs an earlier build left in the tree, even if
// .gitignore names them (they are inputs of this build) — makes it dirty:
// a warning, no gitCommit, and gitTree the tree of what was built. No git
// runs: a fake git on PATH that would leave a marker stays unused.
func TestDirtyWorkingTree(t *testing.T) {
	d := &shDriver{fetch: "true", build: "mkdir -p out && echo 1 > out/a"}
	dir := withShDriver(t, d)
	os.WriteFile(filepath.Join(dir, ".gitignore"), []byte("/out/\n"), 0o644)
	gitRun(t, dir, "init", "-q")
	gitRun(t, dir, "add", "-A")
	gitRun(t, dir, "commit", "-q", "-m", "x")
	commit, tree := gitRun(t, dir, "rev-parse", "HEAD"), gitRun(t, dir, "rev-parse", "HEAD^{tree}")
	bin := t.TempDir()
	marker := filepath.Join(t.TempDir(), "git-ran")
	os.WriteFile(filepath.Join(bin, "git"), []byte("#!/bin/sh\ntouch "+marker+"\nexit 1\n"), 0o755)
	env := []string{"PATH=" + bin + ":/usr/bin:/bin"}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	build := func() (*Result, []string) {
		t.Helper()
		rec := &recorder{}
		res, err := RunDir(t.Context(), Options{Dir: dir, Runner: noSandbox(), Events: rec, Env: env})
		if err != nil {
			t.Fatal(err)
		}
		return res, rec.msgs(events.Init)
	}
	res, w := build()
	src := res.Statement.Predicate.BuildDefinition.ExternalParameters.Source
	if len(w) != 0 || src.Digest["gitCommit"] != commit || src.Digest["gitTree"] != tree {
		t.Fatalf("clean checkout: warnings %q, source %+v, want %s %s", w, src, commit, tree)
	}
	res, w = build() // out/a is now in the tree
	src = res.Statement.Predicate.BuildDefinition.ExternalParameters.Source
	if len(w) != 1 || !strings.Contains(w[0], "uncommitted changes") || !strings.Contains(w[0], commit) ||
		src.Digest["gitCommit"] != "" || src.Digest["gitTree"] == tree || len(src.Digest["gitTree"]) != 40 {
		t.Fatalf("left-over outputs: warnings %q, source %+v", w, src)
	}
	os.RemoveAll(filepath.Join(dir, "out"))
	os.WriteFile(filepath.Join(dir, "sh.lock"), []byte("changed"), 0o644)
	if _, w = build(); len(w) != 1 || !strings.Contains(w[0], "uncommitted changes") {
		t.Fatalf("no warning for a modified checkout: %q", w)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the pipeline ran git")
	}
}

// TestGivenIdentity: an identity computed where the source was
// materialised is recorded as is (the tree is not re-read), SourceURI
// overriding its URI.
func TestGivenIdentity(t *testing.T) {
	dir := withShDriver(t, &shDriver{fetch: "true", build: "mkdir -p out && echo 1 > out/a"})
	id := &gitid.Identity{URI: "https://git.example/a.git", Commit: strings.Repeat("c", 40), Tree: strings.Repeat("e", 40)}
	for _, uri := range []string{"", "https://override.example/b.git"} {
		res, err := Run(t.Context(), Options{Dir: dir, Runner: noSandbox(), Source: id, SourceURI: uri})
		if err != nil {
			t.Fatal(err)
		}
		src := res.Statement.Predicate.BuildDefinition.ExternalParameters.Source
		want := id.URI
		if uri != "" {
			want = uri
		}
		if src.Digest["gitCommit"] != id.Commit || src.Digest["gitTree"] != id.Tree || src.URI != want {
			t.Errorf("source %+v", src)
		}
	}
	if id.URI != "https://git.example/a.git" {
		t.Error("the caller's identity was modified")
	}
}

// TestLockReadOnce: the lockfile is read once, before Inputs; what the
// driver planned from is what the result records (lockfileHash,
// build-config/) even when the file on disk changes afterwards, as a
// build step or a racing writer could make it.
func TestLockReadOnce(t *testing.T) {
	var got *toolchain.Lock
	d := &shDriver{fetch: "echo swapped > sh.lock", build: "mkdir -p out && echo 1 > out/a",
		planned: func(w *toolchain.Workspace, lock *toolchain.Lock) {
			got = lock
			os.WriteFile(filepath.Join(w.Dir, "sh.lock"), []byte("changed after the read"), 0o644)
		}}
	dir := withShDriver(t, d)
	res, err := RunDir(t.Context(), Options{Dir: dir, Runner: noSandbox()})
	if err != nil {
		t.Fatal(err)
	}
	if got == nil || string(got.Data) != "lock" || got.SHA256 != sha256hex([]byte("lock")) || got.Name != "sh.lock" {
		t.Fatalf("Inputs was given %+v", got)
	}
	if h := res.Statement.Predicate.BuildDefinition.InternalParameters.LockfileHash["sha256"]; h != sha256hex([]byte("lock")) {
		t.Errorf("lockfileHash %s is not the planned lock's", h)
	}
	if b, err := os.ReadFile(filepath.Join(res.OutDir, "build-config", "sh.lock")); err != nil || string(b) != "lock" {
		t.Errorf("build-config/sh.lock = %q, %v: not the planned bytes", b, err)
	}
}

// TestRunNeedsIdentity: Run never computes the identity a second time:
// without Options.Source it refuses (RunDir is the local-directory entry).
func TestRunNeedsIdentity(t *testing.T) {
	dir := withShDriver(t, &shDriver{fetch: "true", build: "mkdir -p out && echo 1 > out/a"})
	if _, err := Run(t.Context(), Options{Dir: dir, Runner: noSandbox()}); failure.KindOf(err) != failure.InternalError {
		t.Fatalf("Run without a source identity: %v", err)
	}
}

// TestSourceIdentityPaths: `kettle build` may name the project through a
// symlink, and its output directory inside the project is not content.
func TestSourceIdentityPaths(t *testing.T) {
	dir := withShDriver(t, &shDriver{fetch: "true", build: "true"})
	gitRun(t, dir, "init", "-q")
	gitRun(t, dir, "add", "-A")
	gitRun(t, dir, "commit", "-q", "-m", "x")
	gitRun(t, dir, "remote", "add", "origin", "https://example.com/p.git")
	commit := gitRun(t, dir, "rev-parse", "HEAD")
	link := filepath.Join(t.TempDir(), "link")
	os.Symlink(dir, link)
	check := func(out string) {
		t.Helper()
		id, err := SourceIdentity(t.Context(), link, out, true)
		if err != nil || id.Dirty || id.Commit != commit || id.URI != "https://example.com/p.git" {
			t.Errorf("out %q: %+v %v", out, id, err)
		}
	}
	os.MkdirAll(filepath.Join(dir, OutDirName, "artifacts"), 0o755)
	os.WriteFile(filepath.Join(dir, OutDirName, "provenance.json"), []byte("{}"), 0o644)
	check("")
	os.RemoveAll(filepath.Join(dir, OutDirName))
	os.MkdirAll(filepath.Join(dir, "out2"), 0o755)
	os.WriteFile(filepath.Join(dir, "out2", "x"), []byte("{}"), 0o644)
	check(filepath.Join(link, "out2"))
}
