package sandbox

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kettle-build/kettle/internal/testenv"
)

// The malicious Cargo projects of testdata/malicious (issue 7.2), each built
// with `cargo build --locked --release --offline` through Bwrap as the cargo
// driver runs it: project directory writable, CARGO_HOME read-only.

// maliciousDir is testdata/malicious at the repository root.
var maliciousDir = filepath.Join("..", "testdata", "malicious")

// cargoLimits are generous enough for an honest small build; each test
// tightens the one limit its offender should hit.
var cargoLimits = Limits{
	Memory:   2 << 30,
	Procs:    256,
	CPUTime:  5 * time.Minute,
	FileSize: 512 << 20,
	Disk:     2 << 30,
	Wall:     5 * time.Minute,
}

type cargoEnv struct {
	env       []string
	cargoHome string
}

func newCargoEnv(t *testing.T, w string) cargoEnv {
	t.Helper()
	home, err := os.UserHomeDir()
	if err != nil {
		t.Fatalf("no home directory: %v", err)
	}
	path := filepath.Join(home, ".cargo", "bin") + ":/usr/local/bin:/usr/bin:/bin"
	env := []string{
		"PATH=" + path,
		"HOME=/nonexistent",
		"RUSTUP_HOME=" + filepath.Join(home, ".rustup"),
		"CARGO_HOME=" + filepath.Join(w, "cargo-home"),
		"CARGO_TERM_COLOR=never",
		"CARGO_TERM_PROGRESS_WHEN=never",
		"CARGO_INCREMENTAL=0",
		"LANG=C.UTF-8",
	}
	if _, err := lookPath("cargo", env, "/"); err != nil {
		testenv.Need(t, false, "cargo is not installed")
	}
	return cargoEnv{env: env, cargoHome: mkdir(t, filepath.Join(w, "cargo-home"))}
}

// copyProject copies the project at src to dst, without target/.
func copyProject(t *testing.T, src, dst string) {
	t.Helper()
	copyProjectB(t, src, dst)
}

func copyProjectB(t testing.TB, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() && d.Name() == "target" {
			return filepath.SkipDir
		}
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

type cargoRun struct {
	project string   // under testdata/malicious, or a path
	attack  []string // lines of attack.conf
	limits  Limits
	ro      []string
	opts    []Option
}

// buildCargo builds a copy of the project inside a stand-in server data
// directory (data/jobs/<id>/src) and returns the output and error.
func buildCargo(t *testing.T, data string, r cargoRun) (string, error) {
	t.Helper()
	ce := newCargoEnv(t, data)
	b := newTestBwrap(t, append([]Option{WithHiddenPaths(data), WithPollInterval(50 * time.Millisecond)}, r.opts...)...)
	src := r.project
	if !strings.Contains(src, "/") {
		src = filepath.Join(maliciousDir, src)
	}
	proj := mkdir(t, filepath.Join(data, "jobs", filepath.Base(src), "src"))
	copyProject(t, src, proj)
	if r.attack != nil {
		writeTestFile(t, filepath.Join(proj, "attack.conf"), strings.Join(r.attack, "\n")+"\n")
	}
	limits := r.limits
	if limits == (Limits{}) {
		limits = cargoLimits
	}
	var out bytes.Buffer
	start := time.Now()
	err := b.Run(context.Background(), &Cmd{
		Args:     []string{"cargo", "build", "--locked", "--release", "--offline"},
		Dir:      proj,
		Env:      ce.env,
		Output:   &out,
		ReadOnly: append([]string{ce.cargoHome}, r.ro...),
		Limits:   limits,
	})
	t.Logf("%s: %v after %v", filepath.Base(src), err, time.Since(start).Round(time.Millisecond))
	return out.String(), err
}

// wantRefused checks a build failed on its own (exit status, no limit) with
// the script's message and without a leak.
func wantRefused(t *testing.T, out string, err error, msg string) {
	t.Helper()
	var ee *exec.ExitError
	if err == nil || !errors.As(err, &ee) {
		t.Fatalf("build: err = %v, want a failed build\n%s", err, out)
	}
	if strings.Contains(out, "LEAK") || !strings.Contains(out, msg) {
		t.Fatalf("output lacks %q or shows a leak:\n%s", msg, out)
	}
}

func TestMaliciousNetwork(t *testing.T) {
	data := workDir(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- struct{}{}
			c.Close()
		}
	}()
	out, err := buildCargo(t, data, cargoRun{project: "net-loopback", attack: []string{ln.Addr().String(), "localhost:" + portOf(ln)}})
	select {
	case <-accepted:
		t.Fatal("a connection from the build arrived")
	default:
	}
	wantRefused(t, out, err, "kettle-malicious: no network")
}

func portOf(ln net.Listener) string {
	_, p, _ := net.SplitHostPort(ln.Addr().String())
	return p
}

func TestMaliciousReadCanary(t *testing.T) {
	data := workDir(t)
	writeTestFile(t, filepath.Join(data, "canary"), "kettle-canary-data-dir")
	writeTestFile(t, filepath.Join(data, "jobs", "other", "src", "secret"), "kettle-canary-other-job")
	home, _ := os.UserHomeDir()
	out, err := buildCargo(t, data, cargoRun{project: "read-canary", attack: []string{
		filepath.Join(data, "canary"),
		filepath.Join(data, "jobs", "other", "src", "secret"),
		"../../other/src/secret",
		"/etc/shadow",
		filepath.Join(home, ".npmrc"),
		filepath.Join(home, ".cargo", "credentials.toml"),
		filepath.Join(home, ".gitconfig"),
	}})
	wantRefused(t, out, err, "kettle-malicious: nothing readable")
	if strings.Contains(out, "kettle-canary") {
		t.Fatalf("canary leaked:\n%s", out)
	}
}

func TestMaliciousWriteOutside(t *testing.T) {
	data := workDir(t)
	targets := []string{
		filepath.Join(data, "pwned"),
		filepath.Join(data, "jobs", "write-outside", "pwned"),
		filepath.Join(data, "jobs", "pwned"),
		"/usr/local/pwned-by-kettle-test",
		"/etc/pwned-by-kettle-test",
		"/pwned-by-kettle-test",
	}
	out, err := buildCargo(t, data, cargoRun{project: "write-outside", attack: targets})
	for _, p := range targets {
		if _, err := os.Stat(p); err == nil {
			os.Remove(p)
			t.Errorf("%s was written on the host", p)
		}
	}
	wantRefused(t, out, err, "kettle-malicious: nothing writable")
}

func TestMaliciousTEEDevice(t *testing.T) {
	data := workDir(t)
	// A stand-in device in a directory the build may read (as the job's
	// dependency cache would be), hidden by the runner's configuration.
	devs := mkdir(t, filepath.Join(data, "cache", "devices"))
	stand := filepath.Join(devs, "sev-guest")
	writeTestFile(t, stand, "kettle-canary-stand-in-device")
	out, err := buildCargo(t, data, cargoRun{
		project: "tee-device",
		attack:  []string{stand},
		ro:      []string{devs},
		opts:    []Option{WithHiddenPaths(stand)},
	})
	wantRefused(t, out, err, "kettle-malicious: no TEE device")
	if strings.Contains(out, "kettle-canary") {
		t.Fatalf("stand-in device visible:\n%s", out)
	}
}

func TestMaliciousLimits(t *testing.T) {
	b := newTestBwrap(t)
	with := func(f func(*Limits)) Limits {
		l := cargoLimits
		f(&l)
		return l
	}
	tests := []struct {
		project string
		limits  Limits
		want    error
		needs   string
	}{
		{"fork-bomb", with(func(l *Limits) { l.Procs = 128 }), ErrProcessLimit, "pids"},
		{"mem-hog", with(func(l *Limits) { l.Memory = 1 << 30 }), ErrMemoryLimit, "memory"},
		{"disk-hog", with(func(l *Limits) { l.Disk = 256 << 20; l.FileSize = 64 << 20 }), ErrDiskLimit, ""},
		{"big-file", with(func(l *Limits) { l.FileSize = 64 << 20 }), ErrFileSizeLimit, ""},
		{"sleep-forever", with(func(l *Limits) { l.Wall = 15 * time.Second }), ErrTimeLimit, ""},
		{"cpu-spin", with(func(l *Limits) { l.CPUTime = 3 * time.Second }), ErrCPULimit, ""},
	}
	for _, tc := range tests {
		t.Run(tc.project, func(t *testing.T) {
			// Mostly waiting (sleep-forever) or bounded by their own
			// cgroups: run them together.
			t.Parallel()
			switch {
			case tc.needs == "memory" && (b.cgs == nil || b.cgs.memory == ""):
				testenv.Capability(t, false, "no memory cgroup: a memory hog would not be contained")
			case tc.needs == "pids" && (b.cgs == nil || b.cgs.pids == ""):
				testenv.Capability(t, false, "no pids cgroup: a fork bomb would not be contained")
			}
			out, err := buildCargo(t, workDir(t), cargoRun{project: tc.project, limits: tc.limits})
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v\n%s", err, tc.want, tail(out, 2000))
			}
			if strings.Contains(out, "LEAK") {
				t.Fatalf("offender finished:\n%s", tail(out, 2000))
			}
		})
	}
}

// TestHonestCargoBuild: an honest project with a build script builds in the
// sandbox under the same limits, and its binary runs.
func TestHonestCargoBuild(t *testing.T) {
	data := workDir(t)
	out, err := buildCargo(t, data, cargoRun{project: filepath.Join("testdata", "honest")})
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	bin := filepath.Join(data, "jobs", "honest", "src", "target", "release", "honest")
	got, err := exec.Command(bin).Output()
	if err != nil || !strings.HasPrefix(string(got), "honest ") {
		t.Fatalf("built binary: %v %q", err, got)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
