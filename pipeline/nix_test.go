package pipeline

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kettle-build/kettle/events"
	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/internal/testenv"
	"github.com/kettle-build/kettle/provenance"
	"github.com/kettle-build/kettle/sandbox"
	"github.com/kettle-build/kettle/toolchain"
)

// TestNixFlake builds the flake (a fixed-output derivation, a path: input,
// builders /bin/sh) twice from two directories.
func TestNixFlake(t *testing.T) {
	env := toolEnv(t)
	needNix(t, env)
	runner := bwrapRunner(t)
	base := t.TempDir()
	dirA := filepath.Join(base, "a", "flake")
	dirB := filepath.Join(base, "b", "other", "flake")
	commit := gitProject(t, "nix-flake", dirA)
	gitProject(t, "nix-flake", dirB)

	before := hostStore(t)
	var results []*Result
	var rec *recorder
	var caches []string
	for i, dir := range []string{dirA, dirB} {
		rec = &recorder{}
		cache := filepath.Join(base, fmt.Sprint("cache", i))
		caches = append(caches, cache)
		res, err := RunDir(t.Context(), Options{Dir: dir, Runner: runner, Env: env, Events: rec, CacheDir: cache})
		if err != nil {
			t.Fatalf("Run: %v (%s)\nevents: %v", err, failure.KindOf(err), rec.ev)
		}
		results = append(results, res)
	}
	res := results[0]
	st := res.Statement
	bd := st.Predicate.BuildDefinition
	if bd.BuildType != DefaultBuildTypeBase+"nix@v1" || bd.ExternalParameters.Source.Digest["gitCommit"] != commit {
		t.Errorf("buildType %s source %+v", bd.BuildType, bd.ExternalParameters.Source)
	}
	ip := bd.InternalParameters
	if ip.Evaluation == nil || ip.Evaluation.DerivationCount != 2 || ip.Evaluation.FetchCount != 1 {
		t.Errorf("evaluation %+v", ip.Evaluation)
	}
	if len(ip.FlakeInputs) != 1 || ip.FlakeInputs[0].Name != "greeting" || !strings.HasPrefix(ip.FlakeInputs[0].NarHash, "sha256-") {
		t.Errorf("flakeInputs %+v", ip.FlakeInputs)
	}
	if len(ip.Toolchain) != 2 || ip.Toolchain[0].Name != "nix" || ip.Toolchain[1].Name != "kettle" {
		t.Errorf("toolchain %+v", ip.Toolchain)
	}
	const fodHash = "65AafoUx3/XpH8FUdq852HFgHXK8zU1gNrJTlQ0rFo0="
	deps := bd.ResolvedDependencies
	if len(deps) != 1 || deps[0].URI != "pkg:nix-fetch/kettle-greeting-src?hash=sha256:"+fodHash || deps[0].Digest["sha256"] != fodHash ||
		deps[0].Annotations == nil || deps[0].Annotations.URL != "https://example.com/kettle-greeting-src.txt" ||
		deps[0].Annotations.OutputHashMode != "flat" || !strings.HasSuffix(deps[0].Annotations.DrvPath, "-kettle-greeting-src.drv") {
		t.Errorf("dependencies %+v %+v", deps, deps[0].Annotations)
	}
	// Only the executable in bin/ is an artifact.
	if len(st.Subject) != 1 || st.Subject[0].Name != "kettle-hello" {
		t.Fatalf("subjects %+v", st.Subject)
	}
	// The artifact names its share/ file in the job's store, which is gone
	// after the job: only the first line comes from the script itself.
	out, _ := exec.Command(filepath.Join(dirA, OutDirName, "artifacts", "kettle-hello")).Output()
	if !strings.HasPrefix(string(out), "Hello from a path input\n") {
		t.Errorf("artifact output %q", out)
	}
	for _, c := range caches {
		if _, err := os.Lstat(filepath.Join(c, "nix")); !os.IsNotExist(err) {
			t.Errorf("the job's Nix store is still there after the job: %v", err)
		}
	}
	// (Other processes on the machine may use the host's store: only this
	// flake's own names must not appear there.)
	for _, n := range newEntries(before, hostStore(t)) {
		if strings.Contains(n, "kettle-hello") || strings.Contains(n, "kettle-greeting") {
			t.Errorf("the build wrote %s to the host's /nix/store", n)
		}
	}
	if _, err := os.Stat(filepath.Join(dirA, OutDirName, "build-config", "flake.lock")); err != nil {
		t.Error(err)
	}
	nix, _ := ip.Toolchain.Get("nix")
	lock, _ := os.ReadFile(filepath.Join(dirA, "flake.lock"))
	want, _ := provenance.MerkleRoot([]string{commit, bd.ExternalParameters.Source.Digest["gitTree"], sha256hex(lock),
		"fetch:kettle-greeting-src:sha256:" + fodHash, nix.SHA256, nix.Version})
	if got := st.Predicate.RunDetails.Byproducts[0].Digest["sha256"]; got != want {
		t.Errorf("merkle root %s, want %s", got, want)
	}
	if m := rec.msgs(events.Detect); len(m) != 1 || m[0] != "Detected Nix project" {
		t.Errorf("detect %q", m)
	}
	if b := rec.msgs(events.Build); !contains(b, "Running `"+bd.ExternalParameters.BuildCommand+"`") || b[len(b)-1] != "Build command finished" {
		t.Errorf("build events %q", b)
	}
	if results[1].Artifacts[0] != res.Artifacts[0] {
		t.Errorf("artifacts differ: %+v %+v", res.Artifacts, results[1].Artifacts)
	}
	if a, b := withoutMetadata(t, res.Provenance), withoutMetadata(t, results[1].Provenance); !bytes.Equal(a, b) {
		t.Errorf("provenance differs apart from metadata:\n%s\n%s", a, b)
	}
}

// TestNixWithoutLock: a flake without inputs builds without flake.lock
// (Nix 2.8 writes none for it); the provenance then has no lockfileHash,
// the result no build-config/, and the lockfile's Merkle leaf is "". A
// flake with inputs but no flake.lock is refused as InvalidSource.
func TestNixWithoutLock(t *testing.T) {
	env := toolEnv(t)
	needNix(t, env)
	runner := bwrapRunner(t)
	dir := filepath.Join(t.TempDir(), "flake")
	commit := gitProject(t, "nix-noinputs", dir)
	rec := &recorder{}
	res, err := RunDir(t.Context(), Options{Dir: dir, Runner: runner, Env: env, Events: rec})
	if err != nil {
		t.Fatalf("Run: %v (%s)\nevents: %v", err, failure.KindOf(err), rec.ev)
	}
	if !hasArtifact(res, "kettle-noinputs") {
		t.Errorf("artifacts %+v", res.Artifacts)
	}
	bd := res.Statement.Predicate.BuildDefinition
	if bd.InternalParameters.LockfileHash != nil || bytes.Contains(res.Provenance, []byte("lockfileHash")) {
		t.Errorf("provenance records a lockfile hash without a lockfile:\n%s", res.Provenance)
	}
	if _, err := os.Stat(filepath.Join(dir, OutDirName, "build-config")); !os.IsNotExist(err) {
		t.Errorf("build-config/ without a lockfile: %v", err)
	}
	nix, _ := bd.InternalParameters.Toolchain.Get("nix")
	want, _ := provenance.MerkleRoot([]string{commit, bd.ExternalParameters.Source.Digest["gitTree"], "", nix.SHA256, nix.Version})
	if got := res.Statement.Predicate.RunDetails.Byproducts[0].Digest["sha256"]; got != want {
		t.Errorf("merkle root %s, want %s", got, want)
	}

	// A flake.lock that is a symlink out of the project is refused, never
	// taken for "no lockfile".
	dir = filepath.Join(t.TempDir(), "flake")
	copyTree(t, filepath.Join(projectsDir(), "nix-noinputs"), dir)
	outside := filepath.Join(t.TempDir(), "flake.lock")
	os.WriteFile(outside, []byte(`{"nodes":{"root":{}},"root":"root","version":7}`), 0o644)
	os.Symlink(outside, filepath.Join(dir, "flake.lock"))
	if _, err = RunDir(t.Context(), Options{Dir: dir, Runner: runner, Env: env, Events: &recorder{}}); err == nil || strings.Contains(failure.Message(err), outside) {
		t.Fatalf("flake.lock symlinked out of the project: err %v", err)
	}

	// With an input and no lock: refused, whatever the input is.
	dir = filepath.Join(t.TempDir(), "flake")
	copyTree(t, filepath.Join(projectsDir(), "nix-flake"), dir)
	os.Remove(filepath.Join(dir, "flake.lock"))
	_, err = RunDir(t.Context(), Options{Dir: dir, Runner: runner, Env: env, Events: &recorder{}})
	if failure.KindOf(err) != failure.InvalidSource || !strings.Contains(failure.Message(err), "flake.lock") {
		t.Fatalf("err %v (%s: %q)", err, failure.KindOf(err), failure.Message(err))
	}
}

// bwrapRunner is the bubblewrap runner (Nix builds need it: the job's store
// is mounted at /nix); missing bubblewrap skips, or fails with CI=true.
func bwrapRunner(t *testing.T) sandbox.Runner {
	t.Helper()
	r, err := sandbox.New("bwrap")
	testenv.Need(t, err == nil, fmt.Sprintf("bubblewrap cannot run here (%v)", err))
	return r
}

// hostStore lists the machine's /nix/store (nil when there is none): no job
// may add to it.
func hostStore(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir("/nix/store")
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func newEntries(before, after []string) []string {
	old := map[string]bool{}
	for _, n := range before {
		old[n] = true
	}
	var out []string
	for _, n := range after {
		if !old[n] {
			out = append(out, n)
		}
	}
	return out
}

// TestNixHostileFlakes: evaluation-time attacks (docs/security/nix.md). The
// flake evaluates in the sandbox, offline, pure and restricted, with
// kettle's nix.conf: no host file read, no URL fetched, no nixConfig
// honoured, no import-from-derivation, no impure derivation; outputs are
// collected without following symlinks.
func TestNixHostileFlakes(t *testing.T) {
	env := toolEnv(t)
	needNix(t, env)
	runner := bwrapRunner(t)
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write([]byte("internal-only"))
	}))
	defer srv.Close()
	secretDir := t.TempDir()
	secret := "host-secret-" + fmt.Sprint(time.Now().UnixNano())
	secretFile := filepath.Join(secretDir, "token")
	os.WriteFile(secretFile, []byte(secret), 0o644)
	zero := "0000000000000000000000000000000000000000000000000000"
	drv := func(script string) string {
		return `derivation { name = "hostile"; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" ''` + script + `'' ]; }`
	}
	ok := drv(`/bin/mkdir -p $out/bin; printf '#!/bin/sh\n' > $out/bin/ok; /bin/chmod 755 $out/bin/ok`)
	flake := func(extra, pkg string) string {
		return `{ ` + extra + ` outputs = { self }: { packages.x86_64-linux.default = ` + pkg + `; }; }`
	}
	for _, tc := range []struct {
		name, flakeNix, lock string
		kind                 failure.Kind // "" = the build succeeds
		artifacts            []string
		log                  string // the build log says this
	}{
		{name: "readFile", flakeNix: flake("", drv(`echo ${builtins.readFile "`+secretFile+`"} > $out`)),
			kind: failure.BuildFailed, log: "forbidden"},
		{name: "readFile /etc", flakeNix: flake("", drv(`echo ${builtins.readFile "/etc/passwd"} > $out`)),
			kind: failure.BuildFailed, log: "forbidden"},
		{name: "fetchurl", flakeNix: flake("", drv(`cat ${builtins.fetchurl { url = "`+srv.URL+`/x"; sha256 = "`+zero+`"; }} > $out`)),
			kind: failure.BuildFailed, log: "forbidden in restricted mode"},
		{name: "fetchTarball", flakeNix: flake("", drv(`ls ${builtins.fetchTarball { url = "`+srv.URL+`/x.tar.gz"; sha256 = "`+zero+`"; }} > $out`)),
			kind: failure.BuildFailed, log: "forbidden in restricted mode"},
		{name: "fetchGit", flakeNix: flake("", drv(`ls ${builtins.fetchGit { url = "`+srv.URL+`/x.git"; rev = "0123456789abcdef0123456789abcdef01234567"; }} > $out`)),
			kind: failure.BuildFailed, log: "forbidden in restricted mode"},
		{name: "import from derivation", flakeNix: flake("", `import (`+drv(`echo '"x"' > $out`)+`)`),
			kind: failure.BuildFailed, log: "allow-import-from-derivation"},
		{name: "impure derivation", flakeNix: flake("", `derivation { name = "i"; system = "x86_64-linux"; builder = "/bin/sh"; __impure = true; args = [ "-c" "echo > $out" ]; }`),
			kind: failure.BuildFailed},
		{name: "nixConfig ignored", flakeNix: flake(`nixConfig = { substituters = "`+srv.URL+`"; extra-substituters = "`+srv.URL+`"; allow-import-from-derivation = true; pure-eval = false; restrict-eval = false; sandbox = true; post-build-hook = "/bin/false"; flake-registry = "`+srv.URL+`/r.json"; };`, ok),
			artifacts: []string{"ok"}, log: "ignoring untrusted flake configuration"},
		{name: "nixConfig does not make eval impure", flakeNix: flake(`nixConfig = { pure-eval = false; restrict-eval = false; accept-flake-config = true; };`, drv(`echo ${builtins.readFile "/etc/passwd"} > $out`)),
			kind: failure.BuildFailed, log: "forbidden"},
		{name: "input missing from the lock", flakeNix: `{ inputs.sub.url = "path:./sub"; outputs = { self, sub }: { packages.x86_64-linux.default = ` + ok + `; }; }`,
			lock: `{"nodes":{"root":{}},"root":"root","version":7}`, kind: failure.InvalidSource},
		{name: "flake.nix input differs from the lock", flakeNix: `{ inputs.greeting = { url = "path:/etc"; flake = false; }; outputs = { self, greeting }: { packages.x86_64-linux.default = ` + ok + `; }; }`,
			lock: lockOf(t, "nix-flake"), kind: failure.InvalidSource},
		{name: "remote input missing from the lock", flakeNix: `{ inputs.x = { url = "` + srv.URL + `/x.tar.gz"; flake = false; }; outputs = { self, x }: { packages.x86_64-linux.default = ` + ok + `; }; }`,
			lock: `{"nodes":{"root":{}},"root":"root","version":7}`, kind: failure.BuildFailed},
		{name: "registry input missing from the lock", flakeNix: `{ inputs.nixpkgs.url = "nixpkgs"; outputs = { self, nixpkgs }: { packages.x86_64-linux.default = ` + ok + `; }; }`,
			kind: failure.BuildFailed},
		{name: "bin symlinks", flakeNix: flake("", drv(`/bin/mkdir -p $out/bin; printf '#!/bin/sh\n' > $out/bin/ok; /bin/chmod 755 $out/bin/ok; /bin/ln -s /etc/passwd $out/bin/passwd; /bin/ln -s ok $out/bin/alias; /bin/ln -s `+secretFile+` $out/bin/secret`)),
			artifacts: []string{"ok"}, log: "is a symlink: not collected"},
		{name: "bin is a symlink", flakeNix: flake("", drv(`/bin/mkdir -p $out; /bin/ln -s /usr/bin $out/bin`)),
			kind: failure.BuildFailed},
		{name: "output is a symlink", flakeNix: flake("", drv(`/bin/ln -s /usr $out`)),
			kind: failure.NoArtifacts},
		{name: "hard link inside the output", flakeNix: flake("", drv(`/bin/mkdir -p $out/bin; printf '#!/bin/sh\n' > $out/bin/a; /bin/chmod 755 $out/bin/a; /bin/ln $out/bin/a $out/bin/b`)),
			artifacts: []string{"a", "b"}},
		{name: "hard link out of the output", flakeNix: flake("", drv(`/bin/mkdir -p $out/bin; /bin/ln /usr/bin/env $out/bin/env 2>/dev/null || /bin/cp /usr/bin/env $out/bin/env`)),
			artifacts: []string{"env"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "flake")
			os.MkdirAll(filepath.Join(dir, "sub"), 0o755)
			os.WriteFile(filepath.Join(dir, "sub", "flake.nix"), []byte("{ outputs = { self }: { }; }\n"), 0o644)
			copyTree(t, filepath.Join(projectsDir(), "nix-flake", "greeting"), filepath.Join(dir, "greeting"))
			os.WriteFile(filepath.Join(dir, "flake.nix"), []byte(tc.flakeNix), 0o644)
			if tc.lock != "" {
				os.WriteFile(filepath.Join(dir, "flake.lock"), []byte(tc.lock), 0o644)
			}
			rec := &recorder{}
			res, err := RunDir(t.Context(), Options{Dir: dir, Runner: runner, Env: env, Events: rec})
			log := strings.Join(rec.msgs(events.Build), "\n")
			if failure.KindOf(err) != tc.kind && !(tc.kind == "" && err == nil) {
				t.Fatalf("err %v (%s), want %q\n%s", err, failure.KindOf(err), tc.kind, log)
			}
			if tc.log != "" && !strings.Contains(log, tc.log) {
				t.Errorf("log does not say %q:\n%s", tc.log, log)
			}
			if strings.Contains(log, secret) || strings.Contains(failure.Message(err), secret) {
				t.Errorf("the host secret reached the log")
			}
			if err == nil {
				var names []string
				for _, a := range res.Artifacts {
					names = append(names, a.Name)
				}
				if strings.Join(names, " ") != strings.Join(tc.artifacts, " ") {
					t.Errorf("artifacts %q, want %q", names, tc.artifacts)
				}
			}
		})
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the loopback server got %d requests", n)
	}
}

// TestNixDiskLimit: what a build writes into the job's Nix store counts
// against the disk limit like the project directory.
func TestNixDiskLimit(t *testing.T) {
	env := toolEnv(t)
	needNix(t, env)
	runner := bwrapRunner(t)
	dir := filepath.Join(t.TempDir(), "flake")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "flake.nix"), []byte(`{ outputs = { self }: { packages.x86_64-linux.default = derivation {
  name = "big"; system = "x86_64-linux"; builder = "/bin/sh";
  args = [ "-c" "/bin/mkdir -p $out/bin; /usr/bin/head -c 67108864 /dev/urandom > $out/bin/big; /bin/chmod 755 $out/bin/big" ]; }; }; }`), 0o644)
	_, err := RunDir(t.Context(), Options{Dir: dir, Runner: runner, Env: env, Events: &recorder{},
		Limits: sandbox.Limits{Disk: 16 << 20, Wall: 2 * time.Minute}})
	if err == nil || !strings.Contains(failure.Message(err), "disk") {
		t.Fatalf("err %v (%s: %q), want the disk limit", err, failure.KindOf(err), failure.Message(err))
	}
}

func lockOf(t *testing.T, project string) string {
	b, err := os.ReadFile(filepath.Join(projectsDir(), project, "flake.lock"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// needNix skips without nix, or fails with CI=true.
func needNix(t *testing.T, env []string) {
	t.Helper()
	_, err := toolchain.LookPath(env, "nix")
	testenv.Need(t, err == nil, "nix is not installed")
}

// TestNixGitFsmonitor: a git checkout whose config names a program for
// core.fsmonitor (which `git ls-files`, run by Nix to copy a git flake,
// would start) builds without running it.
func TestNixGitFsmonitor(t *testing.T) {
	env := toolEnv(t)
	needNix(t, env)
	runner := bwrapRunner(t)
	dir := filepath.Join(t.TempDir(), "flake")
	gitProject(t, "nix-noinputs", dir)
	marker := filepath.Join(dir, "fsmonitor-ran")
	gitRun(t, dir, "config", "core.fsmonitor", "touch "+marker+"; false")
	res, err := RunDir(t.Context(), Options{Dir: dir, Runner: runner, Env: env, Events: &recorder{}})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !hasArtifact(res, "kettle-noinputs") {
		t.Errorf("artifacts %+v", res.Artifacts)
	}
	if _, err := os.Lstat(marker); err == nil {
		t.Errorf("core.fsmonitor ran")
	}
}
