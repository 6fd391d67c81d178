package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kettle-build/kettle/egress"
	"github.com/kettle-build/kettle/internal/testenv"
)

func newTestBwrap(t *testing.T, opts ...Option) *Bwrap {
	t.Helper()
	b, err := NewBwrap(opts...)
	testenv.Need(t, err == nil, fmt.Sprintf("bubblewrap is unavailable: %v", err))
	return b
}

// workDir is a scratch directory outside /tmp, the way a server's data
// directory is: inside the sandbox /tmp is a private tmpfs, which would make
// "outside the project" tests pass for the wrong reason.
func workDir(t *testing.T) string {
	t.Helper()
	base := "/var/tmp"
	if fi, err := os.Stat(base); err != nil || !fi.IsDir() {
		return t.TempDir()
	}
	d, err := os.MkdirTemp(base, "kettle-sandbox-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func mkdir(t *testing.T, p string) string {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func writeTestFile(t *testing.T, p, s string) {
	t.Helper()
	mkdir(t, filepath.Dir(p))
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func runSh(t *testing.T, r Runner, c *Cmd, script string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	c.Args = []string{"sh", "-c", script}
	if c.Env == nil {
		c.Env = testEnv
	}
	c.Output = &out
	err := r.Run(context.Background(), c)
	return out.String(), err
}

func TestBwrapEnvIsExactlyCmdEnv(t *testing.T) {
	t.Setenv("KETTLE_TEST_SECRET", "hunter2")
	for name, r := range runners(t) {
		t.Run(name, func(t *testing.T) {
			for _, env := range [][]string{
				{"PATH=/usr/bin:/bin", "FOO=bar baz", "EMPTY="},
				{"PWD=/somewhere/else", "PATH=/usr/bin:/bin"},
			} {
				var out bytes.Buffer
				err := r.Run(context.Background(), &Cmd{Args: []string{"env"}, Dir: t.TempDir(), Env: env, Output: &out})
				if err != nil {
					t.Fatal(err)
				}
				got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
				slices.Sort(got)
				want := slices.Sorted(slices.Values(env))
				if !slices.Equal(got, want) {
					t.Fatalf("env = %q, want %q", got, want)
				}
			}
		})
	}
}

func TestBwrapIdentity(t *testing.T) {
	b := newTestBwrap(t)
	dir := workDir(t)
	out, err := runSh(t, b, &Cmd{Dir: dir}, `id -u; id -g; grep CapEff /proc/self/status; echo data > made; mkdir sub; pwd`)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want := fmt.Sprintf("%d\n%d\nCapEff:\t0000000000000000\n%s\n", sandboxUID, sandboxUID, dir)
	if out != want {
		t.Fatalf("output %q, want %q", out, want)
	}
	// Files come out owned by the sandbox user on the host (the server's
	// uid when the server is not root), never by root.
	wantUID := os.Getuid()
	if wantUID == 0 {
		wantUID = DefaultHostUID
	}
	for _, f := range []string{"made", "sub", "."} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != wantUID || int(st.Gid) != wantUID && os.Getuid() == 0 {
			t.Errorf("%s owned by %d:%d, want uid %d", f, st.Uid, st.Gid, wantUID)
		}
	}
}

// TestBwrapSandboxUser: as root, the sandbox user owns nothing outside the
// writable directories: a file of root's in a read-only directory stays
// unwritable even where its mode lets its owner write, a hard-linked file in
// the project is not handed over, and WithSandboxUser(0, 0) restores the
// old mapping to root.
func TestBwrapSandboxUser(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("the uid switch applies when the server runs as root")
	}
	b := newTestBwrap(t)
	w := workDir(t)
	ro := mkdir(t, filepath.Join(w, "ro"))
	writeTestFile(t, filepath.Join(ro, "rootfile"), "root's\n")
	os.Chmod(filepath.Join(ro, "rootfile"), 0o600)
	proj := mkdir(t, filepath.Join(w, "proj"))
	shared := filepath.Join(w, "shared")
	writeTestFile(t, shared, "shared\n")
	if err := os.Link(shared, filepath.Join(proj, "linked")); err != nil {
		t.Fatal(err)
	}
	cache := mkdir(t, filepath.Join(w, "cache"))
	writeTestFile(t, filepath.Join(cache, "x"), "x")
	os.Symlink("/etc/passwd", filepath.Join(cache, "link-out"))
	out, err := runSh(t, b, &Cmd{Dir: proj, Writable: []string{cache}, ReadOnly: []string{ro}},
		`cat `+ro+`/rootfile 2>/dev/null && echo READ-ROOT; echo x >> linked 2>/dev/null && echo WROTE-LINK; echo y >> `+cache+`/x && echo cache-ok`)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if strings.Contains(out, "READ-ROOT") || strings.Contains(out, "WROTE-LINK") || !strings.Contains(out, "cache-ok") {
		t.Fatalf("output %q", out)
	}
	var st syscall.Stat_t
	if err := syscall.Lstat("/etc/passwd", &st); err != nil || st.Uid != 0 {
		t.Fatalf("/etc/passwd owner changed through a symlink: %d", st.Uid)
	}
	if err := syscall.Stat(shared, &st); err != nil || st.Uid != 0 {
		t.Fatalf("a hard-linked file was handed to the sandbox user: %d", st.Uid)
	}
	legacy := newTestBwrap(t, WithSandboxUser(0, 0))
	dir := workDir(t)
	if out, err := runSh(t, legacy, &Cmd{Dir: dir}, "touch f"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	if err := syscall.Stat(filepath.Join(dir, "f"), &st); err != nil || st.Uid != 0 {
		t.Fatalf("WithSandboxUser(0, 0): file owned by %d, want root", st.Uid)
	}
}

// TestBwrapView checks what the sandbox shows: each probe must fail inside.
func TestBwrapView(t *testing.T) {
	b := newTestBwrap(t)
	w := workDir(t)
	proj := mkdir(t, filepath.Join(w, "jobs", "1", "src"))
	probes := []struct{ name, script string }{
		{"write /usr", "touch /usr/pwned"},
		{"write /etc", "touch /etc/pwned"},
		{"write /", "touch /pwned"},
		{"write next to project", "touch ../pwned"},
		{"read data dir", "cat " + filepath.Join(w, "canary")},
		{"list data dir", "ls " + w + " | grep canary"},
		{"read other job", "cat " + filepath.Join(w, "jobs", "2", "src", "secret")},
		{"sysfs", "ls /sys/kernel"},
		{"configfs", "ls /sys/kernel/config"},
		{"sev-guest", "test -e /dev/sev-guest"},
		{"tdx_guest", "test -e /dev/tdx_guest"},
		{"tpm", "ls /dev/tpm0 /dev/tpmrm0"},
		{"root home", "ls /root/.npmrc /root/.cargo/credentials.toml /root/.gitconfig"},
		{"shadow", "cat /etc/shadow"},
		{"ssl private", "ls /etc/ssl/private"},
		{"new user namespace", "unshare -U true"},
		{"mount", "mount -t tmpfs none /tmp"},
		{"host processes", "test $(ls -d /proc/[0-9]* | wc -l) -gt 5"},
	}
	writeTestFile(t, filepath.Join(w, "canary"), "canary")
	writeTestFile(t, filepath.Join(w, "jobs", "2", "src", "secret"), "other job")
	for _, p := range probes {
		t.Run(p.name, func(t *testing.T) {
			out, err := runSh(t, b, &Cmd{Dir: proj}, p.script)
			if err == nil {
				t.Fatalf("%q succeeded in the sandbox:\n%s", p.script, out)
			}
		})
	}
	for _, f := range []string{"/usr/pwned", "/etc/pwned", "/pwned", filepath.Join(w, "jobs", "1", "pwned")} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("%s exists on the host", f)
			os.Remove(f)
		}
	}
	// Controls: what must work does.
	out, err := runSh(t, b, &Cmd{Dir: proj}, "echo x > /tmp/t && cat /tmp/t && ls /dev/null /dev/urandom >/dev/null && head -c 4 /dev/urandom | wc -c")
	if err != nil || out != "x\n4\n" {
		t.Fatalf("tmp/dev control: %v %q", err, out)
	}
}

// TestBwrapNetwork: the host's loopback is unreachable without Network and
// with it (the fetch phase has its own network namespace); the control
// reaches the listener through the egress proxy when the policy allows
// loopback, which shows the probe works.
func TestBwrapNetwork(t *testing.T) {
	proxy, err := egress.New(egress.Policy{AllowPrivate: true})
	if err != nil {
		t.Fatal(err)
	}
	b := newTestBwrap(t, WithEgress(proxy))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{}, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- struct{}{}
			c.Close()
		}
	}()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	direct := "exec bash -c 'echo hi > /dev/tcp/127.0.0.1/" + port + "'"
	viaProxy := "exec curl -s -p --max-time 5 http://127.0.0.1:" + port + "/"
	for _, tc := range []struct {
		network bool
		script  string
		reach   bool
	}{{false, direct, false}, {true, direct, false}, {true, viaProxy, true}} {
		out, err := runSh(t, b, &Cmd{Dir: workDir(t), Network: tc.network}, tc.script)
		select {
		case <-accepted:
			if !tc.reach {
				t.Fatalf("network=%v: a connection arrived from the sandbox: %s", tc.network, tc.script)
			}
		case <-time.After(500 * time.Millisecond):
			if tc.reach {
				t.Fatalf("control: no connection through the proxy (%v: %s)", err, out)
			}
		}
		if !tc.reach && err == nil {
			t.Fatalf("network=%v: connect succeeded: %s", tc.network, out)
		}
	}
}

// TestBwrapHiddenPaths: a hidden file inside a directory the command may read
// is masked; the same file without WithHiddenPaths is readable (control).
func TestBwrapHiddenPaths(t *testing.T) {
	w := workDir(t)
	dev := mkdir(t, filepath.Join(w, "fakedev"))
	writeTestFile(t, filepath.Join(dev, "sev-guest"), "stand-in evidence")
	mkdir(t, filepath.Join(dev, "tpm-dir"))
	writeTestFile(t, filepath.Join(dev, "tpm-dir", "tpm0"), "stand-in tpm")
	writeTestFile(t, filepath.Join(dev, "harmless"), "ok")
	proj := mkdir(t, filepath.Join(w, "proj"))
	script := "cat " + filepath.Join(dev, "sev-guest") + "; cat " + filepath.Join(dev, "tpm-dir", "tpm0") + "; cat " + filepath.Join(dev, "harmless")

	plain := newTestBwrap(t)
	out, err := runSh(t, plain, &Cmd{Dir: proj, ReadOnly: []string{dev}}, script)
	if err != nil || !strings.Contains(out, "stand-in evidence") || !strings.Contains(out, "stand-in tpm") {
		t.Fatalf("control: %v %q", err, out)
	}
	hiding := newTestBwrap(t, WithHiddenPaths(filepath.Join(dev, "sev-guest"), filepath.Join(dev, "tpm-*")))
	out, _ = runSh(t, hiding, &Cmd{Dir: proj, ReadOnly: []string{dev}}, script)
	if strings.Contains(out, "stand-in") || !strings.Contains(out, "ok") {
		t.Fatalf("hidden paths visible: %q", out)
	}
	// Exposing a hidden path itself is refused.
	if _, err := runSh(t, hiding, &Cmd{Dir: proj, ReadOnly: []string{filepath.Join(dev, "tpm-dir")}}, "true"); err == nil {
		t.Fatal("binding a hidden directory was allowed")
	}
}

func TestBwrapNoLeftovers(t *testing.T) {
	b := newTestBwrap(t)
	n := NewNone()
	dir := workDir(t)
	for _, r := range []Runner{b, n} {
		_, err := runSh(t, r, &Cmd{Dir: dir, Limits: Limits{Wall: 300 * time.Millisecond}},
			"setsid sleep 1000 & sleep 1000 & echo $$ > pid; wait")
		if err == nil {
			t.Fatal("expected the wall limit")
		}
	}
	// The groups of finished commands are removed (so empty: nothing left).
	for _, cg := range []*cgroups{b.cgs, n.cgs} {
		if cg == nil {
			continue
		}
		for _, parent := range []string{cg.memory, cg.pids, cg.cpu} {
			if parent == "" {
				continue
			}
			ents, _ := os.ReadDir(parent)
			prefix := strconv.Itoa(os.Getpid()) + "-"
			for _, e := range ents {
				if e.IsDir() && strings.HasPrefix(e.Name(), prefix) {
					t.Errorf("cgroup %s left behind", filepath.Join(parent, e.Name()))
				}
			}
		}
	}
}

func TestBwrapMissingDir(t *testing.T) {
	b := newTestBwrap(t)
	_, err := runSh(t, b, &Cmd{Dir: workDir(t), ReadOnly: []string{"/nonexistent/kettle-cache"}}, "true")
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want fs.ErrNotExist", err)
	}
}
