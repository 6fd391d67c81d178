package cargo_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/pipeline"
	"github.com/kettle-build/kettle/sandbox"
	"github.com/kettle-build/kettle/toolchain"
	"github.com/kettle-build/kettle/toolchain/cargo"
)

// hostileProject writes a project whose .cargo/config.toml names a program
// (tools/m.sh, which appends to marker and then runs its arguments) in every
// configuration key that can name one, points cargo's proxy and an extra
// registry at srv, and pins a toolchain that is not installed.
func hostileProject(t *testing.T, dir, marker, srv, config string) {
	t.Helper()
	write := func(name, content string, mode os.FileMode) {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("Cargo.toml", "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n", 0o644)
	write("Cargo.lock", "version = 4\n\n[[package]]\nname = \"app\"\nversion = \"0.1.0\"\n", 0o644)
	write("src/main.rs", "fn main() { println!(\"honest\"); }\n", 0o644)
	write("tools/m.sh", "#!/bin/sh\necho \"$0 $*\" >> "+marker+"\nexec \"$@\"\n", 0o755)
	write("rust-toolchain.toml", "[toolchain]\nchannel = \"nightly-2020-01-01\"\n", 0o644)
	write(".cargo/config.toml", strings.ReplaceAll(config, "SRV", srv), 0o644)
}

// Every key of cargo's configuration (1.95) that names a program, or makes
// cargo talk to a host of the project's choosing.
const everyKey = `
[build]
rustc-wrapper = "tools/m.sh"
rustc-workspace-wrapper = "tools/m.sh"
rustc = "tools/m.sh"
rustdoc = "tools/m.sh"

[target.x86_64-unknown-linux-gnu]
runner = "tools/m.sh"
linker = "tools/m.sh"

[target.aarch64-unknown-linux-gnu]
runner = "tools/m.sh"
linker = "tools/m.sh"

[target.'cfg(unix)']
runner = "tools/m.sh"

[registries.evil]
index = "sparse+SRV/index/"
credential-provider = "tools/m.sh"

[registry]
global-credential-providers = ["tools/m.sh", "evil-alias"]

[credential-alias]
evil-alias = ["tools/m.sh"]

[net]
git-fetch-with-cli = true

[http]
proxy = "SRV"
cainfo = "tools/m.sh"

[alias]
fetch = "run"
build = "run"
b = "run"
`

// envKey adds [env], which applies to what cargo runs (rustc -vV in the
// fetch): a preloaded library would run project code in rustc.
const envKey = `
[env]
LD_PRELOAD = { value = "tools/evil.so", relative = true, force = true }
RUSTC_WRAPPER = { value = "tools/m.sh", relative = true, force = true }
`

func loopback(t *testing.T) (string, *atomic.Int32) {
	t.Helper()
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Error(w, "no", http.StatusForbidden)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, &hits
}

// TestFetchRunsNoProjectCode: `cargo fetch` of a project whose config names
// a program in every key (and [env] with LD_PRELOAD) runs none of them and
// contacts nothing: it runs in a copy holding only the manifests and
// Cargo.lock.
func TestFetchRunsNoProjectCode(t *testing.T) {
	env := cargoEnv(t)
	base := t.TempDir()
	dir := filepath.Join(base, "src", "app")
	marker := filepath.Join(base, "MARKER")
	url, hits := loopback(t)
	hostileProject(t, dir, marker, url, everyKey+envKey)
	var log []string
	w := &toolchain.Workspace{Dir: dir, CacheDir: filepath.Join(base, "cache"), Runner: sandbox.NewNone(), Env: env,
		Log: func(l string) { log = append(log, l) }}
	d := cargo.New()
	if _, err := toolchain.Plan(t.Context(), d, w); err != nil {
		t.Fatalf("Inputs: %v", err)
	}
	if err := d.Fetch(t.Context(), w); err != nil {
		t.Fatalf("Fetch: %v\n%s", err, strings.Join(log, "\n"))
	}
	if b, err := os.ReadFile(marker); err == nil {
		t.Fatalf("a program of the project ran in the fetch:\n%s", b)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the fetch made %d requests to the project's host", n)
	}
	if l := strings.Join(log, "\n"); strings.Contains(l, "evil.so") || strings.Contains(l, "nightly-2020") {
		t.Fatalf("the fetch read the project's [env] or rust-toolchain.toml:\n%s", l)
	}
	if _, err := os.Stat(filepath.Join(w.CacheDir, "fetch-src")); err == nil {
		t.Error("the fetch copy was left behind")
	}
}

// TestBuildOverridesProgramKeys: the build reads the project's config (it
// needs its source replacements and rustflags) but every key that names a
// program of the compile is overridden on cargo's command line; the build
// succeeds with kettle's rustc, and no program of the project's config runs.
func TestBuildOverridesProgramKeys(t *testing.T) {
	env := cargoEnv(t)
	base := t.TempDir()
	dir := filepath.Join(base, "src", "app")
	marker := filepath.Join(base, "MARKER")
	url, hits := loopback(t)
	hostileProject(t, dir, marker, url, everyKey)
	res, err := pipeline.RunDir(t.Context(), pipeline.Options{Dir: dir, Runner: sandbox.NewNone(), Env: env,
		CacheDir: filepath.Join(base, "cache"), SourceURI: "https://example.com/app.git"})
	if err != nil {
		t.Fatalf("Run: %v (%s: %s)", err, failure.KindOf(err), failure.Message(err))
	}
	if b, err := os.ReadFile(marker); err == nil {
		t.Fatalf("a program of the project's config ran:\n%s", b)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("%d requests to the project's host", n)
	}
	out, err := exec.Command(filepath.Join(res.OutDir, "artifacts", "app")).Output()
	if err != nil || string(out) != "honest\n" {
		t.Fatalf("app printed %q (%v)", out, err)
	}
}

// TestArtifactsNoSymlink: target and target/release replaced by symlinks
// (to a directory holding a secret) are refused with BuildFailed and
// nothing of the secret is published; a hard link to a file outside
// target/release is refused; an honest build's hard links
// (target/release/app ↔ deps/app-<hash>) are accepted.
func TestArtifactsNoSymlink(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir, secretDir string)
		want  string
	}{
		{"target/release is a symlink", func(t *testing.T, dir, secretDir string) {
			os.MkdirAll(filepath.Join(dir, "target"), 0o755)
			os.Symlink(secretDir, filepath.Join(dir, "target", "release"))
		}, "target or target/release is a symlink"},
		{"target is a symlink", func(t *testing.T, dir, secretDir string) {
			os.MkdirAll(filepath.Join(secretDir, "release"), 0o755)
			os.Symlink(filepath.Join(secretDir, "token"), filepath.Join(secretDir, "release", "token"))
			os.Symlink(secretDir, filepath.Join(dir, "target"))
		}, "target or target/release is a symlink"},
		{"relative symlink", func(t *testing.T, dir, secretDir string) {
			os.MkdirAll(filepath.Join(dir, "target"), 0o755)
			rel, _ := filepath.Rel(filepath.Join(dir, "target"), secretDir)
			os.Symlink(rel, filepath.Join(dir, "target", "release"))
		}, "target or target/release is a symlink"},
		{"hard link to a file outside", func(t *testing.T, dir, secretDir string) {
			os.MkdirAll(filepath.Join(dir, "target", "release"), 0o755)
			if err := os.Link(filepath.Join(secretDir, "token"), filepath.Join(dir, "target", "release", "token")); err != nil {
				t.Skip("no hard links here:", err)
			}
		}, "hard link to a file outside"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			dir := filepath.Join(base, "proj")
			secretDir := filepath.Join(base, "secrets")
			os.MkdirAll(secretDir, 0o700)
			os.WriteFile(filepath.Join(secretDir, "token"), []byte("s3cret-token"), 0o600)
			os.MkdirAll(dir, 0o755)
			tc.setup(t, dir, secretDir)
			out := t.TempDir()
			arts, err := cargo.New().Artifacts(t.Context(), &toolchain.Workspace{Dir: dir}, out)
			if err == nil || failure.KindOf(err) != failure.BuildFailed || !strings.Contains(failure.Message(err), tc.want) {
				t.Fatalf("arts %v, err %v (%s: %q), want BuildFailed %q", arts, err, failure.KindOf(err), failure.Message(err), tc.want)
			}
			if strings.Contains(failure.Message(err), base) {
				t.Errorf("message names a server path: %q", failure.Message(err))
			}
			ents, _ := os.ReadDir(out)
			if len(ents) != 0 {
				t.Errorf("published %v", ents)
			}
		})
	}
	t.Run("sparse file over the budget", func(t *testing.T) {
		dir := t.TempDir()
		rel := filepath.Join(dir, "target", "release")
		os.MkdirAll(rel, 0o755)
		f, err := os.Create(filepath.Join(rel, "big"))
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(toolchain.DefaultMaxOutputBytes + 1); err != nil {
			t.Skip(err)
		}
		f.Close()
		_, err = cargo.New().Artifacts(t.Context(), &toolchain.Workspace{Dir: dir}, t.TempDir())
		if failure.KindOf(err) != failure.BuildFailed || !strings.Contains(failure.Message(err), "exceed") {
			t.Fatalf("err %v (%s: %q)", err, failure.KindOf(err), failure.Message(err))
		}
	})
	t.Run("symlink and fifo named like binaries", func(t *testing.T) {
		dir := t.TempDir()
		rel := filepath.Join(dir, "target", "release")
		os.MkdirAll(rel, 0o755)
		os.Symlink("/etc/passwd", filepath.Join(rel, "passwd"))
		if err := syscall.Mkfifo(filepath.Join(rel, "fifo"), 0o644); err != nil {
			t.Skip(err)
		}
		os.WriteFile(filepath.Join(rel, "app"), []byte("ELF"), 0o755)
		arts, err := cargo.New().Artifacts(t.Context(), &toolchain.Workspace{Dir: dir}, t.TempDir())
		if err != nil || len(arts) != 1 || arts[0].Name != "app" {
			t.Fatalf("arts %v, err %v", arts, err)
		}
	})
	t.Run("cargo's own hard links", func(t *testing.T) {
		dir := t.TempDir()
		rel := filepath.Join(dir, "target", "release")
		os.MkdirAll(filepath.Join(rel, "deps"), 0o755)
		os.WriteFile(filepath.Join(rel, "deps", "app-0123abcd"), []byte("ELF"), 0o755)
		if err := os.Link(filepath.Join(rel, "deps", "app-0123abcd"), filepath.Join(rel, "app")); err != nil {
			t.Skip(err)
		}
		os.WriteFile(filepath.Join(rel, "app.d"), []byte("dep-info"), 0o644)
		arts, err := cargo.New().Artifacts(t.Context(), &toolchain.Workspace{Dir: dir}, t.TempDir())
		if err != nil || len(arts) != 1 || arts[0].Name != "app" {
			t.Fatalf("arts %v, err %v", arts, err)
		}
	})
}
