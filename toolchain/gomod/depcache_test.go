package gomod_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kettle-build/kettle/depcache"
	"github.com/kettle-build/kettle/events"
	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/internal/rmtree"
	"github.com/kettle-build/kettle/internal/testenv"
	"github.com/kettle-build/kettle/pipeline"
	"github.com/kettle-build/kettle/sandbox"
	"github.com/kettle-build/kettle/toolchain"
	"github.com/kettle-build/kettle/toolchain/gomod"
)

// depBuild is one pipeline.RunDir of go-hello with a shared cache.
type depBuild struct {
	res  *pipeline.Result
	log  string
	prov map[string]any
}

func buildWithCache(t *testing.T, runner sandbox.Runner, c *depcache.Cache, cacheDir string, edits ...func(dir string)) depBuild {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "go-hello")
	if err := exec.Command("cp", "-a", helloCommit(t), dir).Run(); err != nil {
		t.Fatal(err)
	}
	for _, edit := range edits {
		edit(dir)
		if out, err := exec.Command("git", "-C", dir, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qam", "edit").CombinedOutput(); err != nil {
			t.Fatalf("git commit: %v\n%s", err, out)
		}
	}
	var log strings.Builder
	res, err := pipeline.RunDir(context.Background(), pipeline.Options{
		Dir: dir, Runner: runner, Env: env(), DepCache: c, CacheDir: cacheDir,
		Events: events.SinkFunc(func(e events.Event) { log.WriteString(e.Msg + "\n") }),
	})
	if err != nil {
		t.Fatalf("Run: %v (%s: %s)\n%s", err, failure.KindOf(err), failure.Message(err), log.String())
	}
	var prov map[string]any
	if err := json.Unmarshal(res.Provenance, &prov); err != nil {
		t.Fatal(err)
	}
	return depBuild{res: res, log: log.String(), prov: prov}
}

var helloDir, helloRoot string

// TestMain removes the shared go-hello commit: nothing may stay in TMPDIR.
func TestMain(m *testing.M) {
	code := m.Run()
	if helloRoot != "" {
		os.RemoveAll(helloRoot)
	}
	os.Exit(code)
}

// helloCommit is go-hello committed once: every job builds the same commit.
func helloCommit(t *testing.T) string {
	if helloDir == "" {
		d, err := os.MkdirTemp("", "kettle-go-hello-")
		if err != nil {
			t.Fatal(err)
		}
		helloRoot = d
		helloDir = filepath.Join(d, "go-hello")
		gitProject(t, filepath.Join("..", "..", "testdata", "projects", "go-hello"), helloDir)
	}
	return helloDir
}

// stable returns the provenance without the fields that differ per job
// (invocation id, times) and the fetch hosts (a warm build contacts none).
func stable(p map[string]any) string {
	pred := p["predicate"].(map[string]any)
	rd := pred["runDetails"].(map[string]any)
	delete(rd, "metadata")
	ip := pred["buildDefinition"].(map[string]any)["internalParameters"].(map[string]any)
	delete(ip, "fetchHosts")
	b, _ := json.Marshal(p)
	return string(b)
}

// TestGoSharedDepCache: with a shared dependency cache, the first build of
// go-hello downloads its module and fills the cache; a second build of the
// same go.mod/go.sum in another job takes everything from the cache, runs
// no fetch command and contacts no host, and its provenance and binaries
// are byte-identical apart from the per-job fields and the fetch hosts.
// Then poisoned entries: bytes changed on disk under the digest key, a
// symlink and a hard link planted in an entry: each is detected, the
// module downloaded again, and the build's result unchanged.
func TestGoSharedDepCache(t *testing.T) {
	for _, tool := range []string{"go", "git"} {
		testenv.NeedTool(t, tool)
	}
	testenv.NeedReachable(t, "https://proxy.golang.org/github.com/google/uuid/@v/v1.6.0.info")
	runner := bwrapOrNone(t)
	c, err := depcache.Open(filepath.Join(t.TempDir(), "depcache"), 1<<30, nil)
	if err != nil {
		t.Fatal(err)
	}

	cold := buildWithCache(t, runner, c, "")
	if !strings.Contains(cold.log, "Fetch: 0 module(s) from the shared dependency cache, 1 downloaded") {
		t.Fatalf("cold build log:\n%s", cold.log)
	}
	if _, n := c.Usage(); n < 3 { // the module, go.mod file(s), the plan
		t.Fatalf("cache has %d entries after the cold build", n)
	}

	t0 := time.Now()
	jobCache := filepath.Join(t.TempDir(), "cache") // kept, with its links
	warm := buildWithCache(t, runner, c, jobCache)
	t.Logf("warm build %v", time.Since(t0))
	if !strings.Contains(warm.log, "Fetch: 1 module(s) and ") || !strings.Contains(warm.log, "from the shared dependency cache, 0 downloaded") ||
		!strings.Contains(warm.log, "Fetch contacted: no host") || strings.Contains(warm.log, "go: downloading") {
		t.Fatalf("warm build log:\n%s", warm.log)
	}
	if hosts := warm.res.Statement.Predicate.BuildDefinition.InternalParameters.FetchHosts; len(hosts) != 0 {
		t.Fatalf("warm build contacted %v", hosts)
	}
	if a, b := stable(cold.prov), stable(warm.prov); a != b {
		t.Fatalf("provenance differs between cold and warm builds:\n%s\n%s", a, b)
	}
	if fmt.Sprint(cold.res.Artifacts) != fmt.Sprint(warm.res.Artifacts) {
		t.Fatalf("artifacts differ: %v vs %v", cold.res.Artifacts, warm.res.Artifacts)
	}

	// Another go.mod (the plan is unknown): the module comes from the
	// cache as a link, go downloads only its zip (checked), and the
	// extracted tree the build uses is the entry.
	t.Run("plan-miss", func(t *testing.T) {
		b := buildWithCache(t, runner, c, "", func(dir string) {
			f, err := os.OpenFile(filepath.Join(dir, "go.mod"), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteString("// another go.mod, the same modules\n")
			f.Close()
		})
		if !strings.Contains(b.log, "Fetch: 1 module(s) from the shared dependency cache, 1 downloaded") {
			t.Fatalf("plan-miss build log:\n%s", b.log)
		}
		if fmt.Sprint(cold.res.Artifacts) != fmt.Sprint(b.res.Artifacts) {
			t.Fatalf("artifacts differ: %v vs %v", cold.res.Artifacts, b.res.Artifacts)
		}
		// Its plan is recorded now: a third job runs no fetch command.
		again := buildWithCache(t, runner, c, "", func(dir string) {
			f, _ := os.OpenFile(filepath.Join(dir, "go.mod"), os.O_APPEND|os.O_WRONLY, 0)
			f.WriteString("// another go.mod, the same modules\n")
			f.Close()
		})
		if !strings.Contains(again.log, "from the shared dependency cache, 0 downloaded") || !strings.Contains(again.log, "Fetch contacted: no host") {
			t.Fatalf("third build log:\n%s", again.log)
		}
	})

	entry := moduleEntry(t, c)
	if _, ok := runner.(*sandbox.Bwrap); ok {
		t.Run("sandbox-writes", func(t *testing.T) { sandboxWrites(t, runner, c, jobCache, entry(), cold) })
	}
	for _, tc := range []struct {
		name   string
		poison func(t *testing.T)
	}{
		{"bytes-changed", func(t *testing.T) {
			p := filepath.Join(entry(), "uuid.go")
			os.Chmod(p, 0o644)
			b, _ := os.ReadFile(p)
			if err := os.WriteFile(p, bytes.Replace(b, []byte("package uuid"), []byte("package uuid // evil"), 1), 0o444); err != nil {
				t.Fatal(err)
			}
		}},
		{"symlink-planted", func(t *testing.T) {
			p := filepath.Join(entry(), "uuid.go")
			os.Remove(p)
			if err := os.Symlink("/etc/passwd", p); err != nil {
				t.Fatal(err)
			}
		}},
		{"hardlink-planted", func(t *testing.T) {
			if err := os.Link(filepath.Join(entry(), "uuid.go"), filepath.Join(t.TempDir(), "writable-name")); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.poison(t)
			b := buildWithCache(t, runner, c, "")
			if !strings.Contains(b.log, "Fetch: 0 module(s) from the shared dependency cache, 1 downloaded") {
				t.Fatalf("poisoned entry was not refused:\n%s", b.log)
			}
			if stable(b.prov) != stable(cold.prov) || fmt.Sprint(b.res.Artifacts) != fmt.Sprint(cold.res.Artifacts) {
				t.Fatal("result differs from the honest build")
			}
			// The refill is what the next case finds (moduleEntry).
		})
	}
	// The plan entry's go.mod copy changed on disk: the plan is refused,
	// the job takes the module and go.mod entries one by one and runs the
	// fetch; the result is the honest one, and the plan is filled again.
	t.Run("plan-bytes-changed", func(t *testing.T) {
		for _, d := range planEntries(t, c) { // go-hello's, and plan-miss's
			p := filepath.Join(d, "download", "github.com", "google", "uuid", "@v", "v1.6.0.mod")
			os.Chmod(p, 0o644)
			if err := os.WriteFile(p, []byte("module github.com/google/uuid\n\nrequire evil.example v1.0.0\n"), 0o444); err != nil {
				t.Fatal(err)
			}
		}
		b := buildWithCache(t, runner, c, "")
		if !strings.Contains(b.log, "Fetch: 1 module(s) from the shared dependency cache, 1 downloaded") {
			t.Fatalf("poisoned plan was not refused:\n%s", b.log)
		}
		if stable(b.prov) != stable(cold.prov) || fmt.Sprint(b.res.Artifacts) != fmt.Sprint(cold.res.Artifacts) {
			t.Fatal("result differs from the honest build")
		}
		again := buildWithCache(t, runner, c, "")
		if !strings.Contains(again.log, "from the shared dependency cache, 0 downloaded") {
			t.Fatalf("plan not refilled:\n%s", again.log)
		}
	})
}

// planEntries finds the plan entries naming uuid.
func planEntries(t *testing.T, c *depcache.Cache) []string {
	ents, _ := os.ReadDir(c.EntriesDir())
	var out []string
	for _, e := range ents {
		d := filepath.Join(c.EntriesDir(), e.Name())
		if b, err := os.ReadFile(filepath.Join(d, "plan")); err == nil && strings.Contains(string(b), "zip github.com/google/uuid v1.6.0") {
			out = append(out, d)
		}
	}
	if len(out) == 0 {
		t.Fatal("no plan entry for go-hello")
	}
	return out
}

// sandboxWrites: the commands of a job, in the fetch sandbox's shape (the
// job's cache writable, the shared entries read-only) and the build
// sandbox's, try to write the shared cache through the links in the job's
// cache and directly; every write is refused, and the next job takes the
// unchanged entry and builds the honest result.
func sandboxWrites(t *testing.T, runner sandbox.Runner, c *depcache.Cache, jobCache, entry string, honest depBuild) {
	link := filepath.Join(jobCache, "gomod", "github.com", "google", "uuid@v1.6.0")
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("job cache has no link to the entry: %v", err)
	}
	dl := filepath.Join(jobCache, "gomod", "cache", "download", "github.com", "google", "uuid", "@v")
	if fi, err := os.Lstat(filepath.Join(jobCache, "gomod", "cache", "download")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("job cache's download tree is not a link to the plan entry: %v", err)
	}
	attack := strings.Join([]string{
		"echo evil > " + link + "/uuid.go",
		"echo evil > " + link + "/init.go",
		"chmod 666 " + link + "/uuid.go",
		"rm -f " + entry + "/uuid.go",
		"mv " + entry + " " + entry + ".x",
		"ln -s /tmp " + entry + "/x",
		"touch " + c.EntriesDir() + "/new",
		// the warm job's cache/download is a link to the plan entry's tree
		"echo evil > " + dl + "/v1.6.0.mod",
		"echo h1:evil > " + dl + "/v1.6.0.ziphash",
		"touch " + dl + "/v1.7.0.mod",
		"echo done",
	}, "; ")
	for _, shape := range []struct {
		name string
		cmd  sandbox.Cmd
	}{
		{"fetch", sandbox.Cmd{Writable: []string{jobCache}, ReadOnly: []string{c.EntriesDir()}, Network: true}},
		{"build", sandbox.Cmd{ReadOnly: []string{jobCache, c.EntriesDir()}}},
	} {
		cmd := shape.cmd
		var out bytes.Buffer
		cmd.Args, cmd.Dir, cmd.Env, cmd.Output = []string{"sh", "-c", attack}, t.TempDir(), env(), &out
		if err := runner.Run(context.Background(), &cmd); err != nil {
			t.Fatalf("%s: %v\n%s", shape.name, err, out.String())
		}
		if n := strings.Count(out.String(), "Read-only file system"); n < 9 || !strings.Contains(out.String(), "done") {
			t.Errorf("%s sandbox: not every write was refused as read-only:\n%s", shape.name, out.String())
		}
	}
	after := buildWithCache(t, runner, c, "")
	if !strings.Contains(after.log, "0 downloaded") {
		t.Fatalf("the entry was damaged (refetched):\n%s", after.log)
	}
	if stable(after.prov) != stable(honest.prov) || fmt.Sprint(after.res.Artifacts) != fmt.Sprint(honest.res.Artifacts) {
		t.Fatal("victim's result changed")
	}
}

// moduleEntry finds uuid's entry directory in the cache (by its key).
func moduleEntry(t *testing.T, c *depcache.Cache) func() string {
	return func() string {
		l := c.NewLease()
		defer l.Release()
		d, ok := c.Get(depcache.Key{Kind: gomod.KindModule, Digest: "NIvaJDMOsjHA8n1jAhLSgzrAzy1Hgr+hNrb57e+94F0="}, l)
		if !ok {
			t.Fatal("uuid is not in the cache")
		}
		return d
	}
}

func bwrapOrNone(t testing.TB) sandbox.Runner {
	runner, err := sandbox.New("bwrap")
	if err != nil {
		testenv.Need(t, !testenv.CI(), fmt.Sprintf("bubblewrap is unavailable: %v", err))
		return sandbox.NewNone()
	}
	return runner
}

// BenchmarkWarmFetch is the fetch phase of a job whose go.mod and go.sum an
// earlier job fetched: everything comes from the shared cache. The project
// is go-hello, or the directory in KETTLE_BENCH_GO_PROJECT (say an
// unzipped github.com/cli/cli/v2, whose go.sum pins 338 modules and 1,869
// go.mod files; docs/benchmarks.md).
func BenchmarkWarmFetch(b *testing.B) {
	testenv.NeedReachable(b, "https://proxy.golang.org/github.com/google/uuid/@v/v1.6.0.info")
	src := os.Getenv("KETTLE_BENCH_GO_PROJECT")
	if src == "" {
		src = filepath.Join("..", "..", "testdata", "projects", "go-hello")
	}
	runner := bwrapOrNone(b)
	cacheDir := os.Getenv("KETTLE_BENCH_DEPCACHE") // kept between runs when set
	if cacheDir == "" {
		cacheDir = filepath.Join(b.TempDir(), "depcache")
	}
	c, err := depcache.Open(cacheDir, 8<<30, nil)
	if err != nil {
		b.Fatal(err)
	}
	fetch := func() time.Duration {
		dir := filepath.Join(b.TempDir(), "p")
		if err := exec.Command("cp", "-a", src, dir).Run(); err != nil {
			b.Fatal(err)
		}
		w := &toolchain.Workspace{Dir: dir, CacheDir: b.TempDir(), Runner: runner, Env: env(), DepCache: c, DepLease: c.NewLease(), Log: func(l string) {
			if os.Getenv("KETTLE_BENCH_VERBOSE") != "" {
				fmt.Println(time.Now().Format("15:04:05.000"), l)
			}
		}}
		defer w.DepLease.Release()
		d := gomod.New()
		if _, err := toolchain.Plan(context.Background(), d, w); err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		if err := d.Fetch(context.Background(), w); err != nil {
			b.Fatalf("fetch: %v (%s)", err, failure.Message(err))
		}
		el := time.Since(t0)
		rmtree.RemoveAll(w.CacheDir) // read-only module trees
		return el
	}
	b.Logf("first fetch %v", fetch())
	var total time.Duration
	for b.Loop() {
		total += fetch()
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N)/1e3, "fetch-ms")
}
