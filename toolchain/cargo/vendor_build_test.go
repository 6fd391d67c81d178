package cargo_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/pipeline"
	"github.com/kettle-build/kettle/sandbox"
)

// vendoredApp lays out a project as `cargo vendor` leaves it: a git
// dependency (a local repository, vendored by cargo vendor itself) and a
// crates.io crate (written by hand: crates.io is not reachable here, so its
// .crate checksum is a stand-in both in Cargo.lock and in its
// .cargo-checksum.json).
func vendoredApp(t *testing.T, env []string, base string) string {
	t.Helper()
	write := func(p, s string) {
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run := func(dir string, args ...string) string {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Dir = dir
		cmd.Env = append(env, "CARGO_HOME="+filepath.Join(base, "vendor-home"), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	dep := filepath.Join(base, "dep")
	write(filepath.Join(dep, "Cargo.toml"), "[package]\nname = \"dep\"\nversion = \"0.2.0\"\nedition = \"2021\"\n")
	write(filepath.Join(dep, "src/lib.rs"), "pub fn f() -> &'static str { \"from git\" }\n")
	run(dep, "git", "init", "-q", "-b", "main")
	run(dep, "git", "add", "-A")
	run(dep, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "dep")

	app := filepath.Join(base, "src", "app")
	write(filepath.Join(app, "Cargo.toml"), "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n[dependencies]\ndep = { git = \"file://"+dep+"\", branch = \"main\" }\n")
	write(filepath.Join(app, "src/main.rs"), "fn main() { println!(\"{} {}\", dep::f(), itoa::f()); }\n")
	run(app, "cargo", "generate-lockfile")
	run(app, "cargo", "vendor")
	config := "[source.\"git+file://" + dep + "?branch=main\"]\ngit = \"file://" + dep + "\"\nbranch = \"main\"\nreplace-with = \"vendored-sources\"\n\n" +
		"[source.crates-io]\nreplace-with = \"vendored-sources\"\n\n[source.vendored-sources]\ndirectory = \"vendor\"\n"
	write(filepath.Join(app, ".cargo/config.toml"), config)

	// The crates.io crate, vendored by hand.
	crate := map[string]string{
		"Cargo.toml": "[package]\nname = \"itoa\"\nversion = \"1.0.11\"\nedition = \"2018\"\n",
		"src/lib.rs": "pub fn f() -> &'static str { \"from crates.io\" }\n",
	}
	sums := map[string]string{}
	for n, c := range crate {
		write(filepath.Join(app, "vendor/itoa", n), c)
		h := sha256.Sum256([]byte(c))
		sums[n] = hex.EncodeToString(h[:])
	}
	pkg := strings.Repeat("5a", 32)
	js, _ := json.Marshal(map[string]any{"files": sums, "package": pkg})
	write(filepath.Join(app, "vendor/itoa/.cargo-checksum.json"), string(js))
	b, _ := os.ReadFile(filepath.Join(app, "Cargo.toml"))
	write(filepath.Join(app, "Cargo.toml"), string(b)+"itoa = \"1.0.11\"\n")
	lock, _ := os.ReadFile(filepath.Join(app, "Cargo.lock"))
	l := strings.Replace(string(lock), " \"dep\",\n]", " \"dep\",\n \"itoa\",\n]", 1) +
		"\n[[package]]\nname = \"itoa\"\nversion = \"1.0.11\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\nchecksum = \"" + pkg + "\"\n"
	write(filepath.Join(app, "Cargo.lock"), l)
	return app
}

// TestVendoredBuild: a project vendored by cargo vendor (a git dependency
// and a crates.io crate) builds offline, and both crates are recorded as
// local code (file:vendor/<crate>, dirhash h1), not as the git commit or the
// registry checksum they claim to be; a vendored file edited afterwards,
// with or without updating .cargo-checksum.json's package checksum, is
// refused before anything runs.
func TestVendoredBuild(t *testing.T) {
	env := cargoEnv(t)
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	base := t.TempDir()
	app := vendoredApp(t, env, base)
	res, err := pipeline.RunDir(t.Context(), pipeline.Options{Dir: app, Runner: sandbox.NewNone(), Env: env,
		CacheDir: filepath.Join(base, "cache"), SourceURI: "https://example.com/app.git"})
	if err != nil {
		t.Fatalf("Run: %v (%s: %s)", err, failure.KindOf(err), failure.Message(err))
	}
	deps := res.Statement.Predicate.BuildDefinition.ResolvedDependencies
	if len(deps) != 2 || deps[0].URI != "file:vendor/dep" || deps[1].URI != "file:vendor/itoa" ||
		deps[0].Digest["h1"] == "" || deps[1].Digest["h1"] == "" || deps[0].Digest["gitCommit"] != "" || deps[1].Digest["sha256"] != "" {
		t.Fatalf("dependencies %+v", deps)
	}
	out, err := exec.Command(filepath.Join(res.OutDir, "artifacts", "app")).Output()
	if err != nil || string(out) != "from git from crates.io\n" {
		t.Fatalf("app printed %q (%v)", out, err)
	}

	os.WriteFile(filepath.Join(app, "vendor/dep/src/lib.rs"), []byte("pub fn f() -> &'static str { \"TAMPERED\" }\n"), 0o644)
	_, err = pipeline.RunDir(t.Context(), pipeline.Options{Dir: app, Runner: sandbox.NewNone(), Env: env,
		CacheDir: filepath.Join(base, "cache2"), SourceURI: "https://example.com/app.git"})
	if failure.KindOf(err) != failure.InvalidSource || !strings.Contains(failure.Message(err), "vendored crate vendor/dep (dep@0.2.0): src/lib.rs does not match its checksum") {
		t.Fatalf("tampered: %v (%s: %s)", err, failure.KindOf(err), failure.Message(err))
	}
}

// TestWorkspaceBuild: a workspace with a member glob, workspace
// inheritance, path dependencies (one only under [target.'cfg(unix)']), a
// build script, extra binaries, an example and an explicit lib path builds:
// the fetch copy's manifests and stubs are enough for `cargo fetch`, and the
// path dependencies that are not members are recorded as local code.
func TestWorkspaceBuild(t *testing.T) {
	env := cargoEnv(t)
	base := t.TempDir()
	app := filepath.Join(base, "src", "ws")
	for n, c := range map[string]string{
		"Cargo.toml": "[workspace]\nresolver = \"2\"\nmembers = [\"crates/*\"]\n[workspace.package]\nversion = \"0.7.0\"\nedition = \"2021\"\n" +
			"[workspace.dependencies]\nshared = { path = \"libs/shared\" }\n",
		"crates/app/Cargo.toml": "[package]\nname = \"app\"\nversion.workspace = true\nedition.workspace = true\n" +
			"[dependencies]\nshared.workspace = true\n[target.'cfg(unix)'.dependencies]\nunixy = { path = \"../../libs/unixy\" }\n",
		"crates/app/src/main.rs":    "fn main() { println!(\"{} {} {}\", shared::f(), unixy::g(), env!(\"FROM_BUILD_RS\")); }\n",
		"crates/app/src/bin/x.rs":   "fn main() {}\n",
		"crates/app/build.rs":       "fn main() { println!(\"cargo:rustc-env=FROM_BUILD_RS=built\"); }\n",
		"crates/app/examples/e.rs":  "fn main() {}\n",
		"libs/shared/Cargo.toml":    "[package]\nname = \"shared\"\nversion = \"0.3.0\"\nedition = \"2021\"\n[lib]\npath = \"lib/shared.rs\"\n",
		"libs/shared/lib/shared.rs": "pub fn f() -> &'static str { \"shared\" }\n",
		"libs/unixy/Cargo.toml":     "[package]\nname = \"unixy\"\nversion = \"0.0.1\"\nedition = \"2021\"\n",
		"libs/unixy/src/lib.rs":     "pub fn g() -> &'static str { \"unixy\" }\n",
	} {
		p := filepath.Join(app, n)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(c), 0o644)
	}
	gen := exec.Command("cargo", "generate-lockfile", "--offline")
	gen.Dir, gen.Env = app, append(env, "CARGO_HOME="+filepath.Join(base, "gen-home"))
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("generate-lockfile: %v\n%s", err, out)
	}
	res, err := pipeline.RunDir(t.Context(), pipeline.Options{Dir: app, Runner: sandbox.NewNone(), Env: env,
		CacheDir: filepath.Join(base, "cache"), SourceURI: "https://example.com/ws.git"})
	if err != nil {
		t.Fatalf("Run: %v (%s: %s)", err, failure.KindOf(err), failure.Message(err))
	}
	var uris []string
	for _, d := range res.Statement.Predicate.BuildDefinition.ResolvedDependencies {
		uris = append(uris, d.URI)
	}
	if strings.Join(uris, " ") != "file:libs/shared file:libs/unixy" {
		t.Fatalf("dependencies %v", uris)
	}
	out, err := exec.Command(filepath.Join(res.OutDir, "artifacts", "app")).Output()
	if err != nil || string(out) != "shared unixy built\n" {
		t.Fatalf("app printed %q (%v)", out, err)
	}
}
