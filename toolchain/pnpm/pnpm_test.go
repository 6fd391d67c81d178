package pnpm

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/internal/testenv"
	"github.com/kettle-build/kettle/provenance"
	"github.com/kettle-build/kettle/sandbox"
	"github.com/kettle-build/kettle/toolchain"
)

func TestMerkleLeavesOrder(t *testing.T) {
	node := provenance.Tool{Name: "node", Version: "v20.20.2", SHA256: "nn"}
	pnpm := provenance.Tool{Name: "pnpm", Version: "9.15.9", SHA256: "pp"}
	deps := []provenance.Dependency{{URI: "pkg:npm/a@1"}, {URI: "pkg:npm/b@2"}}
	got := MerkleLeaves("c", "t", node, pnpm, "lock", deps)
	want := []string{"c", "t", "nn", "v20.20.2", "pp", "9.15.9", "lock", "pkg:npm/a@1", "pkg:npm/b@2"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("leaves %q", got)
	}
}

// execRunner is a test double for sandbox.Runner that runs commands
// directly (as sandbox.None does); the sandbox has its own tests.
type execRunner struct {
	mu   sync.Mutex
	cmds []sandbox.Cmd
}

func (r *execRunner) Name() string { return "test" }

func (r *execRunner) Run(ctx context.Context, c *sandbox.Cmd) error {
	r.mu.Lock()
	r.cmds = append(r.cmds, *c)
	r.mu.Unlock()
	cmd := exec.CommandContext(ctx, c.Args[0], c.Args[1:]...)
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = c.Dir, c.Env, c.Output, c.Output
	return cmd.Run()
}

func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if fi.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, fi.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// needRegistry skips unless pnpm is installed and the npm registry answers:
// these tests download real packages.
func needRegistry(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"pnpm", "node"} {
		testenv.NeedTool(t, tool)
	}
	testenv.NeedReachable(t, "https://registry.npmjs.org/ms")
}

type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) add(s string) { l.mu.Lock(); l.lines = append(l.lines, s); l.mu.Unlock() }
func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

func workspace(t *testing.T, lockfile string) (*toolchain.Workspace, *logLines) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pnpm-hello")
	copyTree(t, filepath.Join("..", "..", "testdata", "projects", "pnpm-hello"), dir)
	if lockfile != "" {
		if err := os.WriteFile(filepath.Join(dir, LockfileName), []byte(lockfile), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	l := &logLines{}
	return &toolchain.Workspace{
		Dir:      dir,
		CacheDir: t.TempDir(),
		Runner:   &execRunner{},
		Env:      []string{"PATH=" + os.Getenv("PATH"), "HOME=/nonexistent", "LANG=C.UTF-8"},
		Log:      l.add,
	}, l
}

// TestBuildPnpmProject fetches ms and @types/ms from the npm registry and
// builds testdata/projects/pnpm-hello; dist/ becomes dist.tar.gz.
func TestBuildPnpmProject(t *testing.T) {
	needRegistry(t)
	ctx := context.Background()
	w, log := workspace(t, "")
	d := New()
	in, err := toolchain.Plan(ctx, d, w)
	if err != nil {
		t.Fatal(err)
	}
	if len(in.Toolchain) != 2 || in.Toolchain[0].Name != "pnpm" || in.Toolchain[1].Name != "node" ||
		!strings.HasPrefix(in.Toolchain[1].Version, "v") || len(in.Toolchain[0].SHA256) != 64 {
		t.Fatalf("toolchain %+v", in.Toolchain)
	}
	wantDeps := []string{
		"pkg:npm/@types/ms@2.1.0?checksum=sha512-GsCCIZDE/p3i96vtEqx+7dBUGXrc7zeSK3wwPHIaRThS+9OhWIXRqzs4d6k1SVU8g91DrNRWxWUGhp5KXQb2VA==",
		"pkg:npm/ms@2.1.3?checksum=sha512-6FlzubTLZG3J2a/NVCAleEhjzq5oxgHyaCU9yYXvcLsvoVaHJq/s5xXI6/XXP6tz7R9xAOtHnSO/tXtF3WRTlA==",
	}
	if len(in.Dependencies) != 2 || in.Dependencies[0].URI != wantDeps[0] || in.Dependencies[1].URI != wantDeps[1] {
		t.Fatalf("deps %+v", in.Dependencies)
	}
	if l := in.MerkleLeaves("c", "t"); len(l) != 9 || l[3] != in.Toolchain[1].Version || l[5] != in.Toolchain[0].Version {
		t.Fatalf("leaves %q", l)
	}
	if err := d.Fetch(ctx, w); err != nil {
		t.Fatalf("fetch: %v\n%s", err, log)
	}
	// The fetch leaves the project alone: node_modules (and the
	// dependencies' install scripts) come with the offline install.
	if _, err := os.Lstat(filepath.Join(w.Dir, "node_modules")); !os.IsNotExist(err) {
		t.Errorf("fetch created node_modules in the project: %v", err)
	}
	if err := d.Build(ctx, w); err != nil {
		t.Fatalf("build: %v\n%s", err, log)
	}
	if !strings.Contains(log.String(), "built dist/ (one day is 86400000 ms)") {
		t.Errorf("build script output missing from the log:\n%s", log)
	}
	for _, c := range w.Runner.(*execRunner).cmds {
		fetch := c.Args[1] == "fetch"
		if c.Network != fetch {
			t.Errorf("%v: network %v", c.Args[1:], c.Network)
		}
		if fetch && (c.Dir == w.Dir || !contains(c.Args, "--ignore-scripts") || !contains(c.Args, "--ignore-pnpmfile")) {
			t.Errorf("fetch runs project or dependency code: %v in %s", c.Args, c.Dir)
		}
		if !fetch && !contains(c.ReadOnly, filepath.Join(w.CacheDir, "pnpm-store")) {
			t.Errorf("%v: store not read-only: %v", c.Args[1:], c.ReadOnly)
		}
	}
	dst := t.TempDir()
	arts, err := d.Artifacts(ctx, w, dst)
	if err != nil {
		t.Fatal(err)
	}
	if len(arts) != 1 || arts[0].Name != ArtifactName {
		t.Fatalf("artifacts %+v", arts)
	}
	if sum, _ := toolchain.SHA256File(filepath.Join(dst, ArtifactName)); sum != arts[0].SHA256 {
		t.Fatalf("digest %s, file %s", arts[0].SHA256, sum)
	}
	if got := tarNames(t, filepath.Join(dst, ArtifactName)); !reflect.DeepEqual(got, []string{
		"dist/", "dist/bin/", "dist/bin/hello", "dist/index.js", "dist/lib/", "dist/lib/greet.js"}) {
		t.Fatalf("tarball %q", got)
	}
	if _, err := os.Lstat(filepath.Join(w.Dir, ScratchDir)); !os.IsNotExist(err) {
		t.Errorf("scratch directory left behind: %v", err)
	}

	// Rebuilding gives the same dist.tar.gz (the build script's output
	// is the same; file times differ).
	time.Sleep(10 * time.Millisecond)
	if err := d.Build(ctx, w); err != nil {
		t.Fatal(err)
	}
	again, err := d.Artifacts(ctx, w, t.TempDir())
	if err != nil || again[0].SHA256 != arts[0].SHA256 {
		t.Fatalf("rebuild: %+v, %v; first %s", again, err, arts[0].SHA256)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func tarNames(t *testing.T, p string) []string {
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
}

// TestFetchTamperedIntegrity: a lockfile entry whose integrity does not
// match the registry's tarball fails the fetch with DependencyFetchFailed.
func TestFetchTamperedIntegrity(t *testing.T) {
	needRegistry(t)
	data, err := os.ReadFile(filepath.Join("..", "..", "testdata", "projects", "pnpm-hello", LockfileName))
	if err != nil {
		t.Fatal(err)
	}
	// Another valid sha512 (the one of @types/ms) for ms: well-formed, wrong.
	tampered := strings.Replace(string(data),
		"sha512-6FlzubTLZG3J2a/NVCAleEhjzq5oxgHyaCU9yYXvcLsvoVaHJq/s5xXI6/XXP6tz7R9xAOtHnSO/tXtF3WRTlA==",
		"sha512-GsCCIZDE/p3i96vtEqx+7dBUGXrc7zeSK3wwPHIaRThS+9OhWIXRqzs4d6k1SVU8g91DrNRWxWUGhp5KXQb2VA==", 1)
	if tampered == string(data) {
		t.Fatal("lockfile did not change")
	}
	w, log := workspace(t, tampered)
	w.Env = append(w.Env, "npm_config_fetch_retries=0") // an integrity failure is not retried into success
	d := New()
	if _, err := toolchain.Plan(context.Background(), d, w); err != nil {
		t.Fatal(err)
	}
	err = d.Fetch(context.Background(), w)
	if failure.KindOf(err) != failure.DependencyFetchFailed {
		t.Fatalf("fetch: %v (%s), want DependencyFetchFailed\n%s", err, failure.KindOf(err), log)
	}
	msg := failure.Message(err)
	t.Logf("message: %s", msg)
	if !strings.Contains(msg, "pnpm fetch --frozen-lockfile failed") || !strings.Contains(msg, "ERR_PNPM_") ||
		strings.Contains(msg, w.Dir) || strings.Contains(msg, w.CacheDir) {
		t.Fatalf("message %q", msg)
	}
}

// TestNoDist: a build that writes no dist/ has no artifacts.
func TestNoDist(t *testing.T) {
	dir := t.TempDir()
	w := &toolchain.Workspace{Dir: dir}
	_, err := New().Artifacts(context.Background(), w, t.TempDir())
	if failure.KindOf(err) != failure.NoArtifacts || !strings.Contains(failure.Message(err), "dist/ directory not found") {
		t.Fatalf("err %v", err)
	}
	// dist/ a symlink (here out of the project) is refused, never followed.
	os.Symlink(t.TempDir(), filepath.Join(dir, DistDir))
	if _, err := New().Artifacts(context.Background(), w, t.TempDir()); failure.KindOf(err) != failure.BuildFailed || !strings.Contains(failure.Message(err), "symlink") {
		t.Fatalf("dist symlink: %v", err)
	}
}

func TestInputsBadLockfile(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, LockfileName), []byte("lockfileVersion: '9.0'\npackages:\n  a@1.0.0: {}\n"), 0o644)
	w := &toolchain.Workspace{Dir: dir, Env: []string{"PATH=" + os.Getenv("PATH")}}
	_, err := toolchain.Plan(context.Background(), New(), w)
	if failure.KindOf(err) != failure.InvalidSource || !strings.Contains(failure.Message(err), `package "a@1.0.0" missing resolution`) {
		t.Fatalf("err %v", err)
	}
	w.Env = []string{"PATH=/nonexistent"}
	os.WriteFile(filepath.Join(dir, LockfileName), []byte("lockfileVersion: '9.0'\n"), 0o644)
	if _, err := toolchain.Plan(context.Background(), New(), w); failure.KindOf(err) != failure.UnsupportedToolchain {
		t.Fatalf("no pnpm: %v", err)
	}
}
