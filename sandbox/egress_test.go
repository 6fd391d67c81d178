package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kettle-build/kettle/egress"
	"github.com/kettle-build/kettle/internal/testenv"
)

// contacts collects what a command asked the proxy for.
type contacts struct {
	mu   sync.Mutex
	list []egress.Contact
}

func (c *contacts) add(x egress.Contact) {
	c.mu.Lock()
	c.list = append(c.list, x)
	c.mu.Unlock()
}

func (c *contacts) find(addr string) (egress.Contact, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, x := range c.list {
		if x.Addr == addr {
			return x, true
		}
	}
	return egress.Contact{}, false
}

// hostListener is a stand-in for one of kettle's own ports (HTTP, NATS) on
// the host's loopback: it counts the connections that reach it.
func hostListener(t *testing.T) (string, *int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var mu sync.Mutex
	n := 0
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			n++
			mu.Unlock()
			http.ReadRequest(bufio.NewReader(c)) // unread data would reset the answer
			c.Write([]byte("HTTP/1.0 200 OK\r\n\r\nKETTLE-HOST-SERVICE\n"))
			c.Close()
		}
	}()
	return ln.Addr().String(), &n
}

// TestEgressHostServicesUnreachable runs a fetch-phase (Network) command
// under a runner configured the way `kettle serve --allow-private-networks
// --nats-listen …` configures it (the weakest policy: private addresses
// allowed, kettle's own listeners denied): neither through the proxy nor
// directly can it reach the host's HTTP or NATS ports, the metadata address
// or another host service, while a permitted local registry works, and every
// destination is reported.
func TestEgressHostServicesUnreachable(t *testing.T) {
	testenv.NeedTool(t, "bwrap")
	testenv.NeedTool(t, "curl")
	httpAddr, httpHits := hostListener(t)
	natsAddr, natsHits := hostListener(t)
	registry := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("REGISTRY-OK\n"))
	}))
	defer registry.Close()
	regAddr := strings.TrimPrefix(registry.URL, "http://")
	_, natsPort, _ := net.SplitHostPort(natsAddr)

	proxy, err := egress.New(egress.Policy{AllowPrivate: true, Deny: []string{httpAddr, ":" + natsPort}})
	if err != nil {
		t.Fatal(err)
	}
	b := newTestBwrap(t, WithEgress(proxy))
	var got contacts
	script := `
probe() { # name, curl args…
	name=$1; shift
	if out=$(curl -fsS --max-time 5 "$@" 2>&1); then echo "$name: REACHED: $out"; else echo "$name: blocked: $out"; fi
}
probe http-proxy http://` + httpAddr + `/
probe http-direct --noproxy '*' http://` + httpAddr + `/
probe nats-connect -p http://` + natsAddr + `/
probe nats-direct --noproxy '*' http://` + natsAddr + `/
probe metadata http://169.254.169.254/latest/meta-data/
probe metadata-direct --noproxy '*' http://169.254.169.254/latest/meta-data/
probe registry http://` + regAddr + `/
if (exec 3<>/dev/tcp/` + strings.Replace(httpAddr, ":", "/", 1) + `) 2>/dev/null; then echo "tcp-direct: REACHED"; else echo "tcp-direct: blocked"; fi
echo "proxy=$HTTPS_PROXY no_proxy=[$NO_PROXY]"
`
	var out bytes.Buffer
	err = b.Run(context.Background(), &Cmd{Args: []string{"bash", "-c", script}, Dir: t.TempDir(), Env: testEnv,
		Output: &out, Network: true, Contacted: got.add, Limits: Limits{Wall: 2 * time.Minute}})
	t.Logf("output:\n%s", out.String())
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	s := out.String()
	for _, name := range []string{"http-proxy", "http-direct", "nats-connect", "nats-direct", "metadata", "metadata-direct", "tcp-direct"} {
		if strings.Contains(s, name+": REACHED") || !strings.Contains(s, name+": blocked") {
			t.Errorf("%s was not blocked", name)
		}
	}
	if !strings.Contains(s, "registry: REACHED: REGISTRY-OK") {
		t.Errorf("the permitted registry was not reached through the proxy")
	}
	if *httpHits != 0 || *natsHits != 0 {
		t.Errorf("host services were reached: http %d, nats %d", *httpHits, *natsHits)
	}
	for addr, refused := range map[string]bool{httpAddr: true, natsAddr: true, "169.254.169.254:80": true, regAddr: false} {
		c, ok := got.find(addr)
		if !ok {
			t.Errorf("%s not reported (got %+v)", addr, got.list)
			continue
		}
		if c.Refused != refused {
			t.Errorf("%s: refused=%v, want %v (%s)", addr, c.Refused, refused, c.Reason)
		}
	}
}

// TestEgressStrictPolicy: with the default policy (public addresses only)
// loopback and private destinations are refused.
func TestEgressStrictPolicy(t *testing.T) {
	testenv.NeedTool(t, "bwrap")
	testenv.NeedTool(t, "curl")
	registry := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("REGISTRY-OK\n"))
	}))
	defer registry.Close()
	b := newTestBwrap(t)
	var got contacts
	var out bytes.Buffer
	err := b.Run(context.Background(), &Cmd{Args: []string{"sh", "-c",
		"curl -sS --max-time 5 " + registry.URL + " ; curl -sS --max-time 5 http://10.1.2.3/; curl -sS --max-time 5 http://localhost:1/; true"},
		Dir: t.TempDir(), Env: testEnv, Output: &out, Network: true, Contacted: got.add})
	t.Logf("output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "REGISTRY-OK") {
		t.Error("a loopback server was reached under the public-only policy")
	}
	for _, a := range []string{strings.TrimPrefix(registry.URL, "http://"), "10.1.2.3:80", "localhost:1"} {
		if c, ok := got.find(a); !ok || !c.Refused {
			t.Errorf("%s: reported %+v, %v; want refused", a, c, ok)
		}
	}
}

// TestEgressPublicRegistry fetches from the npm registry through the proxy
// (the strict policy), as pnpm's fetch does.
func TestEgressPublicRegistry(t *testing.T) {
	testenv.NeedTool(t, "bwrap")
	testenv.NeedTool(t, "curl")
	if testing.Short() {
		t.Skip("network")
	}
	b := newTestBwrap(t)
	var got contacts
	var out bytes.Buffer
	err := b.Run(context.Background(), &Cmd{Args: []string{"sh", "-c",
		"curl -sS --fail --max-time 60 -o /dev/null -w '%{http_code}\\n' https://registry.npmjs.org/is-number"},
		Dir: t.TempDir(), Env: testEnv, Output: &out, Network: true, Contacted: got.add})
	t.Logf("output:\n%s", out.String())
	testenv.Need(t, err == nil || !strings.Contains(out.String(), "resolve"), "the npm registry is reachable")
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := got.find("registry.npmjs.org:443"); !ok || c.Refused {
		t.Errorf("registry.npmjs.org:443 reported as %+v, %v", c, ok)
	}
}

// TestEgressGoModDownload: `go mod download` of a small module reaches
// proxy.golang.org (and the checksum database) through the proxy.
func TestEgressGoModDownload(t *testing.T) {
	testenv.NeedTool(t, "bwrap")
	goBin := testenv.NeedTool(t, "go")
	if testing.Short() {
		t.Skip("network")
	}
	b := newTestBwrap(t)
	w := workDir(t)
	cache := mkdir(t, filepath.Join(w, "modcache"))
	env := []string{"PATH=" + filepath.Dir(goBin) + ":/usr/bin:/bin", "HOME=" + w, "GOMODCACHE=" + cache,
		"GOPROXY=https://proxy.golang.org", "GOFLAGS=-modcacherw", "GOTOOLCHAIN=local", "GOCACHE=off", "GOENV=off"}
	var got contacts
	var out bytes.Buffer
	err := b.Run(context.Background(), &Cmd{Args: []string{"go", "mod", "download", "-json", "github.com/google/go-cmp@v0.6.0"},
		Dir: w, Env: env, Output: &out, Network: true, Writable: []string{cache}, Contacted: got.add,
		Limits: Limits{Wall: 3 * time.Minute}})
	t.Logf("output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := got.find("proxy.golang.org:443"); !ok || c.Refused {
		t.Errorf("proxy.golang.org:443 reported as %+v, %v (all: %+v)", c, ok, got.list)
	}
	if _, err := os.Stat(filepath.Join(cache, "github.com", "google", "go-cmp@v0.6.0", "go.mod")); err != nil {
		t.Errorf("module not in the cache: %v", err)
	}
}

// TestEgressAbstractSocket: the host's abstract Unix sockets (per network
// namespace) are out of reach of a Network command.
func TestEgressAbstractSocket(t *testing.T) {
	testenv.NeedTool(t, "bwrap")
	testenv.NeedTool(t, "curl")
	name := "kettle-test-abstract-" + strconv.Itoa(os.Getpid())
	ln, err := net.Listen("unix", "@"+name)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	hits := make(chan struct{}, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			hits <- struct{}{}
			// Read the request first: closing unread data resets the
			// connection before curl sees the answer.
			http.ReadRequest(bufio.NewReader(c))
			c.Write([]byte("HTTP/1.0 200 OK\r\n\r\nABSTRACT\n"))
			c.Close()
		}
	}()
	// Control: the same curl outside the sandbox reaches it.
	if out, err := exec.Command("curl", "-sS", "--max-time", "5", "--abstract-unix-socket", name, "http://x/").CombinedOutput(); !strings.Contains(string(out), "ABSTRACT") {
		t.Fatalf("control: %v %s", err, out)
	}
	<-hits
	b := newTestBwrap(t)
	for _, network := range []bool{false, true} {
		var out bytes.Buffer
		_ = b.Run(context.Background(), &Cmd{Args: []string{"curl", "-sS", "--max-time", "5", "--abstract-unix-socket", name, "http://x/"},
			Dir: t.TempDir(), Env: testEnv, Output: &out, Network: network})
		if strings.Contains(out.String(), "ABSTRACT") {
			t.Fatalf("network=%v: the host's abstract socket was reached", network)
		}
	}
	select {
	case <-hits:
		t.Fatal("a connection arrived from the sandbox")
	default:
	}
}
