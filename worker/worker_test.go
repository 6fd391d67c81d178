package worker

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/kettle-build/kettle/attest"
	"github.com/kettle-build/kettle/bundle"
	"github.com/kettle-build/kettle/events"
	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/internal/testenv"
	"github.com/kettle-build/kettle/jobs"
	"github.com/kettle-build/kettle/pipeline"
	"github.com/kettle-build/kettle/sandbox"
	"github.com/kettle-build/kettle/source"
	"github.com/kettle-build/kettle/source/gitid"
	"github.com/kettle-build/kettle/toolchain"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func TestTopName(t *testing.T) {
	tests := []struct{ top, name, want string }{
		{"ripgrep", "whatever.zip", "ripgrep"},
		{"", "/downloads/bar.tgz", "bar"},
		{"", "C:\\x\\proj.tar.gz", "proj"},
		{"", "a.tar.gz.zip", "a.tar.gz"},
		{"", "plain", "plain"},
		{"", ".zip", DefaultTop},
		{"", "", DefaultTop},
		{"", "..", DefaultTop},
		{"", "bad\nname.zip", DefaultTop},
		{"..", "ok.zip", "ok"},
		{".git", "x.zip", "x"},
		{"", ".GIT.tar.gz", DefaultTop},
	}
	for _, tc := range tests {
		if got := TopName(tc.top, tc.name); got != tc.want {
			t.Errorf("TopName(%q, %q) = %q, want %q", tc.top, tc.name, got, tc.want)
		}
	}
}

type recorder struct {
	mu  sync.Mutex
	evs []events.Event
}

func (r *recorder) Emit(e events.Event) {
	if e.PhaseOnly() {
		return // job state, not a log line
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, e)
}

func (r *recorder) msgs(typ events.Type) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.evs {
		if e.Type == typ {
			out = append(out, e.Msg)
		}
	}
	return out
}

func newJob() *jobs.Job {
	return &jobs.Job{ID: uuid.NewString(), Nonce: "00112233445566778899aabbccddeeff"}
}

// withSource is j building src (the store sets Source.ArchivePath to its
// local copy of an uploaded archive).
func withSource(j *jobs.Job, src jobs.Source) *jobs.Job {
	j.Source = src
	return j
}

// fakePipeline writes a result directory like pipeline.Run.
func fakePipeline(t *testing.T, seen *pipeline.Options) func(ctx context.Context, o pipeline.Options) (*pipeline.Result, error) {
	return func(ctx context.Context, o pipeline.Options) (*pipeline.Result, error) {
		*seen = o
		o.Events.Emit(events.Detected("cargo", "Cargo"))
		for _, f := range []string{"artifacts/app", "provenance.json", "manifest.json", "evidence.json", "build-config/Cargo.lock"} {
			p := filepath.Join(o.OutDir, f)
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, []byte(f), 0o644); err != nil {
				return nil, err
			}
		}
		return &pipeline.Result{OutDir: o.OutDir, Toolchain: "cargo",
			Artifacts: []toolchain.Artifact{{Name: "app", SHA256: "aa", Size: int64(len("artifacts/app"))}}}, nil
	}
}

func TestBuildGitGlue(t *testing.T) {
	work := t.TempDir()
	b := New(Config{WorkDir: work, BuilderID: "https://b/id", BuildTypeBase: "https://b/t/", Runner: sandbox.NewNone()})
	var gotURL, gotRef string
	ident := &gitid.Identity{Commit: "0123456789abcdef0123456789abcdef01234567", Tree: "4b825dc642cb6eb9a060e54bf8d69288fbee4904"}
	b.clone = func(ctx context.Context, url, ref, dir string, p source.Policy) (*source.Tree, error) {
		gotURL, gotRef = url, ref
		d := filepath.Join(dir, "myrepo")
		return &source.Tree{Dir: d, Top: "myrepo", Commit: "0123456789abcdef0123456789abcdef01234567", Files: 3, Identity: ident}, os.Mkdir(d, 0o755)
	}
	var opts pipeline.Options
	b.run = fakePipeline(t, &opts)
	rec := &recorder{}
	job := newJob()
	out, err := b.Build(context.Background(), withSource(job, jobs.Source{URL: "https://user:secret@example.com/myrepo.git", Ref: "v1"}), rec)
	if err != nil {
		t.Fatal(err)
	}
	if gotURL != "https://user:secret@example.com/myrepo.git" || gotRef != "v1" {
		t.Fatalf("clone(%q, %q)", gotURL, gotRef)
	}
	if m := rec.msgs(events.Init); len(m) != 1 || m[0] != "Cloned https://example.com/myrepo.git at 0123456789abcdef0123456789abcdef01234567" {
		t.Fatalf("init events %q", m)
	}
	if opts.Source != ident {
		t.Fatalf("the pipeline did not get the identity computed at the clone: %+v", opts.Source)
	}
	if opts.SourceURI != "https://user:secret@example.com/myrepo.git" || opts.BuilderID != "https://b/id" || len(opts.Nonce) != 16 || opts.Nonce[15] != 0xff {
		t.Fatalf("pipeline options %+v", opts)
	}
	if out.ResultName != "myrepo" || out.Toolchain != "cargo" {
		t.Fatalf("outcome %+v", out)
	}
	if len(out.Artifacts) != 1 || out.Artifacts[0] != (jobs.Artifact{Name: "app", SHA256: "aa", Size: 13}) {
		t.Fatalf("outcome artifacts %+v: not the pipeline's", out.Artifacts)
	}
	checkBundle(t, out, "myrepo", []string{"artifacts/app", "build-config/Cargo.lock", "evidence.json", "manifest.json", "provenance.json"})
	// Only the result tarball is left in the work dir.
	ents, _ := os.ReadDir(work)
	if len(ents) != 1 || ents[0].Name() != filepath.Base(out.ResultPath) {
		t.Fatalf("work dir holds %v", ents)
	}
}

func checkBundle(t *testing.T, out *jobs.Outcome, top string, files []string) string {
	t.Helper()
	f, err := os.Open(out.ResultPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dest := t.TempDir()
	dir, err := bundle.Extract(f, dest, bundle.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(dir) != top {
		t.Fatalf("top %s, want %s", filepath.Base(dir), top)
	}
	for _, name := range files {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("bundle lacks %s", name)
		}
	}
	return dir
}

func TestFailureKeepsKindAndCleansUp(t *testing.T) {
	work := t.TempDir()
	b := New(Config{WorkDir: work, Runner: sandbox.NewNone()})
	b.extract = func(ctx context.Context, p, dir string, lim source.Limits) (*source.Tree, error) {
		return &source.Tree{Dir: dir, Files: 1}, nil
	}
	b.run = func(ctx context.Context, o pipeline.Options) (*pipeline.Result, error) {
		return &pipeline.Result{Toolchain: "go"}, failure.Wrap(failure.BuildFailed, errors.New("exit 1 in "+o.Dir), "go build failed (exit status 1)")
	}
	out, err := b.Build(context.Background(), withSource(newJob(), jobs.Source{ArchivePath: "/nonexistent"}), &recorder{})
	if failure.KindOf(err) != failure.BuildFailed || failure.Message(err) != "go build failed (exit status 1)" {
		t.Fatalf("err = %v (%s)", err, failure.KindOf(err))
	}
	if out == nil || out.Toolchain != "go" {
		t.Fatalf("outcome %+v", out)
	}
	if ents, _ := os.ReadDir(work); len(ents) != 0 {
		t.Fatalf("work dir not cleaned: %v", ents)
	}
}

func TestTimeout(t *testing.T) {
	b := New(Config{WorkDir: t.TempDir(), Runner: sandbox.NewNone(), BuildTimeout: 100 * time.Millisecond})
	b.extract = func(ctx context.Context, p, dir string, lim source.Limits) (*source.Tree, error) {
		return &source.Tree{Dir: dir}, nil
	}
	b.run = func(ctx context.Context, o pipeline.Options) (*pipeline.Result, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	_, err := b.Build(context.Background(), withSource(newJob(), jobs.Source{ArchivePath: "x"}), &recorder{})
	if failure.KindOf(err) != failure.Timeout || !strings.Contains(failure.Message(err), "timed out after 100ms") {
		t.Fatalf("err = %v (%s: %s)", err, failure.KindOf(err), failure.Message(err))
	}
}

func TestRefusedArchive(t *testing.T) {
	work := t.TempDir()
	bad := filepath.Join(t.TempDir(), "bad.zip")
	os.WriteFile(bad, []byte("this is not an archive"), 0o644)
	b := New(Config{WorkDir: work, Runner: sandbox.NewNone()})
	_, err := b.Build(context.Background(), withSource(newJob(), jobs.Source{ArchivePath: bad}), &recorder{})
	if failure.KindOf(err) != failure.InvalidSource {
		t.Fatalf("err = %v (%s)", err, failure.KindOf(err))
	}
	if strings.Contains(failure.Message(err), work) {
		t.Fatalf("message leaks a server path: %s", failure.Message(err))
	}
}

// TestCargoArchiveEndToEnd runs the real chain: archive → source.Extract →
// pipeline.Run (cargo, no sandbox) → insecure evidence → result tarball.
func TestCargoArchiveEndToEnd(t *testing.T) {
	home, _ := os.UserHomeDir()
	path := os.Getenv("PATH") + ":" + filepath.Join(home, ".cargo", "bin")
	t.Setenv("PATH", path)
	testenv.NeedTool(t, "cargo")
	archive := filepath.Join(t.TempDir(), "upload.tar.gz")
	tarDir(t, filepath.Join("..", "testdata", "projects", "cargo-workspace"), "cargo-workspace", archive)
	ctx := context.Background()
	att, err := attest.New(ctx, "insecure")
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	b := New(Config{WorkDir: work, Runner: sandbox.NewNone(), Attester: att, BuildTimeout: 5 * time.Minute})
	rec := &recorder{}
	job := newJob()
	out, err := b.Build(ctx, withSource(job, jobs.Source{ArchivePath: archive, ArchiveName: "upload.tar.gz"}), rec)
	if err != nil {
		t.Fatalf("build: %v (%s)", err, failure.Message(err))
	}
	if m := rec.msgs(events.Init); len(m) != 1 || !strings.HasPrefix(m[0], "Extracted ") {
		t.Fatalf("init %q", m)
	}
	dir := checkBundle(t, out, "cargo-workspace", []string{"provenance.json", "manifest.json", "evidence.json", "build-config/Cargo.lock"})
	arts, _ := os.ReadDir(filepath.Join(dir, "artifacts"))
	if len(arts) < 2 {
		t.Fatalf("artifacts %v", arts)
	}
	var env struct {
		Platform string `json:"platform"`
	}
	b2, _ := os.ReadFile(filepath.Join(dir, "evidence.json"))
	if err := json.Unmarshal(b2, &env); err != nil || env.Platform != "insecure" {
		t.Fatalf("evidence %s: %v", b2, err)
	}
	if out.Toolchain != "cargo" {
		t.Fatalf("toolchain %q", out.Toolchain)
	}
}

// tarDir packs dir as top/… into a gzip tarball at dst.
func tarDir(t *testing.T, dir, top, dst string) {
	t.Helper()
	f, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zw := gzip.NewWriter(f)
	tw := tar.NewWriter(zw)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "target" || strings.HasPrefix(rel, "target/") || rel == "kettle-build" {
			return filepath.SkipDir
		}
		name := filepath.ToSlash(filepath.Join(top, rel))
		fi, err := d.Info()
		if err != nil {
			return err
		}
		h, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		h.Name = name
		if d.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			tw.Write(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	tw.Close()
	zw.Close()
}

// TestCargoGitEndToEnd clones a local repository with the real
// source.Clone and builds it: the top directory is the repository name.
func TestCargoGitEndToEnd(t *testing.T) {
	home, _ := os.UserHomeDir()
	t.Setenv("PATH", os.Getenv("PATH")+":"+filepath.Join(home, ".cargo", "bin"))
	testenv.NeedTool(t, "cargo")
	testenv.NeedTool(t, "git")
	repo := filepath.Join(t.TempDir(), "myproj")
	archive := filepath.Join(t.TempDir(), "p.tar.gz")
	tarDir(t, filepath.Join("..", "testdata", "projects", "cargo-workspace"), "myproj", archive)
	if err := exec.Command("tar", "-xzf", archive, "-C", filepath.Dir(repo)).Run(); err != nil {
		t.Fatal(err)
	}
	git := func(args ...string) string {
		cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"}, args...)...)
		cmd.Dir = repo
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git("init", "-q", "-b", "main")
	git("add", ".")
	git("commit", "-q", "-m", "init")
	commit := git("rev-parse", "HEAD")

	b := New(Config{WorkDir: t.TempDir(), Runner: sandbox.NewNone(), SourcePolicy: source.Policy{AllowLocal: true, AllowPrivateNetworks: true}})
	rec := &recorder{}
	out, err := b.Build(context.Background(), withSource(newJob(), jobs.Source{URL: "file://" + repo, Ref: "main"}), rec)
	if err != nil {
		t.Fatalf("build: %v (%s)", err, failure.Message(err))
	}
	if m := rec.msgs(events.Init); len(m) != 1 || m[0] != "Cloned file://"+repo+" at "+commit {
		t.Fatalf("init %q, commit %s", m, commit)
	}
	dir := checkBundle(t, out, "myproj", []string{"provenance.json", "manifest.json", "build-config/Cargo.lock"})
	prov, _ := os.ReadFile(filepath.Join(dir, "provenance.json"))
	if !strings.Contains(string(prov), commit) {
		t.Fatal("provenance does not record the commit")
	}
}

func FuzzTopName(f *testing.F) {
	for _, s := range []string{"proj.tar.gz", "/a/b.zip", "..", "a\x00b", "x/.."} {
		f.Add("", s)
	}
	f.Fuzz(func(t *testing.T, top, name string) {
		got := TopName(top, name)
		if !ok(got) || strings.ContainsAny(got, "/\\\x00") || got == "." || got == ".." {
			t.Fatalf("TopName(%q, %q) = %q", top, name, got)
		}
	})
}

type stubBuilder struct {
	out *jobs.Outcome
	err error
}

func (s stubBuilder) Build(context.Context, *jobs.Job, events.Sink) (*jobs.Outcome, error) {
	return s.out, s.err
}

func TestObserveMetrics(t *testing.T) {
	m := NewMetrics()
	reg := prometheus.NewRegistry()
	if err := m.Register(reg); err != nil {
		t.Fatal(err)
	}
	for _, b := range []jobs.Builder{
		stubBuilder{out: &jobs.Outcome{Toolchain: "cargo", ResultPath: "x"}},
		stubBuilder{out: &jobs.Outcome{Toolchain: "nix"}, err: failure.New(failure.BuildFailed, "nix build failed")},
		stubBuilder{err: failure.New(failure.InvalidSource, "bad archive")},
	} {
		Observe(b, m).Build(context.Background(), &jobs.Job{}, events.Discard)
	}
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	out := rec.Body.String()
	for _, want := range []string{
		`kettle_worker_builds_total{error_type="",status="succeeded",toolchain="cargo"} 1`,
		`kettle_worker_builds_total{error_type="BuildFailed",status="failed",toolchain="nix"} 1`,
		`kettle_worker_builds_total{error_type="InvalidSource",status="failed",toolchain="unknown"} 1`,
		`kettle_worker_build_duration_seconds_count{status="succeeded",toolchain="cargo"} 1`,
		`kettle_worker_builds_running 0`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %q:\n%s", want, out)
		}
	}
}
