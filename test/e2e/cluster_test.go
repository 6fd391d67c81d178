package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kettle-build/kettle/bench/harness"
	"github.com/kettle-build/kettle/internal/testenv"
)

// natsNodeEnv makes the test binary run as one nats-server node (the
// pinned github.com/nats-io/nats-server/v2) with the config file it names:
// a real process that kill -9 can take down.
const natsNodeEnv = "KETTLE_E2E_NATS_NODE"

// runNATSNode is the body of such a process; it returns only on error.
func runNATSNode(conf string) int {
	opts, err := natsserver.ProcessConfigFile(conf)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nats node:", err)
		return 2
	}
	opts.NoSigs = true
	ns, err := natsserver.NewServer(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nats node:", err)
		return 2
	}
	ns.ConfigureLogger()
	ns.Start()
	ns.WaitForShutdown()
	return 1
}

// Timings of the cluster under test: short heartbeats so that a lost
// worker is noticed within seconds.
const (
	clusterTTL   = "2s"
	clusterBuild = 2500 * time.Millisecond // build.rs sleep of every job
)

type natsNode struct {
	name     string
	port     int
	conf     string
	logPath  string
	cmd      *exec.Cmd
	done     chan struct{}
	stopOnce sync.Once
}

// natsCluster is three nats-server processes with JetStream clustered
// and password authentication (clients and routes).
type natsCluster struct {
	nodes []*natsNode
	creds string // "user:password" file for --nats-creds
	user  string
	pass  string
}

func (c *natsCluster) URLs() string {
	var u []string
	for _, n := range c.nodes {
		u = append(u, fmt.Sprintf("nats://127.0.0.1:%d", n.port))
	}
	return strings.Join(u, ",")
}

func freePort(t *testing.T) int {
	t.Helper()
	p, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func startNATSCluster(t *testing.T) *natsCluster {
	t.Helper()
	dir := t.TempDir()
	var last error
	for attempt := 0; attempt < 3; attempt++ {
		c, err := tryNATSCluster(t, filepath.Join(dir, fmt.Sprint(attempt)))
		if err == nil {
			return c
		}
		// The free ports were chosen, not held: another test process
		// (packages run in parallel) may take one before a node binds it.
		t.Logf("starting the NATS cluster: %v; again with other ports", err)
		last = err
	}
	t.Fatal(last)
	return nil
}

func tryNATSCluster(t *testing.T, dir string) (*natsCluster, error) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	c := &natsCluster{user: "kettle", pass: harness.NewNonce()}
	routePass := harness.NewNonce()
	var client, route [3]int
	for i := range 3 {
		client[i], route[i] = freePort(t), freePort(t)
	}
	var routes []string
	for i := range 3 {
		routes = append(routes, fmt.Sprintf("%q", fmt.Sprintf("nats://route:%s@127.0.0.1:%d", routePass, route[i])))
	}
	for i := range 3 {
		n := &natsNode{name: fmt.Sprintf("n%d", i+1), port: client[i]}
		n.conf = filepath.Join(dir, n.name+".conf")
		n.logPath = filepath.Join(dir, n.name+".log")
		conf := fmt.Sprintf(`server_name: %s
listen: "127.0.0.1:%d"
jetstream { store_dir: %q, max_memory_store: 64MB, max_file_store: 2GB, sync_interval: always }
cluster {
  name: kettle
  listen: "127.0.0.1:%d"
  authorization { user: route, password: %q }
  routes: [%s]
}
authorization { users: [ { user: %s, password: %q } ] }
max_payload: 8MB
`, n.name, client[i], filepath.Join(dir, n.name), route[i], routePass, strings.Join(routes, ", "), c.user, c.pass)
		if err := os.WriteFile(n.conf, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		c.nodes = append(c.nodes, n)
	}
	c.creds = filepath.Join(dir, "nats.creds")
	if err := os.WriteFile(c.creds, []byte(c.user+":"+c.pass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i, n := range c.nodes {
		if err := n.tryStart(); err != nil {
			for _, started := range c.nodes[:i] {
				started.kill()
			}
			return nil, err
		}
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			n.kill()
		}
		if t.Failed() {
			for _, n := range c.nodes {
				b, _ := os.ReadFile(n.logPath)
				t.Logf("%s log:\n%s", n.name, harness.Tail(string(b), 15))
			}
		}
	})
	c.waitJetStream(t, 3)
	return c, nil
}

func (n *natsNode) start(t *testing.T) {
	t.Helper()
	if err := n.tryStart(); err != nil {
		t.Fatal(err)
	}
}

// tryStart runs the node and waits until it listens; a node that exits
// first (its port was taken meanwhile by another test process) is an
// error naming the end of its log.
func (n *natsNode) tryStart() error {
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), natsNodeEnv+"="+n.conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	n.cmd, n.done, n.stopOnce = cmd, make(chan struct{}), sync.Once{}
	go func() { cmd.Wait(); logf.Close(); close(n.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", n.port), time.Second)
		if err == nil {
			conn.Close()
			return nil
		}
		select {
		case <-n.done:
			b, _ := os.ReadFile(n.logPath)
			return fmt.Errorf("nats node %s exited before listening: %s", n.name, harness.Tail(string(b), 10))
		default:
		}
		if time.Now().After(deadline) {
			n.kill()
			return fmt.Errorf("nats node %s does not listen: %v", n.name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill is kill -9.
func (n *natsNode) kill() {
	n.stopOnce.Do(func() {
		_ = n.cmd.Process.Kill()
		<-n.done
	})
}

// connect is a client of the cluster (the test's own view of the store).
func (c *natsCluster) connect(t *testing.T) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(c.URLs(), nats.UserInfo(c.user, c.pass), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// leaders names the node leading each stream.
func (c *natsCluster) leaders(t *testing.T, streams ...string) map[string]string {
	t.Helper()
	_, js := c.connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := map[string]string{}
	for _, name := range streams {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		info, err := st.Info(ctx)
		if err != nil || info.Cluster == nil {
			t.Fatalf("stream %s info: %v", name, err)
		}
		out[name] = info.Cluster.Leader
	}
	return out
}

func (c *natsCluster) node(t *testing.T, name string) *natsNode {
	t.Helper()
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	t.Fatalf("no NATS node %q", name)
	return nil
}

// waitJetStream waits until a stream with that many replicas can be
// created (a meta leader was elected and the peers are known).
func (c *natsCluster) waitJetStream(t *testing.T, replicas int) {
	t.Helper()
	_, js := c.connect(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "PROBE", Subjects: []string{"probe"}, Replicas: replicas, Storage: jetstream.MemoryStorage})
		if err == nil {
			err = js.DeleteStream(ctx, "PROBE")
		}
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("JetStream cluster not ready: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// clusterFlags are the store flags every process of the cluster shares.
func (c *natsCluster) flags(url string) []string {
	if url == "" {
		url = c.URLs()
	}
	return []string{"--nats", url, "--nats-creds", c.creds, "--nats-replicas", "3", "--worker-ttl", clusterTTL}
}

// frontEnd is a `kettle serve --nats` on a fixed port (restarts keep it).
type frontEnd struct {
	name    string
	port    int
	dataDir string
	logPath string
	args    []string
	srv     *harness.Server
	c       *harness.Client
}

func (f *frontEnd) start(t *testing.T) {
	t.Helper()
	base := []string{"--attester", "insecure", "--sandbox", sandboxMode(), "--allow-local-repos",
		"--allow-private-networks", "--log-format", "json", "--shutdown-timeout", "10s"}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := harness.Start(ctx, harness.Config{Bin: kettleBin, DataDir: f.dataDir, Port: f.port,
		Args: append(base, f.args...), LogPath: f.logPath})
	if err != nil {
		t.Fatal(err)
	}
	f.srv, f.c = s, &harness.Client{URL: s.URL}
}

// workerProc is a `kettle worker` process.
type workerProc struct {
	name, url, workDir, logPath, metrics string
	cmd                                  *exec.Cmd
	done                                 chan struct{}
	stopOnce                             sync.Once
}

func startWorker(t *testing.T, c *natsCluster, name, url, workDir, logPath string, extra ...string) *workerProc {
	t.Helper()
	w := &workerProc{name: name, url: url, workDir: workDir, logPath: logPath,
		metrics: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	args := append([]string{"worker", "--name", name, "--attester", "insecure", "--sandbox", sandboxMode(),
		"--allow-local-repos", "--allow-private-networks", "--work-dir", workDir, "--metrics-listen", w.metrics,
		"--shutdown-timeout", "10s", "--log-level", "debug"}, append(c.flags(url), extra...)...)
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(kettleBin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	w.cmd, w.done = cmd, make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(w.done) }()
	t.Cleanup(w.kill)
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(readFile(logPath), "worker started") {
		select {
		case <-w.done:
			t.Fatalf("worker %s exited:\n%s", name, harness.Tail(readFile(logPath), 20))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker %s did not start:\n%s", name, harness.Tail(readFile(logPath), 20))
		}
	}
	return w
}

// kill is kill -9 of the worker and everything it started (the sandbox).
func (w *workerProc) kill() {
	w.stopOnce.Do(func() {
		_ = syscall.Kill(-w.cmd.Process.Pid, syscall.SIGKILL)
		<-w.done
	})
}

// stop is SIGTERM (an idle worker leaves at once) and a wait.
func (w *workerProc) stop(t *testing.T) {
	t.Helper()
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-w.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("worker %s did not stop on SIGTERM", w.name)
	}
	w.stopOnce.Do(func() {})
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// follower records a job's events through one front end, resuming after
// a broken stream.
type follower struct {
	mu       sync.Mutex
	evs      []harness.Event
	complete chan struct{}
}

func follow(ctx context.Context, c *harness.Client, id string) *follower {
	f := &follower{complete: make(chan struct{})}
	go func() {
		for ctx.Err() == nil {
			f.mu.Lock()
			from := len(f.evs)
			f.mu.Unlock()
			_ = c.Events(ctx, id, from, func(e harness.Event) error {
				f.mu.Lock()
				defer f.mu.Unlock()
				if e.ID != len(f.evs) {
					return fmt.Errorf("event %d after %d", e.ID, len(f.evs))
				}
				f.evs = append(f.evs, e)
				if e.Type == "complete" {
					close(f.complete)
				}
				return nil
			})
			select {
			case <-f.complete:
				return
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return f
}

func (f *follower) events() []harness.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]harness.Event(nil), f.evs...)
}

// find returns the first event whose data contains s.
func (f *follower) find(s string) (harness.Event, bool) {
	for _, e := range f.events() {
		if strings.Contains(e.Data, s) {
			return e, true
		}
	}
	return harness.Event{}, false
}

var attemptRE = regexp.MustCompile(`worker (\w+) took the job|lost; attempt \d+ on (\w+)|(lost; the job is queued again)`)

// building reports whether the job is in its build phase on worker w:
// its latest attempt was taken by w and logged a build-phase line.
func (f *follower) building(w string) bool {
	cur, built := "", false
	for _, e := range f.events() {
		switch e.Type {
		case "vm":
			if m := attemptRE.FindStringSubmatch(e.Data); m != nil {
				cur, built = m[1]+m[2], false
			}
		case "build":
			built = true
		case "complete":
			return false
		}
	}
	return cur == w && built
}

// waitFor polls cond for up to d; on a timeout the failure carries what
// each diag returns (the state that explains it, before cleanup's noise).
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool, diag ...func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, f := range diag {
				b.WriteString("\n" + f())
			}
			t.Fatalf("timed out after %v waiting for %s%s", d, what, b.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// metricSum sums the samples of metric whose labels contain every one of
// labels (`status="succeeded"` …).
func metricSum(text, metric string, labels ...string) (float64, bool) {
	var sum float64
	found := false
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, metric+"{") && !strings.HasPrefix(line, metric+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum += v
			found = true
		}
	}
	return sum, found
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	return string(b)
}

// pauseProxy forwards TCP from a loopback port to target; while paused it
// moves no byte in either direction (a network partition that holds the
// connections open, as a cut cable does, rather than resetting them).
type pauseProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cond   *sync.Cond
	paused bool
	conns  []net.Conn
}

func startProxy(t *testing.T, target string) *pauseProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pauseProxy{ln: ln, target: target}
	p.cond = sync.NewCond(&p.mu)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.setPaused(false)
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
	})
	return p
}

func (p *pauseProxy) addr() string { return p.ln.Addr().String() }

func (p *pauseProxy) setPaused(v bool) {
	p.mu.Lock()
	p.paused = v
	p.cond.Broadcast()
	p.mu.Unlock()
}

func (p *pauseProxy) gate() {
	p.mu.Lock()
	for p.paused {
		p.cond.Wait()
	}
	p.mu.Unlock()
}

func (p *pauseProxy) serve(c net.Conn) {
	p.gate()
	u, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns = append(p.conns, c, u)
	p.mu.Unlock()
	pipe := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				p.gate()
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		dst.Close()
		src.Close()
	}
	go pipe(u, c)
	pipe(c, u)
}

// clusterJob is one submission of the scenario.
type clusterJob struct {
	id  string
	via *frontEnd
	f   *follower // through the front end that is never killed
}

// TestNATSCluster runs kettle as a cluster of real processes: three
// nats-server nodes (JetStream R3, password auth), two `kettle serve
// --nats` front ends and `kettle worker`s. The faults subtest builds 8 jobs
// while kill -9 takes down a NATS node, a worker in the middle of a build
// and a front end (each restarted): every job succeeds, the lost worker's
// job is built again on the other worker, results and logs are the same
// through both front ends, and both count every build in /metrics. The
// partition subtest cuts a worker off from NATS for longer than its
// heartbeat in the middle of a build: the job goes to another worker, and
// what the cut-off worker produces once it is back is refused.
func TestNATSCluster(t *testing.T) {
	testenv.NeedTool(t, "cargo")
	if sandboxMode() != "none" {
		testenv.NeedTool(t, "bwrap")
	}
	start := time.Now()
	nc := startNATSCluster(t)
	t.Logf("NATS cluster of 3 ready in %v", time.Since(start).Round(time.Millisecond))
	dir := harness.DataDir(t)
	fes := map[string]*frontEnd{}
	for _, n := range []string{"A", "B"} {
		f := &frontEnd{name: n, port: freePort(t), dataDir: filepath.Join(dir, "fe"+n),
			logPath: filepath.Join(dir, "fe"+n+".log"), args: nc.flags("")}
		f.start(t)
		fes[n] = f
		t.Cleanup(func() {
			f.srv.Kill()
			if t.Failed() {
				t.Logf("front end %s log:\n%s", f.name, harness.Tail(readFile(f.logPath), 40))
			}
		})
	}
	A, B := fes["A"], fes["B"]
	workers := map[string]*workerProc{}
	startW := func(t *testing.T, name, url string, extra ...string) *workerProc {
		w := startWorker(t, nc, name, url, filepath.Join(dir, "work-"+name), filepath.Join(dir, name+".log"), extra...)
		workers[name] = w
		return w
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range []string{"w1", "w2", "w3"} {
				if w := workers[n]; w != nil {
					t.Logf("worker %s log:\n%s", n, harness.Tail(readFile(w.logPath), 40))
				}
			}
		}
	})
	startW(t, "w1", "")
	startW(t, "w2", "")
	harness.WaitReady(t, A.c)
	harness.WaitReady(t, B.c)
	t.Logf("front ends and workers up at %v", time.Since(start).Round(time.Millisecond))

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var all []*clusterJob
	submit := func(t *testing.T, via *frontEnd, name string) *clusterJob {
		src := t.TempDir()
		project(t, src, name, clusterBuild)
		id, err := via.c.SubmitArchive(ctx, harness.Targz(t, src, name), name+".tar.gz", harness.NewNonce())
		if err != nil {
			t.Fatalf("submit %s through %s: %v", name, via.name, err)
		}
		j := &clusterJob{id: id, via: via, f: follow(ctx, B.c, id)}
		all = append(all, j)
		return j
	}

	t.Cleanup(func() {
		if t.Failed() {
			for _, j := range all {
				t.Logf("events of %s (submitted through %s):\n%s", j.id, j.via.name, harness.Tail(eventLog(j.f.events()), 12))
			}
		}
	})
	var lost *clusterJob
	var killedW1, lostSeen, retryStart, lostDone time.Time
	t.Run("faults", func(t *testing.T) {
		t0 := time.Now()
		for i := range 8 {
			via := A
			if i%2 == 1 {
				via = B
			}
			submit(t, via, fmt.Sprintf("job%d", i+1))
		}
		buildingOn := func(w string) *clusterJob {
			for _, j := range all {
				if j.f.building(w) {
					return j
				}
			}
			return nil
		}
		// 1. A NATS node dies while both workers build: the leader of
		// the job state, so that recording both outcomes waits for an
		// election.
		waitFor(t, "both workers building", time.Minute, func() bool { return buildingOn("w1") != nil && buildingOn("w2") != nil })
		leaders := nc.leaders(t, "KV_kettle-jobs", "KV_kettle-workers", "KETTLE_EVENTS", "KETTLE_WORK", "OBJ_kettle-objects")
		victim := nc.node(t, leaders["KV_kettle-jobs"])
		victim.kill()
		t.Logf("%v: kill -9 NATS node %s (stream leaders %v) while both workers build", time.Since(t0).Round(time.Millisecond), victim.name, leaders)
		time.Sleep(2 * time.Second)
		victim.start(t)
		t.Logf("%v: %s restarted", time.Since(t0).Round(time.Millisecond), victim.name)

		// 2. Worker w1 dies in the middle of a build (a job it took after
		// the node's death) and comes back as a new process.
		first := buildingOn("w1")
		waitFor(t, "w1 building another job", time.Minute, func() bool {
			for _, j := range all {
				if j != first && j.f.building("w1") {
					lost = j
					return true
				}
			}
			return false
		})
		workers["w1"].kill()
		killedW1 = time.Now()
		t.Logf("%v: kill -9 worker w1 building %s", time.Since(t0).Round(time.Millisecond), lost.id)
		time.Sleep(time.Second)
		startW(t, "w1", "")

		// 3. A front end dies (jobs it accepted live in NATS) and comes back.
		time.Sleep(time.Second)
		A.srv.Kill()
		t.Logf("%v: kill -9 front end A", time.Since(t0).Round(time.Millisecond))
		time.Sleep(time.Second)
		A.start(t)
		t.Logf("%v: front end A restarted", time.Since(t0).Round(time.Millisecond))

		for _, j := range all {
			select {
			case <-j.f.complete:
			case <-ctx.Done():
				t.Fatalf("job %s did not complete:\n%s", j.id, eventLog(j.f.events()))
			}
		}
		total := time.Since(t0)
		if e, ok := lost.f.find("worker w1 lost; the job is queued again for attempt 2 of 3"); ok {
			lostSeen = e.At
		}
		if e, ok := lost.f.find("worker w1 lost; attempt 2 on w2"); ok {
			retryStart = e.At
		}
		lostDone = lost.f.events()[len(lost.f.events())-1].At
		t.Logf("8 jobs done in %v; w1 killed → loss recorded %v → attempt 2 started %v → job done %v",
			total.Round(time.Millisecond), lostSeen.Sub(killedW1).Round(time.Millisecond),
			retryStart.Sub(killedW1).Round(time.Millisecond), lostDone.Sub(killedW1).Round(time.Millisecond))

		// What the NATS node's death cost: operations kettle retried.
		for _, w := range []string{"w1", "w2"} {
			l := readFile(filepath.Join(dir, w+".log"))
			t.Logf("%s log: %d failed heartbeats, %d outcome records retried, %d source reads retried", w,
				strings.Count(l, "worker heartbeat failed"), strings.Count(l, "recording the build outcome failed; retrying"),
				strings.Count(l, "reading the source failed; retrying"))
		}
		for _, j := range all {
			checkClusterJob(t, j, A, B, j == lost)
		}
		// Metrics come from job state: both front ends (A restarted)
		// count all 8 builds, though neither ran one.
		for _, f := range []*frontEnd{A, B} {
			checkBuildMetrics(t, f, 8, 1)
		}
		m := httpGet(t, "http://"+workers["w2"].metrics+"/metrics")
		if n, _ := metricSum(m, "kettle_worker_builds_total", `status="succeeded"`, `toolchain="cargo"`); n < 1 {
			t.Errorf("w2 --metrics-listen counts %v succeeded builds:\n%s", n, grepLines(m, "kettle_worker"))
		}
		if _, ok := metricSum(m, "process_cpu_seconds_total"); !ok {
			t.Errorf("w2 --metrics-listen has no process metrics")
		}
	})
	if t.Failed() {
		return
	}

	t.Run("partition", func(t *testing.T) {
		// Only w3 (behind a proxy that can cut it off) may take the job.
		// It runs as in a confidential VM of its own: --once.
		workers["w1"].stop(t)
		workers["w2"].stop(t)
		proxy := startProxy(t, fmt.Sprintf("127.0.0.1:%d", nc.nodes[1].port))
		w3 := startW(t, "w3", "nats://"+proxy.addr(), "--once")
		j := submit(t, A, "cutoff")
		waitFor(t, "w3 building", time.Minute, func() bool { return j.f.building("w3") }, func() string {
			return fmt.Sprintf("events of %s:\n%s\nw3 log:\n%s", j.id, eventLog(j.f.events()), harness.Tail(readFile(w3.logPath), 30))
		})
		proxy.setPaused(true)
		cut := time.Now()
		t.Logf("w3 cut off from NATS in the middle of %s", j.id)
		startW(t, "w2", "")
		select {
		case <-j.f.complete:
		case <-ctx.Done():
			t.Fatalf("job did not complete:\n%s", eventLog(j.f.events()))
		}
		done := time.Now()
		before := checkClusterJob(t, j, A, B, true)
		st, err := B.c.Status(ctx, j.id)
		if err != nil {
			t.Fatal(err)
		}
		// w3's own metrics (its listener is not behind the proxy) say
		// whether its builder finished while cut off.
		m := httpGet(t, "http://"+w3.metrics+"/metrics")
		w3built, _ := metricSum(m, "kettle_worker_builds_total", `status="succeeded"`)
		// w3 comes back; whatever it built may not count.
		proxy.setPaused(false)
		back := time.Now()
		var seen string
		waitFor(t, "w3 to drop its late outcome", 30*time.Second, func() bool {
			l := readFile(workers["w3"].logPath)
			for _, s := range []string{"outcome dropped", "build abandoned"} {
				if strings.Contains(l, s) {
					seen = s
					return true
				}
			}
			return false
		})
		t.Logf("cut (TTL %v) → attempt 2 done %v (partition lasted %v); w3's builder had returned %v successful builds; w3 back: %q after %v",
			clusterTTL, done.Sub(cut).Round(time.Millisecond), back.Sub(cut).Round(time.Millisecond), w3built, seen,
			time.Since(back).Round(time.Millisecond))
		// Its one build spent, the --once worker leaves (the retry went to
		// another CVM, never back to this one).
		select {
		case <-w3.done:
			if err := w3.cmd.ProcessState; !err.Success() {
				t.Errorf("kettle worker --once exited %v after the cut-off build", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("kettle worker --once still running after its cut-off build")
		}
		// Give a late write every chance to land, then look again.
		time.Sleep(time.Second)
		after := checkClusterJob(t, j, A, B, true)
		if !bytes.Equal(before, after) {
			t.Errorf("result of %s changed after the cut-off worker came back", j.id)
		}
		st2, err := B.c.Status(ctx, j.id)
		if err != nil {
			t.Fatal(err)
		}
		if st["result_sha256"] != st2["result_sha256"] || st2["attempt"] != float64(2) || st2["status"] != "succeeded" {
			t.Errorf("status changed after the cut-off worker came back: %v → %v", st, st2)
		}
		// The cut-off attempt left no result object behind, and the
		// job's points at attempt 2's.
		_, js := nc.connect(t)
		obs, err := js.ObjectStore(ctx, "kettle-objects")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := obs.GetInfo(ctx, "result/"+j.id+"/1"); err == nil {
			t.Errorf("the cut-off attempt's result object result/%s/1 is stored", j.id)
		}
		if _, err := obs.GetInfo(ctx, "result/"+j.id+"/2"); err != nil {
			t.Errorf("attempt 2's result object: %v", err)
		}
		// w3's builder may have finished its build while cut off (its own
		// metrics say what it ran); the cluster recorded one completion.
		for _, f := range []*frontEnd{A, B} {
			checkBuildMetrics(t, f, 9, 2)
		}
	})
}

// checkClusterJob checks that job j succeeded and that its result and log
// are the same through both front ends; retried says it was built twice
// (w1 or w3 lost, then w2). It returns the result.
func checkClusterJob(t *testing.T, j *clusterJob, A, B *frontEnd, retried bool) []byte {
	t.Helper()
	evs := j.f.events()
	res, err := harness.ParseComplete(evs[len(evs)-1])
	if err != nil || res.Status != "ok" {
		t.Fatalf("job %s: %+v %v\n%s", j.id, res, err, eventLog(evs))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	logs := map[string]string{}
	var results [][]byte
	for _, f := range []*frontEnd{A, B} {
		got, err := f.c.Wait(ctx, j.id)
		if err != nil {
			t.Fatalf("replay of %s through %s: %v", j.id, f.name, err)
		}
		logs[f.name] = eventLog(got)
		st, err := f.c.Status(ctx, j.id)
		if err != nil {
			t.Fatal(err)
		}
		want := float64(1)
		if retried {
			want = 2
		}
		if st["attempt"] != want || st["status"] != "succeeded" {
			t.Errorf("status of %s through %s: attempt %v status %v, want attempt %v succeeded", j.id, f.name, st["attempt"], st["status"], want)
		}
		b, _ := download(t, f.c, j.id)
		results = append(results, b)
	}
	if logs["A"] != logs["B"] {
		t.Errorf("log of %s differs between front ends:\nA:\n%s\nB:\n%s", j.id, logs["A"], logs["B"])
	}
	if logs["B"] != eventLog(evs) {
		t.Errorf("replayed log of %s differs from the one followed live:\nlive:\n%s\nreplay:\n%s", j.id, eventLog(evs), logs["B"])
	}
	if !bytes.Equal(results[0], results[1]) || len(results[0]) == 0 {
		t.Errorf("result of %s differs between front ends (%d and %d bytes)", j.id, len(results[0]), len(results[1]))
	}
	if n := strings.Count(logs["B"], `"type":"complete"`); n != 1 {
		t.Errorf("log of %s has %d complete events", j.id, n)
	}
	// The attempts, in order: who took the job, then (when retried) the
	// loss and the second attempt on w2, each followed by its own build.
	var marks []string
	re := regexp.MustCompile(`worker (\w+) took the job|worker (\w+) lost; the job is queued again for attempt 2 of 3|worker (\w+) lost; attempt 2 on (\w+)|"type":"complete"`)
	for _, e := range evs {
		if m := re.FindString(e.Data); m != "" {
			marks = append(marks, m)
		}
	}
	if !retried {
		if len(marks) != 2 || !strings.Contains(marks[0], "took the job") {
			t.Errorf("job %s: attempts %q, want one\n%s", j.id, marks, eventLog(evs))
		}
		return results[0]
	}
	lostW := "w1"
	if len(marks) > 0 && strings.Contains(marks[0], "w3") {
		lostW = "w3"
	}
	want := []string{"worker " + lostW + " took the job", "worker " + lostW + " lost; the job is queued again for attempt 2 of 3",
		"worker " + lostW + " lost; attempt 2 on w2", `"type":"complete"`}
	if strings.Join(marks, "|") != strings.Join(want, "|") {
		t.Errorf("job %s: attempts %q, want %q\n%s", j.id, marks, want, eventLog(evs))
	}
	// Each attempt's build output sits between its start and the next.
	idx := func(s string) int {
		for i, e := range evs {
			if strings.Contains(e.Data, s) {
				return i
			}
		}
		return -1
	}
	a1, lostAt, a2 := idx(want[0]), idx(want[1]), idx(want[2])
	if !(a1 < lostAt && lostAt < a2) || !hasType(evs[a1:lostAt], "build") || !hasType(evs[a2:], "build") {
		t.Errorf("job %s: log does not replay both attempts in order\n%s", j.id, eventLog(evs))
	}
	return results[0]
}

func hasType(evs []harness.Event, typ string) bool {
	for _, e := range evs {
		if e.Type == typ {
			return true
		}
	}
	return false
}

func checkBuildMetrics(t *testing.T, f *frontEnd, succeeded, retries float64) {
	t.Helper()
	m, err := f.c.Metrics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n, _ := metricSum(m, "kettle_builds_total", `status="succeeded"`, `toolchain="cargo"`)
	all, _ := metricSum(m, "kettle_builds_total")
	r, _ := metricSum(m, "kettle_build_retries_total")
	lost, _ := metricSum(m, "kettle_lost_workers_total")
	if n != succeeded || all != succeeded || r != retries || lost != retries {
		t.Errorf("front end %s /metrics: %v succeeded cargo builds of %v, %v retries, %v lost workers; want %v, %v, %v:\n%s",
			f.name, n, all, r, lost, succeeded, retries, retries, grepLines(m, "kettle_build"))
	}
}

func grepLines(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) || strings.HasPrefix(l, "kettle_lost") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
