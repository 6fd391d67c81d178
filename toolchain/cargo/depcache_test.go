package cargo_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kettle-build/kettle/depcache"
	"github.com/kettle-build/kettle/egress"
	"github.com/kettle-build/kettle/events"
	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/internal/testenv"
	"github.com/kettle-build/kettle/pipeline"
	"github.com/kettle-build/kettle/sandbox"
	"github.com/kettle-build/kettle/toolchain/cargo"
)

// testCrate is one crate of the loopback registry.
type testCrate struct {
	name, lib string
	data      []byte // the .crate served
	sum       string // the checksum Cargo.lock pins
}

// sparseRegistry serves crates as a cargo sparse registry on loopback
// (index/config.json, index/3/<c>/<name>, dl/<name>/<version>), every
// crate at version 0.1.0, and counts the .crate downloads.
func sparseRegistry(t *testing.T, crates []*testCrate) (url string, downloads *atomic.Int32) {
	t.Helper()
	downloads = &atomic.Int32{}
	by := map[string]*testCrate{}
	for _, c := range crates {
		by[c.name] = c
	}
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		switch {
		case p == "/index/config.json":
			fmt.Fprintf(w, `{"dl":"%s/dl/{crate}/{version}"}`, srv.URL)
		case strings.HasPrefix(p, "/index/3/"):
			c := by[filepath.Base(p)]
			if c == nil {
				http.NotFound(w, r)
				return
			}
			fmt.Fprintf(w, `{"name":%q,"vers":"0.1.0","deps":[],"cksum":%q,"features":{},"yanked":false}`+"\n", c.name, c.sum)
		case strings.HasPrefix(p, "/dl/"):
			c := by[strings.Split(strings.TrimPrefix(p, "/dl/"), "/")[0]]
			if c == nil {
				http.NotFound(w, r)
				return
			}
			downloads.Add(1)
			w.Write(c.data)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL, downloads
}

// newCrate makes a .crate of name 0.1.0 whose lib.rs is lib.
func newCrate(t *testing.T, name, lib string) *testCrate {
	data := tarGz(t, []tarEntry{
		{name: name + "-0.1.0/Cargo.toml", body: "[package]\nname = \"" + name + "\"\nversion = \"0.1.0\"\nedition = \"2021\"\n"},
		{name: name + "-0.1.0/src/lib.rs", body: lib},
	})
	h := sha256.Sum256(data)
	return &testCrate{name: name, lib: lib, data: data, sum: hex.EncodeToString(h[:])}
}

// registryApp lays out a project "app" depending on crates through
// crates-io replaced by the loopback registry, with its Cargo.lock, and an
// optional build.rs.
func registryApp(t *testing.T, dir, url string, crates []*testCrate, buildRS string) {
	t.Helper()
	var deps, names, lock strings.Builder
	var calls []string
	for _, c := range crates {
		fmt.Fprintf(&deps, "%s = \"0.1\"\n", c.name)
		fmt.Fprintf(&names, " %q,\n", c.name)
		fmt.Fprintf(&lock, "\n[[package]]\nname = %q\nversion = \"0.1.0\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\nchecksum = %q\n", c.name, c.sum)
		calls = append(calls, c.name+"::hi().to_string()")
	}
	build := ""
	if buildRS != "" {
		build = "build = \"build.rs\"\n"
		writeFile(t, filepath.Join(dir, "build.rs"), buildRS)
	}
	writeFile(t, filepath.Join(dir, "Cargo.toml"), "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n"+build+"\n[dependencies]\n"+deps.String())
	writeFile(t, filepath.Join(dir, "src", "main.rs"), "fn main() { println!(\"{}\", ["+strings.Join(calls, ", ")+"].join(\" \")); }\n")
	writeFile(t, filepath.Join(dir, ".cargo", "config.toml"), "[source.crates-io]\nreplace-with = \"mirror\"\n\n[source.mirror]\nregistry = \"sparse+"+url+"/index/\"\n")
	writeFile(t, filepath.Join(dir, "Cargo.lock"), "version = 3\n\n[[package]]\nname = \"app\"\nversion = \"0.1.0\"\ndependencies = [\n"+names.String()+"]\n"+lock.String())
}

func writeFile(t *testing.T, p, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// cargoRunner is bubblewrap with an egress proxy that lets the fetch reach
// the loopback registry (and records it as a fetch host), or no sandbox.
func cargoRunner(t *testing.T) sandbox.Runner {
	t.Helper()
	proxy, err := egress.New(egress.Policy{AllowPrivate: true})
	if err != nil {
		t.Fatal(err)
	}
	runner, err := sandbox.New("bwrap", sandbox.WithEgress(proxy))
	if err != nil {
		testenv.Need(t, !testenv.CI(), fmt.Sprintf("bubblewrap is unavailable: %v", err))
		return sandbox.NewNone()
	}
	return runner
}

type cargoBuild struct {
	res   *pipeline.Result
	log   string
	prov  map[string]any
	err   error
	fetch time.Duration // the fetch phase
}

// buildApp copies the project src to a new directory and builds it as a
// new job with the shared cache c (cacheDir "": a fresh one).
func buildApp(t *testing.T, runner sandbox.Runner, env []string, c *depcache.Cache, src, cacheDir string) cargoBuild {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "app")
	if err := exec.Command("cp", "-a", src, dir).Run(); err != nil {
		t.Fatal(err)
	}
	if cacheDir == "" {
		cacheDir = filepath.Join(t.TempDir(), "cache")
	}
	var log strings.Builder
	var fetch time.Duration
	res, err := pipeline.RunDir(t.Context(), pipeline.Options{
		Dir: dir, Runner: runner, Env: env, DepCache: c, CacheDir: cacheDir, SourceURI: "https://example.com/app.git",
		Events: events.SinkFunc(func(e events.Event) {
			if e.Phase != nil && e.Phase.Name == events.PhaseFetch {
				fetch = e.Phase.Duration
			}
			if !e.PhaseOnly() {
				log.WriteString(e.Msg + "\n")
			}
		}),
	})
	b := cargoBuild{res: res, log: log.String(), err: err, fetch: fetch}
	if err == nil {
		if err := json.Unmarshal(res.Provenance, &b.prov); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func mustBuild(t *testing.T, b cargoBuild) cargoBuild {
	t.Helper()
	if b.err != nil {
		t.Fatalf("Run: %v (%s: %s)\n%s", b.err, failure.KindOf(b.err), failure.Message(b.err), b.log)
	}
	return b
}

// stable is the provenance without the per-job fields (invocation id,
// times) and the fetch hosts (a warm build contacts none).
func stable(p map[string]any) string {
	pred := p["predicate"].(map[string]any)
	delete(pred["runDetails"].(map[string]any), "metadata")
	delete(pred["buildDefinition"].(map[string]any)["internalParameters"].(map[string]any), "fetchHosts")
	b, _ := json.Marshal(p)
	return string(b)
}

// TestCargoSharedDepCache: with a shared dependency cache, the first build
// of a project with three registry crates (from a sparse registry on
// loopback) downloads them and fills the cache; a second build of the same
// Cargo.lock in another job runs no fetch command, downloads nothing and
// contacts no host, and its provenance and binary are byte-identical apart
// from the per-job fields and the fetch hosts. Then: the job's own fetch
// and build sandboxes try to write the cache (read-only); poisoned entries
// (bytes changed, a symlink or a hard link planted) are detected and the
// crates downloaded again with the result unchanged; a build script told
// the host paths of the cache cannot touch it; a crate whose bytes do not
// match Cargo.lock never enters the cache; a project without registry
// packages runs no fetch command either.
func TestCargoSharedDepCache(t *testing.T) {
	env := cargoEnv(t)
	runner := cargoRunner(t)
	_, isBwrap := runner.(*sandbox.Bwrap)
	crates := []*testCrate{
		newCrate(t, "foo", "pub fn hi() -> &'static str { \"foo\" }\n"),
		newCrate(t, "bar", "pub fn hi() -> String { format!(\"bar{}\", std::env::args().count()) }\n"),
		newCrate(t, "baz", "pub fn hi() -> &'static str { if std::env::args().count() > 9 { panic!(\"baz\") } \"baz\" }\n"),
	}
	url, downloads := sparseRegistry(t, crates)
	proj := filepath.Join(t.TempDir(), "app")
	registryApp(t, proj, url, crates, "")
	c, err := depcache.Open(filepath.Join(t.TempDir(), "depcache"), 1<<30, nil)
	if err != nil {
		t.Fatal(err)
	}

	cold := mustBuild(t, buildApp(t, runner, env, c, proj, ""))
	if !strings.Contains(cold.log, "Fetch: 0 crate(s) from the shared dependency cache, 3 downloaded; 3 entries added") {
		t.Fatalf("cold build log:\n%s", cold.log)
	}
	if n := downloads.Load(); n != 3 {
		t.Fatalf("cold build downloaded %d crates", n)
	}
	if _, n := c.Usage(); n != 4 { // three crates and the registry's directory name
		t.Fatalf("cache has %d entries after the cold build", n)
	}
	if isBwrap && len(cold.res.Statement.Predicate.BuildDefinition.InternalParameters.FetchHosts) == 0 {
		t.Fatal("the cold build's provenance names no fetch host")
	}

	jobCache := filepath.Join(t.TempDir(), "cache") // kept, with its links
	warm := mustBuild(t, buildApp(t, runner, env, c, proj, jobCache))
	t.Logf("fetch phase: cold %v, warm %v", cold.fetch, warm.fetch)
	if n, _ := strconv.Atoi(os.Getenv("KETTLE_CARGOCACHE_BENCH")); n > 0 {
		defer benchFetch(t, n, runner, env, proj) // after the counting checks
	}
	if !strings.Contains(warm.log, "Fetch: 3 crate(s) from the shared dependency cache, 0 downloaded\n") ||
		!strings.Contains(warm.log, "Fetch contacted: no host") || strings.Contains(warm.log, "Downloaded") || strings.Contains(warm.log, "Updating") {
		t.Fatalf("warm build log:\n%s", warm.log)
	}
	if n := downloads.Load(); n != 3 {
		t.Fatalf("warm build downloaded %d crates", n-3)
	}
	if hosts := warm.res.Statement.Predicate.BuildDefinition.InternalParameters.FetchHosts; len(hosts) != 0 {
		t.Fatalf("warm build contacted %v", hosts)
	}
	if a, b := stable(cold.prov), stable(warm.prov); a != b {
		t.Fatalf("provenance differs between cold and warm builds:\n%s\n%s", a, b)
	}
	if fmt.Sprint(cold.res.Artifacts) != fmt.Sprint(warm.res.Artifacts) {
		t.Fatalf("binaries differ: %v vs %v", cold.res.Artifacts, warm.res.Artifacts)
	}
	if out, err := exec.Command(filepath.Join(warm.res.OutDir, "artifacts", "app")).Output(); err != nil || string(out) != "foo bar1 baz\n" {
		t.Fatalf("warm app printed %q (%v)", out, err)
	}

	entry := func(name string) string {
		for _, cr := range crates {
			if cr.name == name {
				l := c.NewLease()
				defer l.Release()
				d, ok := c.Get(depcache.Key{Kind: cargo.KindCrate, Digest: cr.sum}, l)
				if !ok {
					t.Fatalf("%s is not in the cache", name)
				}
				return d
			}
		}
		panic(name)
	}
	// warmAgain: the next job takes every crate from the cache and builds
	// the honest result.
	warmAgain := func(t *testing.T) {
		t.Helper()
		b := mustBuild(t, buildApp(t, runner, env, c, proj, ""))
		if !strings.Contains(b.log, "3 crate(s) from the shared dependency cache, 0 downloaded") {
			t.Fatalf("the cache was damaged (refetched):\n%s", b.log)
		}
		if stable(b.prov) != stable(cold.prov) || fmt.Sprint(b.res.Artifacts) != fmt.Sprint(cold.res.Artifacts) {
			t.Fatal("result differs from the honest build")
		}
	}

	if isBwrap {
		t.Run("sandbox-writes", func(t *testing.T) {
			link := filepath.Join(jobCache, "cargo-home", "registry", "src")
			ents, err := os.ReadDir(link)
			if err != nil || len(ents) != 1 {
				t.Fatalf("job cache has no registry directory: %v", err)
			}
			link = filepath.Join(link, ents[0].Name(), "foo-0.1.0")
			if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
				t.Fatalf("job cache has no link to the entry: %v", err)
			}
			e := entry("foo")
			attack := strings.Join([]string{
				"echo evil > " + link + "/src/lib.rs",
				"echo evil > " + link + "/src/new.rs",
				"echo '{\"files\":{},\"package\":\"00\"}' > " + link + "/.cargo-checksum.json",
				"chmod 666 " + link + "/src/lib.rs",
				"rm -f " + e + "/pkg/Cargo.toml",
				"echo evil > " + e + "/crate",
				"mv " + e + " " + e + ".x",
				"ln -s /tmp " + e + "/x",
				"touch " + c.EntriesDir() + "/new",
				"echo done",
			}, "; ")
			for _, shape := range []struct {
				name string
				cmd  sandbox.Cmd
			}{
				{"fetch", sandbox.Cmd{Writable: []string{filepath.Join(jobCache, "cargo-home")}, ReadOnly: []string{c.EntriesDir()}, Network: true}},
				{"build", sandbox.Cmd{ReadOnly: []string{jobCache, c.EntriesDir()}}},
			} {
				cmd := shape.cmd
				var out bytes.Buffer
				cmd.Args, cmd.Dir, cmd.Env, cmd.Output = []string{"sh", "-c", attack}, t.TempDir(), env, &out
				if err := runner.Run(t.Context(), &cmd); err != nil {
					t.Fatalf("%s: %v\n%s", shape.name, err, out.String())
				}
				if n := strings.Count(out.String(), "Read-only file system"); n < 9 || !strings.Contains(out.String(), "done") {
					t.Errorf("%s sandbox: not every write was refused as read-only:\n%s", shape.name, out.String())
				}
			}
			warmAgain(t)
		})
		t.Run("build-script", func(t *testing.T) {
			// The project's build.rs is told the host paths of the cache,
			// of an entry and of the job's link to it, and tries to write
			// them all; the build must succeed (it ignores the errors).
			e := entry("foo")
			var rs strings.Builder
			rs.WriteString("use std::fs;\nfn say(what: &str, r: std::io::Result<()>) { println!(\"cargo::warning=ATTEMPT {}: {:?}\", what, r.err().map(|e| e.kind())); }\nfn main() {\n")
			for _, p := range []string{e + "/pkg/src/lib.rs", e + "/pkg/.cargo-checksum.json", e + "/crate", c.EntriesDir() + "/planted", c.Dir() + "/records/planted"} {
				fmt.Fprintf(&rs, "    say(\"write\", fs::write(%q, \"evil\"));\n", p)
			}
			fmt.Fprintf(&rs, "    say(\"rmdir\", fs::remove_dir_all(%q));\n", e)
			fmt.Fprintf(&rs, "    say(\"rename\", fs::rename(%q, %q));\n", e, e+".x")
			rs.WriteString("    for d in fs::read_dir(std::env::var(\"CARGO_HOME\").unwrap_or_default() + \"/registry/src\").into_iter().flatten().flatten() {\n")
			rs.WriteString("        for p in fs::read_dir(d.path()).into_iter().flatten().flatten() { say(\"link\", fs::write(p.path().join(\"src/lib.rs\"), \"evil\")); }\n    }\n}\n")
			hostile := filepath.Join(t.TempDir(), "app")
			registryApp(t, hostile, url, crates, rs.String())
			b := mustBuild(t, buildApp(t, runner, env, c, hostile, ""))
			if !strings.Contains(b.log, "3 crate(s) from the shared dependency cache, 0 downloaded") {
				t.Fatalf("hostile build log:\n%s", b.log)
			}
			if n := strings.Count(b.log, "ATTEMPT "); n < 7 || strings.Count(b.log, ": None") > 0 {
				t.Fatalf("the build script's attempts (want each refused):\n%s", b.log)
			}
			if _, err := os.Lstat(filepath.Join(c.EntriesDir(), "planted")); err == nil {
				t.Fatal("the build script planted a file in the cache")
			}
			warmAgain(t)
		})
	}

	for _, tc := range []struct {
		name   string
		poison func(t *testing.T)
	}{
		{"bytes-changed", func(t *testing.T) {
			p := filepath.Join(entry("foo"), "pkg", "src", "lib.rs")
			os.Chmod(p, 0o644)
			if err := os.WriteFile(p, []byte("pub fn hi() -> &'static str { \"EVIL\" }\n"), 0o444); err != nil {
				t.Fatal(err)
			}
		}},
		{"symlink-planted", func(t *testing.T) {
			p := filepath.Join(entry("bar"), "pkg", "src", "lib.rs")
			os.Remove(p)
			if err := os.Symlink("/etc/passwd", p); err != nil {
				t.Fatal(err)
			}
		}},
		{"hardlink-planted", func(t *testing.T) {
			if err := os.Link(filepath.Join(entry("baz"), "crate"), filepath.Join(t.TempDir(), "writable-name")); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.poison(t)
			before := downloads.Load()
			b := mustBuild(t, buildApp(t, runner, env, c, proj, ""))
			// The other two crates are not downloaded again: cargo's
			// download cache is seeded with their verified .crate.
			if !strings.Contains(b.log, "Fetch: 2 crate(s) from the shared dependency cache, 1 downloaded; 1 entries added") {
				t.Fatalf("poisoned entry was not refused:\n%s", b.log)
			}
			if n := downloads.Load() - before; n != 1 {
				t.Fatalf("%d crates downloaded, want the poisoned one", n)
			}
			if stable(b.prov) != stable(cold.prov) || fmt.Sprint(b.res.Artifacts) != fmt.Sprint(cold.res.Artifacts) {
				t.Fatal("result differs from the honest build")
			}
			warmAgain(t) // the refill is what the next case finds
		})
	}

	t.Run("checksum-mismatch", func(t *testing.T) {
		// The registry serves other bytes for qux than Cargo.lock pins.
		honest := newCrate(t, "qux", "pub fn hi() -> &'static str { \"qux\" }\n")
		evil := newCrate(t, "qux", "pub fn hi() -> &'static str { \"evil\" }\n")
		evil.sum = honest.sum
		url, _ := sparseRegistry(t, []*testCrate{evil})
		p := filepath.Join(t.TempDir(), "app")
		registryApp(t, p, url, []*testCrate{honest}, "")
		b := buildApp(t, runner, env, c, p, "")
		if b.err == nil || failure.KindOf(b.err) != failure.DependencyFetchFailed {
			t.Fatalf("err %v, want %s\n%s", b.err, failure.DependencyFetchFailed, b.log)
		}
		if c.Has(depcache.Key{Kind: cargo.KindCrate, Digest: honest.sum}) {
			t.Fatal("a crate that does not match Cargo.lock entered the cache")
		}
	})

	t.Run("git-dependency", func(t *testing.T) {
		// A git dependency is not cached: the fetch runs for it, with the
		// registry crates read from the cache (a directory source), and
		// kettle checks their links afterwards. No sandbox: the local
		// repository is not mounted in the fetch sandbox.
		none := sandbox.NewNone()
		dep := filepath.Join(t.TempDir(), "dep")
		writeFile(t, filepath.Join(dep, "Cargo.toml"), "[package]\nname = \"dep\"\nversion = \"0.1.0\"\nedition = \"2021\"\n")
		writeFile(t, filepath.Join(dep, "src", "lib.rs"), "pub fn hi() -> &'static str { \"dep\" }\n")
		for _, args := range [][]string{{"init", "-q"}, {"add", "-A"}, {"-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "dep"}} {
			cmd := exec.Command("git", args...)
			cmd.Dir = dep
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Skipf("git: %v %s", err, out)
			}
		}
		p := filepath.Join(t.TempDir(), "app")
		registryApp(t, p, url, crates, "")
		writeFile(t, filepath.Join(p, "Cargo.toml"), "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nfoo = \"0.1\"\nbar = \"0.1\"\nbaz = \"0.1\"\ndep = { git = \"file://"+dep+"\" }\n")
		writeFile(t, filepath.Join(p, "src", "main.rs"), "fn main() { println!(\"{} {} {} {}\", foo::hi(), bar::hi(), baz::hi(), dep::hi()); }\n")
		// Resolved against the loopback registry (the project's config).
		os.Remove(filepath.Join(p, "Cargo.lock"))
		gen := exec.Command("cargo", "generate-lockfile")
		gen.Dir, gen.Env = p, append(env, "CARGO_HOME="+filepath.Join(t.TempDir(), "home"))
		if out, err := gen.CombinedOutput(); err != nil {
			t.Fatalf("generate-lockfile: %v\n%s", err, out)
		}
		before := downloads.Load()
		withCache := mustBuild(t, buildApp(t, none, env, c, p, ""))
		if !strings.Contains(withCache.log, "Fetch: 3 crate(s) from the shared dependency cache, 0 downloaded; 0 entries added") {
			t.Fatalf("build log:\n%s", withCache.log)
		}
		if n := downloads.Load() - before; n != 0 {
			t.Fatalf("%d crates downloaded", n)
		}
		without := mustBuild(t, buildApp(t, none, env, nil, p, ""))
		if stable(withCache.prov) != stable(without.prov) || fmt.Sprint(withCache.res.Artifacts) != fmt.Sprint(without.res.Artifacts) {
			t.Fatal("the build with the cache differs from the one without")
		}
	})

	t.Run("no-registry-packages", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "tiny")
		writeFile(t, filepath.Join(p, "Cargo.toml"), "[package]\nname = \"tiny\"\nversion = \"0.1.0\"\nedition = \"2021\"\n")
		writeFile(t, filepath.Join(p, "src", "main.rs"), "fn main() {}\n")
		writeFile(t, filepath.Join(p, "Cargo.lock"), "version = 3\n\n[[package]]\nname = \"tiny\"\nversion = \"0.1.0\"\n")
		b := mustBuild(t, buildApp(t, runner, env, c, p, ""))
		if !strings.Contains(b.log, "Fetch: 0 crate(s) from the shared dependency cache, 0 downloaded\n") || !strings.Contains(b.log, "Fetch contacted: no host") {
			t.Fatalf("tiny build log:\n%s", b.log)
		}
		t.Logf("tiny project: fetch phase %v", b.fetch)
	})
}

// benchFetch alternates n cold builds (each with an empty shared cache) and
// n warm ones of the project and logs the fetch phase's medians
// (KETTLE_CARGOCACHE_BENCH=n; docs/benchmarks.md).
func benchFetch(t *testing.T, n int, runner sandbox.Runner, env []string, proj string) {
	var cold, warm []time.Duration
	for range n {
		c, err := depcache.Open(filepath.Join(t.TempDir(), "depcache"), 1<<30, nil)
		if err != nil {
			t.Fatal(err)
		}
		cold = append(cold, mustBuild(t, buildApp(t, runner, env, c, proj, "")).fetch)
		warm = append(warm, mustBuild(t, buildApp(t, runner, env, c, proj, "")).fetch)
	}
	slices.Sort(cold)
	slices.Sort(warm)
	t.Logf("fetch phase medians over %d alternated runs: cold %v, warm %v (min %v / %v)", n, cold[n/2], warm[n/2], cold[0], warm[0])
}
