package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/kettle-build/kettle/bench/harness"
	"github.com/kettle-build/kettle/internal/testenv"
	"github.com/kettle-build/kettle/sandbox"
)

// Regression tests of the Nix findings (docs/security/nix.md), each through
// a real `kettle serve --sandbox bwrap` with the default address policy
// (no --allow-private-networks): the attack has no effect on the host, no
// host or foreign data reaches any result or log, a refusal has a clear
// error_type, and an honest flake build beside it succeeds.

// nixServer starts kettle serve for the Nix tests: bubblewrap, two
// workers, the default (strict) repository and address policy.
func nixServer(t *testing.T) (*harness.Server, *harness.Client) {
	t.Helper()
	testenv.NeedTool(t, "nix")
	testenv.NeedTool(t, "bwrap")
	dataDir := filepath.Join(harness.DataDir(t), "data")
	return harness.StartTest(t, harness.Config{Bin: kettleBin, DataDir: dataDir,
		Args: []string{"--attester", "insecure", "--sandbox", "bwrap", "--workers", "2", "--log-format", "json",
			"--shutdown-timeout", "2m"}}, false)
}

// nixProject copies testdata/<rel> to a new directory, replacing each
// placeholder of repl in its files.
func nixProject(t *testing.T, rel string, repl ...string) string {
	t.Helper()
	src := filepath.Join("..", "..", "testdata", rel)
	dst := filepath.Join(t.TempDir(), filepath.Base(rel))
	r := strings.NewReplacer(repl...)
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		out := filepath.Join(dst, strings.TrimPrefix(p, src))
		if fi.IsDir() {
			return os.MkdirAll(out, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(out, []byte(r.Replace(string(b))), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// nixJob is one finished job: its events' text, result and (when it
// succeeded) the unpacked result directory.
type nixJob struct {
	id, log string
	res     harness.Complete
	dir     string
}

func submitNix(t *testing.T, c *harness.Client, dir string) nixJob {
	t.Helper()
	name := filepath.Base(dir)
	id, evs, res := buildAndWait(t, c, harness.BuildRequest{Nonce: harness.NewNonce(),
		SourceData: base64.StdEncoding.EncodeToString(harness.Targz(t, dir, name)), SourceName: name + ".tar.gz"})
	j := nixJob{id: id, log: eventLog(evs), res: res}
	if res.Status == "ok" {
		tarball, _ := download(t, c, id)
		j.dir = extract(t, tarball)
	}
	return j
}

// wantRefused checks a job ended InvalidSource and that neither its log nor
// its message carries any of secrets.
func wantRefused(t *testing.T, j nixJob, reason string, secrets ...string) {
	t.Helper()
	if j.res.Status != "failed" || j.res.ErrorType != "InvalidSource" || !strings.Contains(j.res.Error, reason) {
		t.Errorf("job %s: %+v, want InvalidSource saying %q\n%s", j.id, j.res, reason, j.log)
	}
	for _, s := range secrets {
		if s != "" && (strings.Contains(j.log, s) || strings.Contains(j.res.Error, s)) {
			t.Errorf("job %s: host data %q in its log or message", j.id, s)
		}
	}
	if strings.Contains(j.log, "got 'sha256-") || strings.Contains(j.log, "got: sha256-") || strings.Contains(j.log, "got:    sha256-") {
		t.Errorf("job %s: a computed hash in the log:\n%s", j.id, j.log)
	}
}

// wantHonest builds testdata/projects/nix-flake and checks its artifact.
func wantHonest(t *testing.T, c *harness.Client) {
	t.Helper()
	j := submitNix(t, c, nixProject(t, "projects/nix-flake"))
	if j.res.Status != "ok" {
		t.Fatalf("honest flake build: %+v\n%s", j.res, j.log)
	}
	b, err := os.ReadFile(filepath.Join(j.dir, "artifacts", "kettle-hello"))
	if err != nil || !strings.Contains(string(b), "Hello from a path input") {
		t.Errorf("honest artifact: %v %q", err, b)
	}
}

// hostStoreNames lists the host's /nix/store.
func hostStoreNames() map[string]bool {
	m := map[string]bool{}
	ents, _ := os.ReadDir("/nix/store")
	for _, e := range ents {
		m[e.Name()] = true
	}
	return m
}

// newInHostStore returns the entries added to the host's /nix/store since
// before whose name contains one of marks (other users of the machine may
// add their own paths meanwhile).
func newInHostStore(before map[string]bool, marks ...string) []string {
	var out []string
	for n := range hostStoreNames() {
		if before[n] {
			continue
		}
		for _, m := range marks {
			if strings.Contains(n, m) {
				out = append(out, n)
			}
		}
	}
	return out
}

func randomHex(t *testing.T) string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// TestSecurityNixHostRead: flake.lock path inputs naming a host directory
// (the server's secrets) or /etc/shadow are refused before anything runs;
// the secret appears in no log or result, the host store gets no copy.
func TestSecurityNixHostRead(t *testing.T) {
	_, c := nixServer(t)
	before := hostStoreNames()
	secrets := t.TempDir()
	token := "s3cret-token-" + randomHex(t)
	if err := os.WriteFile(filepath.Join(secrets, "token"), []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	j := submitNix(t, c, nixProject(t, "security/nix-eval-host-file-read/nix-host-read", "@SECRETS@", secrets))
	wantRefused(t, j, "path inputs outside the project", token, secrets)

	shadowLine := ""
	if b, err := os.ReadFile("/etc/shadow"); err == nil {
		shadowLine = strings.SplitN(string(b), "\n", 2)[0]
	}
	j = submitNix(t, c, nixProject(t, "security/nix-eval-host-file-read/nix-shadow"))
	wantRefused(t, j, "path inputs outside the project", shadowLine)

	// The same input with a wrong narHash (the finding's first step, which
	// disclosed the real hash): refused the same way, no hash in the log.
	dir := nixProject(t, "security/nix-eval-host-file-read/nix-shadow")
	lock := filepath.Join(dir, "flake.lock")
	b, _ := os.ReadFile(lock)
	os.WriteFile(lock, []byte(strings.Replace(string(b), "sha256-YgxoEEW0GXDnkaDc8LZN5awtn9VsRjuwMgM7wh/XthA=", "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", 1)), 0o644)
	j = submitNix(t, c, dir)
	wantRefused(t, j, "path inputs outside the project", shadowLine)

	// A relative path input whose content does not match the lock: the
	// refusal does not say what the content hashes to.
	dir = nixProject(t, "projects/nix-flake")
	os.WriteFile(filepath.Join(dir, "greeting", "flake.nix"), []byte("{ outputs = { self }: { text = \"changed\"; }; }\n"), 0o644)
	j = submitNix(t, c, dir)
	wantRefused(t, j, "does not match its narHash")

	if n := newInHostStore(before, "source", "rt-host-read", "rt-shadow"); len(n) != 0 {
		t.Errorf("new host store paths: %q", n)
	}
	wantHonest(t, c)
}

// TestSecurityNixSSRF: a tarball input on a loopback HTTP server (and on
// https://localhost) is refused by the address policy before anything runs:
// the server sees no request.
func TestSecurityNixSSRF(t *testing.T) {
	_, c := nixServer(t)
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Error(w, "internal-only secret", http.StatusOK)
	}))
	defer srv.Close()
	j := submitNix(t, c, nixProject(t, "security/nix-eval-ssrf-policy-bypass/nix-ssrf", "@URL@", srv.URL))
	wantRefused(t, j, "only https://")
	u := strings.Replace(srv.URL, "http://127.0.0.1", "https://localhost", 1)
	j = submitNix(t, c, nixProject(t, "security/nix-eval-ssrf-policy-bypass/nix-ssrf", "@URL@", u))
	wantRefused(t, j, "non-public address")
	if n := hits.Load(); n != 0 {
		t.Errorf("the loopback server got %d requests", n)
	}
	wantHonest(t, c)
}

// TestSecurityNixStorePoison: the attacker's builder writes whatever it can
// under /nix (its own job's store); the victim's build before and after is
// the same honest artifact, and the host store gets nothing.
func TestSecurityNixStorePoison(t *testing.T) {
	_, c := nixServer(t)
	before := hostStoreNames()
	victim := nixProject(t, "security/nix-store-poisoning/nix-victim")
	v1 := submitNix(t, c, victim)
	a := submitNix(t, c, nixProject(t, "security/nix-store-poisoning/nix-store-poison"))
	v2 := submitNix(t, c, victim)
	for _, v := range []nixJob{v1, v2} {
		if v.res.Status != "ok" {
			t.Fatalf("victim: %+v\n%s", v.res, v.log)
		}
		b, err := os.ReadFile(filepath.Join(v.dir, "artifacts", "rt-victim"))
		if err != nil || string(b) != "#!/bin/sh\necho honest victim output\n" {
			t.Errorf("victim artifact %v %q", err, b)
		}
	}
	if a.res.Status != "ok" {
		t.Logf("attacker: %+v", a.res)
	}
	if strings.Contains(a.log, "LEAK: overwrote") {
		t.Errorf("the attacker saw the victim's store path:\n%s", a.log)
	}
	if _, err := os.Lstat("/nix/store/rt-planted-file"); err == nil {
		t.Errorf("/nix/store/rt-planted-file exists on the host")
	}
	if n := newInHostStore(before, "rt-victim", "rt-poison", "rt-planted"); len(n) != 0 {
		t.Errorf("new host store paths: %q", n)
	}
	kettleVerify(t, v2.dir, "--allow-insecure")
}

// TestSecurityNixReadOthers: a job that greps every *-source in /nix/store
// sees none of another tenant's flake (run at the same time and after).
func TestSecurityNixReadOthers(t *testing.T) {
	_, c := nixServer(t)
	victim := nixProject(t, "security/nix-cross-tenant-source-read/nix-victim-secret")
	attacker := nixProject(t, "security/nix-cross-tenant-source-read/nix-read-others")
	done := make(chan nixJob, 1)
	go func() { done <- submitNix(t, c, victim) }()
	a1 := submitNix(t, c, attacker)
	v := <-done
	if v.res.Status != "ok" {
		t.Fatalf("victim: %+v\n%s", v.res, v.log)
	}
	// A changed stamp makes the attacker's derivation new, so it runs again.
	b, _ := os.ReadFile(filepath.Join(attacker, "flake.nix"))
	os.WriteFile(filepath.Join(attacker, "flake.nix"), []byte(strings.Replace(string(b), `stamp = "1"`, `stamp = "2"`, 1)), 0o644)
	a2 := submitNix(t, c, attacker)
	for _, a := range []nixJob{a1, a2} {
		if a.res.Status != "ok" {
			t.Errorf("attacker: %+v\n%s", a.res, a.log)
		}
		// (The marker itself is in the attacker's own flake.nix, which it
		// greps too: only its own source is in its store.)
		if strings.Contains(a.log, "nixvictim-5678") || strings.Contains(a.log, "red team victim 2") ||
			!strings.Contains(a.log, "store paths named *-source: 1") {
			t.Errorf("the attacker read the victim's source:\n%s", a.log)
		}
	}
}

// TestSecurityNixFODNet: a fixed-output derivation's builder (project code,
// fetch phase) cannot reach a loopback listener or kettle's own port.
// This holds once fetch-phase commands get a network namespace of their own
// behind the egress proxy (sandbox.Cmd.Contacted marks that sandbox).
func TestSecurityNixFODNet(t *testing.T) {
	if _, ok := reflect.TypeOf(sandbox.Cmd{}).FieldByName("Contacted"); !ok {
		t.Skip("this build's sandbox gives fetch-phase commands the host's network (no egress proxy yet)")
	}
	s, c := nixServer(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns atomic.Int32
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			conn.Close()
		}
	}()
	_, kport, _ := net.SplitHostPort(s.Addr)
	_, lport, _ := net.SplitHostPort(ln.Addr().String())
	j := submitNix(t, c, nixProject(t, "security/cargo-fetch-phase-code-exec/nix-fod-net", "@PORTS@", lport+" "+kport))
	if strings.Contains(j.log, "RT FOD builder reached") {
		t.Errorf("the fixed-output builder reached a loopback port:\n%s", j.log)
	}
	if n := conns.Load(); n != 0 {
		t.Errorf("the loopback listener got %d connections", n)
	}
	if _, err := os.Lstat("/nix/store/rt-fod-log"); err == nil {
		t.Errorf("/nix/store/rt-fod-log exists on the host")
	}
	wantHonest(t, c)
}

// TestNixWithoutLockVerify: a flake without inputs and without flake.lock
// builds through kettle serve; its result has no build-config/, its
// provenance no lockfileHash, and kettle verify accepts it.
func TestNixWithoutLockVerify(t *testing.T) {
	_, c := nixServer(t)
	j := submitNix(t, c, nixProject(t, "projects/nix-noinputs"))
	if j.res.Status != "ok" {
		t.Fatalf("%+v\n%s", j.res, j.log)
	}
	if _, err := os.Stat(filepath.Join(j.dir, "build-config")); !os.IsNotExist(err) {
		t.Errorf("build-config/ without a lockfile: %v", err)
	}
	prov, err := os.ReadFile(filepath.Join(j.dir, "provenance.json"))
	if err != nil || strings.Contains(string(prov), "lockfileHash") {
		t.Errorf("provenance: %v, lockfileHash present: %v", err, strings.Contains(string(prov), "lockfileHash"))
	}
	kettleVerify(t, j.dir, "--allow-insecure")
}
