package gomod

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/internal/testenv"
	"github.com/kettle-build/kettle/provenance"
	"github.com/kettle-build/kettle/sandbox"
	"github.com/kettle-build/kettle/toolchain"
)

func TestDefaultExecName(t *testing.T) {
	for in, want := range map[string]string{
		"example.com/hello":           "hello",
		"example.com/hello/cmd/tool":  "tool",
		"example.com/tool/v2":         "tool",
		"example.com/tool/v1":         "v1",
		"example.com/tool/v0":         "v0",
		"example.com/tool/v2x":        "v2x",
		"v2":                          "v2",
		"github.com/junegunn/fzf":     "fzf",
		"example.com/x/cmd/thing/v10": "thing",
	} {
		if got := DefaultExecName(in); got != want {
			t.Errorf("DefaultExecName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestArtifactNames(t *testing.T) {
	for _, tc := range []struct {
		name   string
		module string
		mains  []string
		want   map[string]string
		err    string
	}{
		{"unique", "example.com/m", []string{"example.com/m", "example.com/m/cmd/a"},
			map[string]string{"m": "example.com/m", "a": "example.com/m/cmd/a"}, ""},
		{"root keeps its name", "example.com/hello", []string{"example.com/hello", "example.com/hello/cmd/hello"},
			map[string]string{"hello": "example.com/hello", "cmd-hello": "example.com/hello/cmd/hello"}, ""},
		{"two dirs", "example.com/m", []string{"example.com/m/cmd/x", "example.com/m/tools/x"},
			map[string]string{"cmd-x": "example.com/m/cmd/x", "tools-x": "example.com/m/tools/x"}, ""},
		{"major version", "example.com/tool/v2", []string{"example.com/tool/v2", "example.com/tool/v2/cmd/tool"},
			map[string]string{"tool": "example.com/tool/v2", "cmd-tool": "example.com/tool/v2/cmd/tool"}, ""},
		{"still clashing", "example.com/m", []string{"example.com/m/a/x", "example.com/m/a-x", "example.com/m/b/x"},
			nil, "would both be named a-x"},
		{"none", "example.com/m", nil, map[string]string{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ArtifactNames(tc.module, tc.mains)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestGoVersion(t *testing.T) {
	if v := goVersion("go version go1.26.8 linux/amd64"); v != "go1.26.8" {
		t.Errorf("goVersion = %q", v)
	}
	if v := goVersion("go version devel"); v != "" {
		t.Errorf("goVersion = %q", v)
	}
}

func TestScrubPaths(t *testing.T) {
	w := &toolchain.Workspace{Dir: "/srv/jobs/1/src", CacheDir: "/srv/jobs/1/cache"}
	in := `go: reading /srv/jobs/1/cache/gomod/x: denied; open "/etc/passwd" failed; see https://proxy.golang.org/a/b and /srv/jobs/1/src/go.mod:3`
	got := scrubPaths(in, w)
	if strings.Contains(got, "/srv") || strings.Contains(got, "/etc") {
		t.Fatalf("server path left in %q", got)
	}
	if !strings.Contains(got, "https://proxy.golang.org/a/b") {
		t.Fatalf("URL mangled: %q", got)
	}
}

func TestMerkleLeavesOrder(t *testing.T) {
	goTool := provenance.Tool{Name: "go", Version: "go version go1.26.8 linux/amd64", SHA256: "aa"}
	deps := []provenance.Dependency{{URI: "pkg:golang/a@v1.0.0"}, {URI: "pkg:golang/b@v1.0.0"}}
	got := MerkleLeaves("c0", "t0", goTool, "lock", deps)
	want := []string{"c0", "t0", "aa", "go version go1.26.8 linux/amd64", "lock", "pkg:golang/a@v1.0.0", "pkg:golang/b@v1.0.0"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("leaves %q", got)
	}
}

// execRunner is a test double for sandbox.Runner: it runs commands directly
// (as sandbox.None would), so these tests do not depend on bubblewrap.
type execRunner struct {
	mu   sync.Mutex
	cmds []*sandbox.Cmd
}

func (r *execRunner) Name() string { return "test" }

func (r *execRunner) Run(ctx context.Context, c *sandbox.Cmd) error {
	r.mu.Lock()
	r.cmds = append(r.cmds, c)
	r.mu.Unlock()
	cmd := exec.CommandContext(ctx, c.Args[0], c.Args[1:]...)
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = c.Dir, c.Env, c.Output, c.Output
	return cmd.Run()
}

// projectDir copies testdata/projects/<name> (at the repository root) into
// a temporary directory.
func projectDir(t *testing.T, name string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	copyTree(t, filepath.Join("..", "..", "testdata", "projects", name), dir)
	return dir
}

func needGo(t *testing.T) {
	t.Helper()
	testenv.NeedTool(t, "go")
}

// needProxy skips when the Go module proxy cannot be reached: the fetch
// tests use the real registry.
func needProxy(t *testing.T) {
	t.Helper()
	needGo(t)
	testenv.NeedReachable(t, "https://proxy.golang.org/github.com/google/uuid/@v/v1.6.0.info")
}

func workspace(t *testing.T, dir string) (*toolchain.Workspace, *[]string) {
	var mu sync.Mutex
	var lines []string
	return &toolchain.Workspace{
		Dir:      dir,
		CacheDir: t.TempDir(),
		Runner:   &execRunner{},
		Env:      []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "GOFLAGS=-mod=mod", "GOPROXY=" + os.Getenv("GOPROXY")},
		Log: func(l string) {
			mu.Lock()
			lines = append(lines, l)
			mu.Unlock()
		},
	}, &lines
}

// TestBuildGoProject fetches github.com/google/uuid from the Go module proxy
// and builds a project with three main packages, two of which share a name.
func TestBuildGoProject(t *testing.T) {
	needProxy(t)
	ctx := context.Background()
	w, lines := workspace(t, projectDir(t, "go-hello"))
	d := New()
	in, err := toolchain.Plan(ctx, d, w)
	if err != nil {
		t.Fatal(err)
	}
	if len(in.Toolchain) != 1 || in.Toolchain[0].Name != "go" || !strings.HasPrefix(in.Toolchain[0].Version, "go version go1.") || len(in.Toolchain[0].SHA256) != 64 {
		t.Fatalf("toolchain %+v", in.Toolchain)
	}
	if len(in.Dependencies) != 1 || in.Dependencies[0].URI != "pkg:golang/github.com/google/uuid@v1.6.0" ||
		in.Dependencies[0].Digest["h1"] != "NIvaJDMOsjHA8n1jAhLSgzrAzy1Hgr+hNrb57e+94F0=" {
		t.Fatalf("deps %+v", in.Dependencies)
	}
	leaves := in.MerkleLeaves("c", "t")
	if len(leaves) != 6 || leaves[4] != in.Lock.SHA256 || leaves[5] != in.Dependencies[0].URI {
		t.Fatalf("leaves %q", leaves)
	}
	if err := d.Fetch(ctx, w); err != nil {
		t.Fatalf("fetch: %v (%s)", err, failure.Message(err))
	}
	if err := d.Build(ctx, w); err != nil {
		t.Fatalf("build: %v\n%s", err, strings.Join(*lines, "\n"))
	}
	for _, c := range w.Runner.(*execRunner).cmds {
		if toolchain.Getenv(c.Env, "CGO_ENABLED") != "0" || toolchain.Getenv(c.Env, "GOTOOLCHAIN") != "local" {
			t.Errorf("%v: env %v", c.Args, c.Env)
		}
		if c.Args[1] != "mod" && (c.Network || toolchain.Getenv(c.Env, "GOPROXY") != "off") {
			t.Errorf("%v runs with network", c.Args)
		}
	}
	dst := t.TempDir()
	arts, err := d.Artifacts(ctx, w, dst)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range arts {
		names = append(names, a.Name)
	}
	if want := []string{"cmd-hello", "hello", "kettle-greet"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("artifacts %v, want %v", names, want)
	}
	for name, want := range map[string]string{
		"hello":        "hello, kettle 675accf2-bcdb-58a3-be28-26d850d3da70",
		"cmd-hello":    "hello from cmd/hello",
		"kettle-greet": "hello, greet",
	} {
		out, err := exec.Command(filepath.Join(dst, name)).Output()
		if err != nil || strings.TrimSpace(string(out)) != want {
			t.Errorf("%s printed %q (%v), want %q", name, out, err, want)
		}
		if sum, _ := toolchain.SHA256File(filepath.Join(dst, name)); sum != artifact(arts, name).SHA256 {
			t.Errorf("%s: digest %s, file %s", name, artifact(arts, name).SHA256, sum)
		}
	}
	if _, err := os.Lstat(filepath.Join(w.Dir, ScratchDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("scratch directory left behind: %v", err)
	}
}

func artifact(arts []toolchain.Artifact, name string) toolchain.Artifact {
	for _, a := range arts {
		if a.Name == name {
			return a
		}
	}
	return toolchain.Artifact{}
}

// TestFetchTampered: a go.sum entry that does not match what the proxy
// serves, or a go.sum that does not pin a required module, fails the fetch
// with DependencyFetchFailed, and go.sum is left as committed.
func TestFetchTampered(t *testing.T) {
	needProxy(t)
	for _, tc := range []struct {
		name, sum, msg string
	}{
		{"wrong h1", strings.Replace(uuidSum, "NIva", "NIvb", 1), "checksum mismatch"},
		{"wrong go.mod h1", strings.Replace(uuidSum, "TIyP", "TIyQ", 1), "checksum mismatch"},
		{"missing pin", "", "go.sum does not pin every module"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := projectDir(t, "go-hello")
			if err := os.WriteFile(filepath.Join(dir, SumFile), []byte(tc.sum), 0o644); err != nil {
				t.Fatal(err)
			}
			w, _ := workspace(t, dir)
			d := New()
			if _, err := toolchain.Plan(context.Background(), d, w); err != nil {
				t.Fatal(err)
			}
			err := d.Fetch(context.Background(), w)
			if failure.KindOf(err) != failure.DependencyFetchFailed || !strings.Contains(failure.Message(err), tc.msg) {
				t.Fatalf("fetch: %v (%s: %q), want DependencyFetchFailed containing %q", err, failure.KindOf(err), failure.Message(err), tc.msg)
			}
			if strings.Contains(failure.Message(err), w.Dir) || strings.Contains(failure.Message(err), w.CacheDir) {
				t.Fatalf("message leaks a path: %q", failure.Message(err))
			}
			if b, _ := os.ReadFile(filepath.Join(dir, SumFile)); string(b) != tc.sum {
				t.Fatalf("go.sum changed to %q", b)
			}
		})
	}
}

func TestModOnly(t *testing.T) {
	needGo(t)
	ctx := context.Background()
	w, lines := workspace(t, projectDir(t, "go-nodeps"))
	d := NewModOnly()
	if d.Lockfile() != ModFile {
		t.Fatalf("lockfile %s", d.Lockfile())
	}
	in, err := toolchain.Plan(ctx, d, w)
	if err != nil {
		t.Fatal(err)
	}
	if in.Dependencies == nil || len(in.Dependencies) != 0 {
		t.Fatalf("deps %#v", in.Dependencies)
	}
	if sum, _ := toolchain.SHA256File(filepath.Join(w.Dir, ModFile)); in.Lock.SHA256 != sum {
		t.Fatalf("lockfile hash %s, go.mod %s", in.Lock.SHA256, sum)
	}
	if err := d.Fetch(ctx, w); err != nil {
		t.Fatal(err)
	}
	if n := len(w.Runner.(*execRunner).cmds); n != 0 {
		t.Fatalf("fetch of a module without requirements ran %d commands", n)
	}
	if err := d.Build(ctx, w); err != nil {
		t.Fatalf("build: %v\n%s", err, strings.Join(*lines, "\n"))
	}
	arts, err := d.Artifacts(ctx, w, t.TempDir())
	if err != nil || len(arts) != 1 || arts[0].Name != "nodeps" {
		t.Fatalf("artifacts %v, %v", arts, err)
	}
}

func TestInputsErrors(t *testing.T) {
	needGo(t)
	for _, tc := range []struct {
		name    string
		modOnly bool
		files   map[string]string
		kind    failure.Kind
		msg     string
	}{
		{"newer go", false, map[string]string{"go.mod": "module x\n\ngo 1.999\n", "go.sum": ""}, failure.UnsupportedToolchain, "requires go >= 1.999"},
		{"bad go.mod", false, map[string]string{"go.mod": "module x\n\nfoo bar\n", "go.sum": ""}, failure.InvalidSource, "invalid go.mod: go.mod:3: unknown directive: foo"},
		{"no module", false, map[string]string{"go.mod": "go 1.22\n", "go.sum": ""}, failure.InvalidSource, "no module directive"},
		{"bad go.sum", false, map[string]string{"go.mod": "module x\n", "go.sum": "x\n"}, failure.InvalidSource, "go.sum:1"},
		{"no go.mod", false, map[string]string{"go.sum": ""}, failure.InvalidSource, "cannot read go.mod"},
		{"requires without go.sum", true, map[string]string{"go.mod": "module x\n\nrequire github.com/google/uuid v1.6.0\n"}, failure.UnsupportedToolchain, "commit go.sum"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for n, c := range tc.files {
				os.WriteFile(filepath.Join(dir, n), []byte(c), 0o644)
			}
			w, _ := workspace(t, dir)
			d := New()
			if tc.modOnly {
				d = NewModOnly()
			}
			_, err := toolchain.Plan(context.Background(), d, w)
			if failure.KindOf(err) != tc.kind || !strings.Contains(failure.Message(err), tc.msg) {
				t.Fatalf("err %v (%s: %q), want %s containing %q", err, failure.KindOf(err), failure.Message(err), tc.kind, tc.msg)
			}
			if strings.Contains(failure.Message(err), "/") && strings.Contains(failure.Message(err), os.TempDir()) {
				t.Fatalf("message leaks a path: %q", failure.Message(err))
			}
		})
	}
}

// TestGoModSymlink: go.mod pointing outside the project is refused before
// any go command reads it.
func TestGoModSymlink(t *testing.T) {
	needGo(t)
	dir := t.TempDir()
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("module secret\n"), 0o600)
	os.Symlink(secret, filepath.Join(dir, ModFile))
	os.WriteFile(filepath.Join(dir, SumFile), nil, 0o644)
	w, _ := workspace(t, dir)
	_, err := toolchain.Plan(context.Background(), New(), w)
	if failure.KindOf(err) != failure.InvalidSource {
		t.Fatalf("err %v", err)
	}
}

// TestBuildFails: a compile error is BuildFailed, its output is in the log,
// and nothing of the build is left in the project.
func TestBuildFails(t *testing.T) {
	needGo(t)
	ctx := context.Background()
	dir := projectDir(t, "go-nodeps")
	os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nfunc main() { undefinedThing() }\n"), 0o644)
	w, lines := workspace(t, dir)
	d := NewModOnly()
	if _, err := toolchain.Plan(ctx, d, w); err != nil {
		t.Fatal(err)
	}
	err := d.Build(ctx, w)
	if failure.KindOf(err) != failure.BuildFailed || !strings.Contains(strings.Join(*lines, "\n"), "undefined: undefinedThing") {
		t.Fatalf("err %v (%s)\n%s", err, failure.KindOf(err), strings.Join(*lines, "\n"))
	}
	if _, err := os.Lstat(filepath.Join(dir, ScratchDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("scratch directory left behind: %v", err)
	}
}

// TestLibraryNoArtifacts (issue 18): a module without a main package (a
// library) fails as NoArtifacts, as docs/toolchains.md says, with a message
// saying what to do; not as BuildFailed.
func TestLibraryNoArtifacts(t *testing.T) {
	needGo(t)
	ctx := context.Background()
	dir := projectDir(t, "go-nodeps")
	os.Remove(filepath.Join(dir, "main.go"))
	os.WriteFile(filepath.Join(dir, "lib.go"), []byte("package nodeps\n\nfunc Answer() int { return 42 }\n"), 0o644)
	w, lines := workspace(t, dir)
	d := NewModOnly()
	if _, err := toolchain.Plan(ctx, d, w); err != nil {
		t.Fatal(err)
	}
	err := d.Build(ctx, w)
	if failure.KindOf(err) != failure.NoArtifacts || !strings.Contains(failure.Message(err), "no main package") ||
		!strings.Contains(failure.Message(err), "kettle.toml") {
		t.Fatalf("err %v (%s)\n%s", err, failure.KindOf(err), strings.Join(*lines, "\n"))
	}
}
