package source

import (
	"context"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/source/gitid"
)

// testRepo is a bare repository served by the tests' git servers.
type testRepo struct {
	base     string // directory holding <name>.git
	name     string
	c1, c2   string // c1: tagged v1 (not a tip); c2: branch "feature"
	head     string // main
	sha256Rp bool
}

func git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main", "-c", "protocol.file.allow=always"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_AUTHOR_DATE=2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE=2026-01-01T00:00:00Z")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// makeRepo builds a bare repository `name.git` under a new base directory:
// main has three commits (a gitlink to a submodule and its .gitmodules in
// the last), v1 is an annotated tag on the first, feature a branch off it.
// extra, when set, adds files to the last commit.
func makeRepo(t testing.TB, name string, extra func(work string)) *testRepo {
	t.Helper()
	base := t.TempDir()
	work := filepath.Join(base, "work")
	os.Mkdir(work, 0o755)
	git(t, work, "init", "-q")
	os.WriteFile(filepath.Join(work, "README"), []byte("one\n"), 0o644)
	os.WriteFile(filepath.Join(work, "run.sh"), []byte("#!/bin/sh\necho hi\n"), 0o755)
	os.Symlink("README", filepath.Join(work, "link"))
	git(t, work, "add", "-A")
	git(t, work, "commit", "-q", "-m", "one")
	r := &testRepo{base: base, name: name}
	r.c1 = git(t, work, "rev-parse", "HEAD")
	git(t, work, "tag", "-a", "-m", "v1", "v1")
	git(t, work, "checkout", "-q", "-b", "feature")
	os.WriteFile(filepath.Join(work, "feature.txt"), []byte("f\n"), 0o644)
	git(t, work, "add", "-A")
	git(t, work, "commit", "-q", "-m", "feature")
	r.c2 = git(t, work, "rev-parse", "HEAD")
	git(t, work, "checkout", "-q", "main")
	os.WriteFile(filepath.Join(work, "README"), []byte("two\n"), 0o644)
	git(t, work, "commit", "-q", "-am", "two")
	os.WriteFile(filepath.Join(work, ".gitmodules"), []byte("[submodule \"sub\"]\n\tpath = sub\n\turl = file:///etc\n"), 0o644)
	git(t, work, "update-index", "--add", "--cacheinfo", "160000,"+r.c1+",sub")
	if extra != nil {
		extra(work)
	}
	git(t, work, "add", "-A")
	git(t, work, "commit", "-q", "-m", "three")
	r.head = git(t, work, "rev-parse", "HEAD")
	bare := filepath.Join(base, name+".git")
	git(t, base, "clone", "-q", "--bare", work, bare)
	git(t, bare, "config", "uploadpack.allowReachableSHA1InWant", "true")
	git(t, bare, "config", "http.receivepack", "false")
	return r
}

// serveDaemon serves base over git:// with `git daemon --inetd` per
// connection on a loopback listener; it returns "git://127.0.0.1:port".
func serveDaemon(t testing.TB, base string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				cmd := exec.Command("git", "daemon", "--inetd", "--export-all", "--base-path="+base, base)
				cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null")
				cmd.Stdin, cmd.Stdout = c, c
				cmd.Run()
			}()
		}
	}()
	return "git://" + ln.Addr().String()
}

// httpBackend is `git http-backend` behind net/http/cgi.
func httpBackend(base string) http.Handler {
	return &cgi.Handler{
		Path: gitExecPath() + "/git-http-backend",
		Env:  []string{"GIT_PROJECT_ROOT=" + base, "GIT_HTTP_EXPORT_ALL=1", "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null"},
	}
}

func gitExecPath() string {
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		return "/usr/lib/git-core"
	}
	return strings.TrimSpace(string(out))
}

// jobDirs makes <base>/job/work with a canary file in base, and checks at
// cleanup that the canary is untouched and nothing else appeared in base.
func jobDirs(t *testing.T) string {
	t.Helper()
	base := t.TempDir()
	canary := filepath.Join(base, "canary")
	os.WriteFile(canary, []byte("canary"), 0o600)
	st0, _ := os.Stat(canary)
	work := filepath.Join(base, "job", "work")
	os.MkdirAll(work, 0o755)
	t.Cleanup(func() {
		st, err := os.Stat(canary)
		b, _ := os.ReadFile(canary)
		if err != nil || string(b) != "canary" || !st.ModTime().Equal(st0.ModTime()) {
			t.Errorf("canary touched")
		}
		ents, _ := os.ReadDir(base)
		if len(ents) != 2 {
			t.Errorf("unexpected entries beside the job dir: %v", ents)
		}
	})
	return work
}

var localPolicy = Policy{AllowLocal: true, AllowPrivateNetworks: true, CloneTimeout: time.Minute}

func checkTree(t *testing.T, tree *Tree, r *testRepo, want string) {
	t.Helper()
	if tree.Commit != want || tree.Top != r.name || filepath.Base(tree.Dir) != r.name {
		t.Fatalf("tree = %+v, want commit %s", tree, want)
	}
	// The identity comes from kettle's clone; git itself, gitid's Go
	// reader of the same (shallow, packed) .git and its content hash agree
	// with it.
	id := tree.Identity
	if id == nil || id.Commit != want || id.HeadCommit != want || len(id.Tree) != 40 || id.Dirty {
		t.Fatalf("identity %+v", id)
	}
	checkGitHead(t, tree)
	if h, err := gitid.ReadHead(filepath.Join(tree.Dir, ".git")); err != nil || h.Commit != want || h.Tree != id.Tree {
		t.Errorf("gitid.ReadHead of the clone: %+v %v, want tree %s", h, err, id.Tree)
	}
	if got, err := gitid.TreeHash(t.Context(), tree.Dir, gitid.SHA1); err != nil || got != id.Tree {
		t.Errorf("gitid.TreeHash of the checkout %s %v, want %s", got, err, id.Tree)
	}
	st, err := os.Stat(filepath.Join(tree.Dir, "run.sh"))
	if err != nil || st.Mode().Perm()&0o100 == 0 {
		t.Errorf("run.sh: %v %v", st, err)
	}
	if l, err := os.Readlink(filepath.Join(tree.Dir, "link")); err != nil || l != "README" {
		t.Errorf("link: %q %v", l, err)
	}
	if want == r.head {
		if ents, _ := os.ReadDir(filepath.Join(tree.Dir, "sub")); len(ents) != 0 {
			t.Errorf("submodule populated: %v", ents)
		}
	}
	if _, err := os.Stat(filepath.Join(tree.Dir, ".git", "hooks")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf(".git/hooks exists (template copied)")
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(tree.Dir), ".home")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("git home left behind")
	}
}

func TestCloneRefs(t *testing.T) {
	r := makeRepo(t, "proj", nil)
	mux := http.NewServeMux()
	mux.Handle("/", httpBackend(r.base))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	servers := map[string]string{
		"daemon": serveDaemon(t, r.base) + "/proj.git",
		"http":   srv.URL + "/proj.git",
		"file":   "file://" + filepath.Join(r.base, "proj.git"),
		"path":   filepath.Join(r.base, "proj.git"),
	}
	for kind, url := range servers {
		refs := []struct{ ref, want string }{
			{"v1", r.c1}, {r.c1, r.c1}, // first: all the local transports run
			{"", r.head}, {"main", r.head}, {"feature", r.c2}, {strings.ToUpper(r.c2), r.c2},
			// refs people type (issue 18)
			{"HEAD", r.head}, {"refs/heads/feature", r.c2}, {"refs/tags/v1", r.c1},
			{r.c2[:7], r.c2}, {strings.ToUpper(r.head[:12]), r.head},
		}
		if kind == "file" || kind == "path" {
			refs = refs[:2] // the local transports: a tag and an exact commit
		}
		for _, c := range refs {
			t.Run(kind+"/"+c.ref, func(t *testing.T) {
				work := jobDirs(t)
				tree, err := Clone(context.Background(), url, c.ref, work, localPolicy)
				if err != nil {
					t.Fatal(err)
				}
				checkTree(t, tree, r, c.want)
				if got := git(t, tree.Dir, "config", "remote.origin.url"); got != url {
					t.Errorf("origin = %q, want %q", got, url)
				}
			})
		}
	}
}

func TestCloneHTTPSPinned(t *testing.T) {
	r := makeRepo(t, "proj", nil)
	srv := httptest.NewTLSServer(httpBackend(r.base))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600)
	// A "public" world: example.com resolves to a documentation address
	// that the dial hook routes to the loopback server.
	var dialed []string
	var mu sync.Mutex
	p := Policy{
		Resolver:     &fakeResolver{hosts: map[string][]string{"example.com": {"203.0.113.10"}}},
		CloneTimeout: time.Minute,
		caFile:       ca,
		dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			mu.Lock()
			dialed = append(dialed, addr)
			mu.Unlock()
			if addr != "203.0.113.10:443" {
				return nil, errors.New("unexpected address")
			}
			return (&net.Dialer{}).DialContext(ctx, network, srv.Listener.Addr().String())
		},
	}
	work := jobDirs(t)
	tree, err := Clone(context.Background(), "https://example.com/proj.git", "", work, p)
	if err != nil {
		t.Fatal(err)
	}
	checkTree(t, tree, r, r.head)
	if len(dialed) == 0 {
		t.Errorf("git did not go through the egress proxy")
	}
}

// publicWorld serves handlers under public-looking host names: a resolver
// maps each to a documentation address, and a dial hook routes that to the
// handler's loopback server.
func publicWorld(t *testing.T, hosts map[string]http.Handler, private map[string]string) Policy {
	res := &fakeResolver{hosts: map[string][]string{}}
	route := map[string]string{}
	i := 10
	for h, handler := range hosts {
		srv := httptest.NewServer(handler)
		t.Cleanup(srv.Close)
		ip := "198.51.100." + itoa(i)
		i++
		res.hosts[h] = []string{ip}
		route[ip+":80"] = srv.Listener.Addr().String()
	}
	for h, ip := range private {
		res.hosts[h] = []string{ip}
	}
	return Policy{AllowLocal: true, Resolver: res, CloneTimeout: time.Minute,
		dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			real, ok := route[addr]
			if !ok {
				return nil, errors.New("no route to " + addr)
			}
			return (&net.Dialer{}).DialContext(ctx, network, real)
		}}
}

func redirectTo(target string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target+r.URL.Path+"?"+r.URL.RawQuery, http.StatusFound)
	})
}

func TestCloneRedirects(t *testing.T) {
	r := makeRepo(t, "proj", nil)
	p := publicWorld(t, map[string]http.Handler{
		"public.example":   redirectTo("http://internal.example"),
		"meta.example":     redirectTo("http://169.254.169.254"),
		"moved.example":    redirectTo("http://mirror.example"),
		"mirror.example":   httpBackend(r.base),
		"internal.example": httpBackend(r.base), // reachable if the check failed
	}, nil)
	p.Resolver.(*fakeResolver).hosts["internal.example"] = []string{"10.0.0.5"}

	t.Run("to private name", func(t *testing.T) {
		_, err := Clone(context.Background(), "http://public.example/proj.git", "", jobDirs(t), p)
		if !errors.Is(err, ErrPrivateAddress) || !strings.Contains(err.Error(), `"internal.example"`) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("to metadata address", func(t *testing.T) {
		_, err := Clone(context.Background(), "http://meta.example/proj.git", "", jobDirs(t), p)
		if !errors.Is(err, ErrPrivateAddress) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("to public mirror", func(t *testing.T) {
		tree, err := Clone(context.Background(), "http://moved.example/proj.git", "", jobDirs(t), p)
		if err != nil {
			t.Fatal(err)
		}
		checkTree(t, tree, r, r.head)
	})
}

// TestCloneRedirectPrivateNetworks: with --allow-private-networks a
// redirect to the metadata service is still refused by the clone's egress
// session, with a message that does not suggest the flag.
func TestCloneRedirectPrivateNetworks(t *testing.T) {
	p := publicWorld(t, map[string]http.Handler{"meta.example": redirectTo("http://169.254.169.254")}, nil)
	p.AllowPrivateNetworks = true
	_, err := Clone(context.Background(), "http://meta.example/proj.git", "", jobDirs(t), p)
	if !errors.Is(err, ErrPrivateAddress) || !strings.Contains(err.Error(), `"169.254.169.254"`) ||
		strings.Contains(err.Error(), "--allow-private-networks") {
		t.Fatalf("err = %v", err)
	}
}

// TestCloneDenyOwnListeners: with --allow-private-networks a clone still
// never reaches kettle's own listeners (Policy.Deny, as builds' fetches):
// a repo_url naming one — directly over git:// or http://, or by a
// redirect — is refused at submit and at clone, and the other loopback
// server stays reachable.
func TestCloneDenyOwnListeners(t *testing.T) {
	r := makeRepo(t, "proj", nil)
	daemon := serveDaemon(t, r.base)
	own := httptest.NewServer(httpBackend(r.base)) // stands for kettle's --listen
	defer own.Close()
	other := httptest.NewServer(redirectTo(own.URL))
	defer other.Close()
	p := localPolicy
	p.Deny = []string{strings.TrimPrefix(daemon, "git://"), ":" + own.URL[strings.LastIndex(own.URL, ":")+1:]}
	for _, url := range []string{daemon + "/proj.git", own.URL + "/proj.git", strings.Replace(own.URL, "127.0.0.1", "localhost", 1) + "/proj.git", other.URL + "/proj.git"} {
		t.Run(url, func(t *testing.T) {
			redirect := strings.HasPrefix(url, other.URL)
			if err := CheckRepo(t.Context(), url, "", p); !redirect && !errors.Is(err, ErrPrivateAddress) {
				t.Errorf("CheckRepo: %v, want ErrPrivateAddress", err)
			}
			_, err := Clone(context.Background(), url, "", jobDirs(t), p)
			if !errors.Is(err, ErrPrivateAddress) || !strings.Contains(err.Error(), "kettle's own listeners") {
				t.Fatalf("err = %v", err)
			}
		})
	}
	// The deny list is not a blanket refusal of loopback.
	p.Deny = p.Deny[:1]
	if _, err := Clone(context.Background(), own.URL+"/proj.git", "", jobDirs(t), p); err != nil {
		t.Fatalf("a loopback server off the deny list: %v", err)
	}
}

func TestCloneDNSRebinding(t *testing.T) {
	r := makeRepo(t, "proj", nil)
	p := publicWorld(t, map[string]http.Handler{"rebind.example": httpBackend(r.base)}, nil)
	res := p.Resolver.(*fakeResolver)
	// First lookup (CheckRepo at submit) public, later ones loopback.
	res.later = map[string][]string{"rebind.example": {"127.0.0.1"}}
	if err := CheckRepo(context.Background(), "http://rebind.example/proj.git", "", p); err != nil {
		t.Fatalf("CheckRepo: %v", err)
	}
	_, err := Clone(context.Background(), "http://rebind.example/proj.git", "", jobDirs(t), p)
	if !errors.Is(err, ErrPrivateAddress) {
		t.Fatalf("err = %v", err)
	}
	// Rebinding between Clone's own check and git's connection: the proxy
	// resolves again and dials only what it checked.
	res.n.Store(0) // Clone's own lookup public, the proxy's loopback
	_, err = Clone(context.Background(), "http://rebind.example/proj.git", "", jobDirs(t), p)
	if !errors.Is(err, ErrPrivateAddress) {
		t.Fatalf("err = %v", err)
	}
}

func TestCloneRefused(t *testing.T) {
	r := makeRepo(t, "proj", nil)
	daemon := serveDaemon(t, r.base) + "/proj.git"
	pwned := filepath.Join(t.TempDir(), "pwned")
	cases := []struct {
		name, url, ref string
		p              Policy
		want           error
	}{
		{"upload-pack in url", "--upload-pack=touch " + pwned, "", localPolicy, ErrURL},
		{"upload-pack in ref", daemon, "--upload-pack=touch " + pwned, localPolicy, ErrRef},
		{"ext", "ext::sh -c 'touch " + pwned + "'", "", localPolicy, ErrURL},
		{"ext no space", "ext::touch%20" + pwned, "", localPolicy, ErrTransport},
		{"fd", "fd::0", "", localPolicy, ErrTransport},
		{"ssh", "ssh://127.0.0.1/x", "", localPolicy, ErrTransport},
		{"git without AllowLocal", daemon, "", Policy{AllowPrivateNetworks: true}, ErrTransport},
		{"loopback without AllowPrivateNetworks", daemon, "", Policy{AllowLocal: true}, ErrPrivateAddress},
		{"no such ref", daemon, "nope", localPolicy, ErrClone},
		{"no such commit", daemon, strings.Repeat("1", 40), localPolicy, ErrClone},
		{"no such repo", strings.TrimSuffix(daemon, "proj.git") + "nope.git", "", localPolicy, ErrClone},
		// --allow-private-networks never opens link-local (the metadata
		// service), unspecified (0.0.0.0 reaches local listeners) or
		// multicast addresses, in any form (egress.Check).
		{"metadata with AllowPrivateNetworks", "http://169.254.169.254/proj.git", "", localPolicy, ErrPrivateAddress},
		{"NAT64 metadata with AllowPrivateNetworks", "http://[64:ff9b::a9fe:a9fe]/proj.git", "", localPolicy, ErrPrivateAddress},
		{"unspecified with AllowPrivateNetworks", strings.Replace(daemon, "127.0.0.1", "0.0.0.0", 1), "", localPolicy, ErrPrivateAddress},
		{"multicast with AllowPrivateNetworks", "git://224.0.0.1/proj.git", "", localPolicy, ErrPrivateAddress},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			work := jobDirs(t)
			_, err := Clone(context.Background(), c.url, c.ref, work, c.p)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			var fe *failure.Error
			if !errors.As(err, &fe) || fe.Kind != failure.InvalidSource {
				t.Fatalf("not an InvalidSource failure: %#v", err)
			}
			if strings.Contains(fe.Error(), work) {
				t.Errorf("message names a server path: %q", fe.Error())
			}
			if ents, _ := os.ReadDir(work); len(ents) != 0 {
				t.Errorf("work dir not cleaned: %v", ents)
			}
			if _, err := os.Stat(pwned); err == nil {
				t.Fatal("injected command ran")
			}
		})
	}
}

func TestCloneIgnoresUserGitConfig(t *testing.T) {
	r := makeRepo(t, "proj", nil)
	daemon := serveDaemon(t, r.base) + "/proj.git"
	dir := t.TempDir()
	pwned := filepath.Join(dir, "pwned")
	hooks := filepath.Join(dir, "hooks")
	os.Mkdir(hooks, 0o755)
	os.WriteFile(filepath.Join(hooks, "post-checkout"), []byte("#!/bin/sh\ntouch "+pwned+"\n"), 0o755)
	cfg := filepath.Join(dir, "gitconfig")
	os.WriteFile(cfg, []byte("[core]\n\thooksPath = "+hooks+"\n\tfsmonitor = touch "+pwned+"\n[init]\n\ttemplateDir = "+dir+"\n"), 0o644)
	for _, env := range []string{"GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM", "GIT_CONFIG"} {
		t.Setenv(env, cfg)
	}
	t.Setenv("GIT_CONFIG_COUNT", "1")
	t.Setenv("GIT_CONFIG_KEY_0", "core.hooksPath")
	t.Setenv("GIT_CONFIG_VALUE_0", hooks)
	t.Setenv("HOME", dir)
	os.WriteFile(filepath.Join(dir, ".gitconfig"), []byte("[core]\n\thooksPath = "+hooks+"\n"), 0o644)
	for _, ref := range []string{"", r.c1} {
		tree, err := Clone(context.Background(), daemon, ref, jobDirs(t), localPolicy)
		if err != nil {
			t.Fatal(err)
		}
		checkTree(t, tree, r, map[string]string{"": r.head, r.c1: r.c1}[ref])
	}
	if _, err := os.Stat(pwned); err == nil {
		t.Fatal("a hook from the user's git config ran")
	}
}

func TestCloneSymlinkOutside(t *testing.T) {
	r := makeRepo(t, "proj", func(work string) {
		os.Symlink("/etc/passwd", filepath.Join(work, "passwd"))
	})
	_, err := Clone(context.Background(), serveDaemon(t, r.base)+"/proj.git", "", jobDirs(t), localPolicy)
	if !errors.Is(err, ErrUnsafeLink) || !strings.Contains(err.Error(), `"passwd"`) {
		t.Fatalf("err = %v", err)
	}
}

func TestCloneSizeLimit(t *testing.T) {
	r := makeRepo(t, "proj", func(work string) {
		b := make([]byte, 3<<20)
		rand.Read(b)
		os.WriteFile(filepath.Join(work, "blob"), b, 0o644)
	})
	srv := httptest.NewServer(httpBackend(r.base))
	defer srv.Close()
	for kind, url := range map[string]string{"daemon": serveDaemon(t, r.base) + "/proj.git", "http": srv.URL + "/proj.git"} {
		t.Run(kind, func(t *testing.T) {
			p := localPolicy
			p.MaxRepoBytes = 1 << 20
			_, err := Clone(context.Background(), url, "", jobDirs(t), p)
			if !errors.Is(err, ErrRepoTooLarge) || !strings.Contains(err.Error(), "larger than 1048576 bytes") {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

func TestCloneTimeout(t *testing.T) {
	// A git server that accepts and never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	p := localPolicy
	p.CloneTimeout = time.Second
	work := jobDirs(t)
	start := time.Now()
	_, err = Clone(context.Background(), "git://"+ln.Addr().String()+"/x.git", "", work, p)
	if !errors.Is(err, ErrCloneTimeout) || failure.KindOf(err) != failure.InvalidSource {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("took %v", d)
	}
	// The caller's cancellation is not the source's fault.
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	p.CloneTimeout = time.Minute
	_, err = Clone(ctx, "git://"+ln.Addr().String()+"/x.git", "", work, p)
	if failure.KindOf(err) != failure.Timeout {
		t.Fatalf("err = %v (%s)", err, failure.KindOf(err))
	}
}

func TestRepoName(t *testing.T) {
	for in, want := range map[string]string{
		"/junegunn/fzf.git": "fzf", "/a/b/": "b", "/": "repo", "": "repo", "/..": "repo", "/x/.git": "repo",
		"/a/b c": "b_c", "/a/.hidden.git": "hidden",
	} {
		if got := repoName(in); got != want {
			t.Errorf("repoName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCloneNoCredentialPrompt(t *testing.T) {
	var hits int
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits++
		mu.Unlock()
		if r.Header.Get("Authorization") != "" {
			t.Errorf("credentials sent: %q", r.Header.Get("Authorization"))
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="x"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer srv.Close()
	// A ~/.netrc of the server's user must not be sent either.
	home := t.TempDir()
	host, _, _ := net.SplitHostPort(srv.Listener.Addr().String())
	os.WriteFile(filepath.Join(home, ".netrc"), []byte("machine "+host+" login kettle password secret\n"), 0o600)
	t.Setenv("HOME", home)
	start := time.Now()
	_, err := Clone(context.Background(), srv.URL+"/private.git", "", jobDirs(t), localPolicy)
	if !errors.Is(err, ErrClone) || strings.Contains(err.Error(), "secret") {
		t.Fatalf("err = %v", err)
	}
	if time.Since(start) > 20*time.Second || hits == 0 {
		t.Errorf("took %v, %d requests", time.Since(start), hits)
	}
	t.Logf("refusal: %v", err)
}

// TestCloneAbbreviated (issue 18): an abbreviated commit that is no ref's
// tip is found in the remote's history; one that abbreviates nothing, or a
// name that is also another commit's abbreviation, is refused, never
// guessed.
func TestCloneAbbreviated(t *testing.T) {
	r := makeRepo(t, "proj", nil)
	bare := filepath.Join(r.base, "proj.git")
	two := git(t, bare, "rev-parse", r.head+"^") // on main, not a tip
	srv := httptest.NewServer(httpBackend(r.base))
	defer srv.Close()
	url := srv.URL + "/proj.git"
	tree, err := Clone(context.Background(), url, two[:8], jobDirs(t), localPolicy)
	if err != nil {
		t.Fatalf("abbreviated non-tip commit: %v", err)
	}
	if tree.Commit != two {
		t.Fatalf("checked out %s, want %s", tree.Commit, two)
	}
	missing := "0000000"
	for strings.HasPrefix(r.head, missing) || strings.HasPrefix(two, missing) || strings.HasPrefix(r.c1, missing) || strings.HasPrefix(r.c2, missing) {
		missing = "1" + missing[1:]
	}
	if _, err := Clone(context.Background(), url, missing, jobDirs(t), localPolicy); !errors.Is(err, ErrRef) ||
		!strings.Contains(failure.Message(err), "names no branch, tag or commit") {
		t.Fatalf("abbreviation of nothing = %v", err)
	}
	// A branch named like another commit's abbreviation.
	git(t, bare, "branch", r.c2[:7], r.head)
	if _, err := Clone(context.Background(), url, r.c2[:7], jobDirs(t), localPolicy); !errors.Is(err, ErrRef) ||
		!strings.Contains(failure.Message(err), "ambiguous") {
		t.Fatalf("ambiguous name/abbreviation = %v", err)
	}
}

func TestParseRefKinds(t *testing.T) {
	for ref, want := range map[string]refKind{
		"": refDefault, "HEAD": refDefault, "main": refName, "v1.2": refName, "refs/heads/main": refFull,
		"refs/tags/v1": refFull, strings.Repeat("a", 40): refCommit, strings.Repeat("B", 64): refCommit,
		"abcdef1": refAbbrev, "abcdef": refName, strings.Repeat("a", 39): refAbbrev,
	} {
		got, err := parseRef(ref)
		if err != nil || got.kind != want {
			t.Errorf("parseRef(%q) = %v, %v; want kind %v", ref, got, err, want)
		}
	}
	for _, ref := range []string{"refs/pull/1/head", "refs/heads/", "refs/remotes/origin/main", "-x", "a..b"} {
		if _, err := parseRef(ref); !errors.Is(err, ErrRef) {
			t.Errorf("parseRef(%q) = %v, want ErrRef", ref, err)
		}
	}
}
