package pnpm_test

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
	"github.com/kettle-build/kettle/internal/testenv"
	"github.com/kettle-build/kettle/pipeline"
	"github.com/kettle-build/kettle/sandbox"
	"github.com/kettle-build/kettle/toolchain/pnpm"
)

const (
	msIntegrity    = "sha512-6FlzubTLZG3J2a/NVCAleEhjzq5oxgHyaCU9yYXvcLsvoVaHJq/s5xXI6/XXP6tz7R9xAOtHnSO/tXtF3WRTlA=="
	typesIntegrity = "sha512-GsCCIZDE/p3i96vtEqx+7dBUGXrc7zeSK3wwPHIaRThS+9OhWIXRqzs4d6k1SVU8g91DrNRWxWUGhp5KXQb2VA=="
)

// depBuild is one pipeline.RunDir of a pnpm project with a shared cache.
type depBuild struct {
	res   *pipeline.Result
	dir   string
	log   string
	prov  map[string]any
	err   error
	fetch time.Duration // the fetch phase
}

// buildWithCache builds a copy of the committed project src with the
// shared cache c (nil: none); cacheDir "" is a fresh job cache.
func buildWithCache(t *testing.T, runner sandbox.Runner, c *depcache.Cache, src, cacheDir string) depBuild {
	t.Helper()
	b := runBuild(t, runner, c, src, cacheDir)
	if b.err != nil {
		t.Fatalf("Run: %v (%s: %s)\n%s", b.err, failure.KindOf(b.err), failure.Message(b.err), b.log)
	}
	return b
}

func runBuild(t *testing.T, runner sandbox.Runner, c *depcache.Cache, src, cacheDir string) depBuild {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pnpm-hello")
	if err := exec.Command("cp", "-a", src, dir).Run(); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	var fetch time.Duration
	opts := pipeline.Options{
		Dir: dir, Runner: runner, CacheDir: cacheDir,
		Env: append(pipeline.DefaultEnv(), "npm_config_fetch_retries=0"),
		Events: events.SinkFunc(func(e events.Event) {
			if e.Phase != nil && e.Phase.Name == events.PhaseFetch {
				fetch = e.Phase.Duration
			}
			log.WriteString(e.Msg + "\n")
		}),
	}
	if c != nil {
		opts.DepCache = c
	}
	res, err := pipeline.RunDir(context.Background(), opts)
	b := depBuild{res: res, dir: dir, log: log.String(), err: err, fetch: fetch}
	if err == nil {
		if err := json.Unmarshal(res.Provenance, &b.prov); err != nil {
			t.Fatal(err)
		}
	}
	return b
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

// modulesTree lists node_modules (names, link targets, file sizes) minus
// .modules.yaml's per-install fields: what the install made.
func modulesTree(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	root := filepath.Join(dir, "node_modules")
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		switch {
		case rel == ".modules.yaml" || rel == ".pnpm/lock.yaml":
			return nil
		case fi.Mode()&os.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			fmt.Fprintf(&b, "%s -> %s\n", rel, target)
		case fi.Mode().IsRegular():
			data, _ := os.ReadFile(p)
			fmt.Fprintf(&b, "%s %o %x\n", rel, fi.Mode().Perm(), data)
		default:
			fmt.Fprintf(&b, "%s/\n", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func committed(t *testing.T, edit func(dir string)) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pnpm-hello")
	if err := exec.Command("cp", "-a", filepath.Join("..", "..", "testdata", "projects", "pnpm-hello"), dir).Run(); err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(dir)
	}
	src := filepath.Join(t.TempDir(), "src")
	gitProject(t, dir, src)
	return src
}

// TestPnpmSharedDepCache: with a shared dependency cache, the first build of
// pnpm-hello downloads its two packages through kettle's mirror and fills
// the cache with the tarballs kettle hashed itself; a second build of the
// same pnpm-lock.yaml in another job takes both from the cache, runs the
// fetch without network and contacts no host, and its provenance, dist/
// and node_modules are identical (apart from per-job fields and the fetch
// hosts), also to a build without the cache. Then: poisoned entries
// (bytes changed, symlink, hard link) are refused and refetched with the
// result unchanged; a build script told the cache's host path cannot
// write it, nor can the fetch sandbox. (A download that does not match
// its integrity never entering the cache: TestFillVerifiesIntegrity.)
func TestPnpmSharedDepCache(t *testing.T) {
	for _, tool := range []string{"pnpm", "node", "git"} {
		testenv.NeedTool(t, tool)
	}
	testenv.NeedReachable(t, "https://registry.npmjs.org/ms")
	runner, err := sandbox.New("bwrap")
	if err != nil {
		testenv.Need(t, !testenv.CI(), fmt.Sprintf("bubblewrap is unavailable: %v", err))
		runner = sandbox.NewNone()
	}
	c, err := depcache.Open(filepath.Join(t.TempDir(), "depcache"), 1<<30, nil)
	if err != nil {
		t.Fatal(err)
	}
	hello := committed(t, nil)

	bare := buildWithCache(t, runner, nil, hello, "")
	cold := buildWithCache(t, runner, c, hello, "")
	if !strings.Contains(cold.log, "Fetch: 0 package(s) from the shared dependency cache, 2 downloaded; 2 entries added to the cache") ||
		!strings.Contains(cold.log, "Fetch contacted: registry.npmjs.org:443") && runner.Name() == "bwrap" {
		t.Fatalf("cold build log:\n%s", cold.log)
	}
	if _, n := c.Usage(); n != 3 { // two tarballs and the fetch plan
		t.Fatalf("cache has %d entries after the cold build", n)
	}

	jobCache := t.TempDir()
	warm := buildWithCache(t, runner, c, hello, jobCache)
	t.Logf("fetch phase: no cache %v, cold %v, warm %v", bare.fetch, cold.fetch, warm.fetch)
	if !strings.Contains(warm.log, "Fetch: 2 package(s) from the shared dependency cache, 0 downloaded") ||
		!strings.Contains(warm.log, "Fetch contacted: no host") {
		t.Fatalf("warm build log:\n%s", warm.log)
	}
	if hosts := warm.res.Statement.Predicate.BuildDefinition.InternalParameters.FetchHosts; len(hosts) != 0 {
		t.Fatalf("warm build contacted %v", hosts)
	}
	for _, b := range []depBuild{bare, warm} {
		if a, b := stable(cold.prov), stable(b.prov); a != b {
			t.Fatalf("provenance differs:\n%s\n%s", a, b)
		}
		if fmt.Sprint(cold.res.Artifacts) != fmt.Sprint(b.res.Artifacts) {
			t.Fatalf("artifacts differ: %v vs %v", cold.res.Artifacts, b.res.Artifacts)
		}
		if a, b := modulesTree(t, cold.dir), modulesTree(t, b.dir); a != b {
			t.Fatalf("node_modules differs:\n%s\n%s", a, b)
		}
	}
	same := func(t *testing.T, b depBuild) {
		t.Helper()
		if stable(b.prov) != stable(cold.prov) || fmt.Sprint(b.res.Artifacts) != fmt.Sprint(cold.res.Artifacts) {
			t.Fatal("result differs from the honest build")
		}
	}

	msEntry := func() string {
		l := c.NewLease()
		defer l.Release()
		d, ok := c.Get(depcache.Key{Kind: pnpm.KindTarball, Digest: msIntegrity}, l)
		if !ok {
			t.Fatal("ms is not in the cache")
		}
		return filepath.Join(d, pnpm.TarballFile)
	}
	if runner.Name() == "bwrap" {
		t.Run("sandbox-writes", func(t *testing.T) {
			fetchSandboxWrites(t, runner, c, jobCache, msEntry())
			buildScriptWrites(t, runner, c, msEntry())
			same(t, mustWarm(t, runner, c, hello))
		})
	}
	for _, tc := range []struct {
		name   string
		poison func(t *testing.T, p string)
	}{
		{"bytes-changed", func(t *testing.T, p string) {
			os.Chmod(p, 0o644)
			b, _ := os.ReadFile(p)
			b[len(b)/2] ^= 1
			if err := os.WriteFile(p, b, 0o444); err != nil {
				t.Fatal(err)
			}
		}},
		{"symlink-planted", func(t *testing.T, p string) {
			os.Remove(p)
			if err := os.Symlink("/etc/passwd", p); err != nil {
				t.Fatal(err)
			}
		}},
		{"hardlink-planted", func(t *testing.T, p string) {
			if err := os.Link(p, filepath.Join(t.TempDir(), "writable-name")); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.poison(t, msEntry())
			b := buildWithCache(t, runner, c, hello, "")
			if !strings.Contains(b.log, "Fetch: 1 package(s) from the shared dependency cache, 1 downloaded; 1 entries added to the cache") {
				t.Fatalf("poisoned entry was not refused:\n%s", b.log)
			}
			same(t, b)
		})
	}

}

func mustWarm(t *testing.T, runner sandbox.Runner, c *depcache.Cache, src string) depBuild {
	t.Helper()
	b := buildWithCache(t, runner, c, src, "")
	if !strings.Contains(b.log, "Fetch: 2 package(s) from the shared dependency cache, 0 downloaded") {
		t.Fatalf("the cache was damaged (refetched):\n%s", b.log)
	}
	return b
}

// cacheAttack is shell that tries every kind of write on the cache.
func cacheAttack(c *depcache.Cache, entryFile string) string {
	entry := filepath.Dir(entryFile)
	return strings.Join([]string{
		"echo evil > " + entryFile,
		"echo evil >> " + entryFile,
		"chmod 666 " + entryFile,
		"rm -f " + entryFile,
		"mv " + entry + " " + entry + ".x",
		"ln -s /etc/passwd " + entry + "/x",
		"touch " + c.EntriesDir() + "/new",
		"touch " + filepath.Join(c.Dir(), "records", "new"),
		"echo done",
	}, "; ")
}

// fetchSandboxWrites: a command in the fetch sandbox's shape (the job's
// cache writable, the cache's entries read-only, as the mirror and pnpm
// fetch run) cannot write the shared cache.
func fetchSandboxWrites(t *testing.T, runner sandbox.Runner, c *depcache.Cache, jobCache, entryFile string) {
	var out bytes.Buffer
	cmd := sandbox.Cmd{
		Args: []string{"sh", "-c", cacheAttack(c, entryFile)}, Dir: t.TempDir(), Env: pipeline.DefaultEnv(), Output: &out,
		Writable: []string{jobCache}, ReadOnly: []string{c.EntriesDir()}, Network: true,
	}
	if err := runner.Run(context.Background(), &cmd); err != nil {
		t.Fatalf("fetch shape: %v\n%s", err, out.String())
	}
	if n := strings.Count(out.String(), "Read-only file system"); n < 6 || !strings.Contains(out.String(), "done") {
		t.Errorf("fetch sandbox: not every write was refused as read-only:\n%s", out.String())
	}
}

// buildScriptWrites: the project's build script (attacker code, run by
// `pnpm build`) is told the host paths of the cache and of an entry and
// tries to write, replace and add files there; every attempt fails (the
// build sandbox does not see the cache at all).
func buildScriptWrites(t *testing.T, runner sandbox.Runner, c *depcache.Cache, entryFile string) {
	attacker := committed(t, func(dir string) {
		script := "const { execSync } = require('child_process');\n" +
			"const fs = require('fs');\n" +
			"let out = '';\n" +
			"try { out = execSync(" + fmt.Sprintf("%q", "("+cacheAttack(c, entryFile)+") 2>&1") + ", { encoding: 'utf8', shell: '/bin/sh' }); } catch (e) { out = String(e.stdout) + String(e); }\n" +
			"for (const p of [" + fmt.Sprintf("%q, %q, %q", entryFile, c.Dir(), c.EntriesDir()) + "]) { try { fs.writeFileSync(p, 'evil'); out += 'WROTE ' + p + '\\n'; } catch (e) { out += e.code + '\\n'; } }\n" +
			"fs.mkdirSync('dist', { recursive: true });\n" +
			"fs.writeFileSync('dist/attack.txt', out);\n"
		if err := os.WriteFile(filepath.Join(dir, "build.js"), []byte(script), 0o644); err != nil {
			t.Fatal(err)
		}
	})
	b := buildWithCache(t, runner, c, attacker, "")
	got, err := os.ReadFile(filepath.Join(b.dir, "dist", "attack.txt"))
	if err != nil {
		t.Fatalf("the attack left no report: %v\n%s", err, b.log)
	}
	t.Logf("attack report:\n%s", got)
	if bytes.Contains(got, []byte("WROTE")) || !bytes.Contains(got, []byte("done")) ||
		bytes.Count(got, []byte("No such file or directory"))+bytes.Count(got, []byte("nonexistent"))+bytes.Count(got, []byte("Read-only file system")) < 6 {
		t.Fatalf("a build script wrote the cache:\n%s", got)
	}
}

// TestPnpmDepCacheFigures measures the fetch phase of a project
// (KETTLE_PNPM_BENCH_PROJECT: a git directory of a pnpm project) without
// the shared cache, cold (empty cache) and warm, alternating for
// KETTLE_PNPM_BENCH_RUNS rounds (default 3), and prints the medians
// (docs/benchmarks.md).
func TestPnpmDepCacheFigures(t *testing.T) {
	src := os.Getenv("KETTLE_PNPM_BENCH_PROJECT")
	if src == "" {
		t.Skip("set KETTLE_PNPM_BENCH_PROJECT to a committed pnpm project")
	}
	runs := 3
	fmt.Sscan(os.Getenv("KETTLE_PNPM_BENCH_RUNS"), &runs)
	runner, err := sandbox.New("bwrap")
	if err != nil {
		t.Skip(err)
	}
	var none, cold, warm []time.Duration
	for range runs {
		c, err := depcache.Open(filepath.Join(t.TempDir(), "depcache"), 4<<30, nil)
		if err != nil {
			t.Fatal(err)
		}
		none = append(none, buildWithCache(t, runner, nil, src, "").fetch)
		cb := buildWithCache(t, runner, c, src, "")
		wb := buildWithCache(t, runner, c, src, "")
		if !strings.Contains(wb.log, "Fetch contacted: no host") || stable(cb.prov) != stable(wb.prov) {
			t.Fatalf("warm build was not offline or differs:\n%s", wb.log)
		}
		cold, warm = append(cold, cb.fetch), append(warm, wb.fetch)
	}
	med := func(d []time.Duration) time.Duration {
		s := append([]time.Duration(nil), d...)
		for i := range s {
			for j := i + 1; j < len(s); j++ {
				if s[j] < s[i] {
					s[i], s[j] = s[j], s[i]
				}
			}
		}
		return s[len(s)/2]
	}
	t.Logf("fetch phase medians of %d: no cache %v, cold %v, warm %v (runs %v / %v / %v)", runs, med(none), med(cold), med(warm), none, cold, warm)
}
