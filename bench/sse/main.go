// Command sse is the SSE load benchmark of docs/benchmarks.md: N concurrent watchers
// (default 1,000) plus deliberately slow readers follow one build's event
// stream through the real HTTP handler (api) and the real job store
// (embedded NATS JetStream, jobs). A synthetic builder emits events carrying
// their emission time, so each watcher measures delivery latency; every
// watcher must receive every event exactly once, in order.
//
//	go run ./bench/sse -watchers 1000 -events 2000 -rate 2000
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kettle-build/kettle/api"
	"github.com/kettle-build/kettle/bench/harness"
	"github.com/kettle-build/kettle/events"
	"github.com/kettle-build/kettle/jobs"
)

func main() {
	watchers := flag.Int("watchers", 1000, "concurrent fast watchers")
	slow := flag.Int("slow", 1, "deliberately slow watchers")
	slowRate := flag.Int("slow-rate", 16<<10, "bytes per second a slow watcher reads")
	nEvents := flag.Int("events", 2000, "build events to emit")
	rate := flag.Int("rate", 2000, "events per second the builder emits (0 = as fast as possible)")
	msgLen := flag.Int("msg", 80, "bytes of padding per event message")
	coalesce := flag.Duration("coalesce", api.DefaultCoalesce, "shortest time between two writes to one watcher (api.WithCoalesce)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run (server and clients)")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	coalesceOpt = api.WithCoalesce(*coalesce)
	if err := run(*watchers, *slow, *slowRate, *nEvents, *rate, *msgLen); err != nil {
		fmt.Fprintln(os.Stderr, "sse bench:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

var coalesceOpt api.Option

// stampBuilder emits n build events "t=<unix ns> seq=<i> <padding>" at a
// fixed rate once start is closed.
type stampBuilder struct {
	n, rate, pad int
	start        chan struct{}
	dir          string
	emitted      time.Duration // how long emitting took (Emit may block on the store)
}

func (b *stampBuilder) Build(ctx context.Context, job *jobs.Job, sink events.Sink) (*jobs.Outcome, error) {
	select {
	case <-b.start:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	pad := strings.Repeat("x", b.pad)
	var tick *time.Ticker
	if b.rate > 0 {
		tick = time.NewTicker(time.Second / time.Duration(b.rate))
		defer tick.Stop()
	}
	t0 := time.Now()
	defer func() { b.emitted = time.Since(t0) }()
	for i := 0; i < b.n; i++ {
		if tick != nil {
			<-tick.C
		}
		sink.Emit(events.Event{Type: events.Build, Msg: fmt.Sprintf("t=%d seq=%d %s", time.Now().UnixNano(), i, pad)})
	}
	p := filepath.Join(b.dir, "result-"+job.ID+".tar.gz")
	if err := os.WriteFile(p, []byte("\x1f\x8b not a real tarball"), 0o644); err != nil {
		return nil, err
	}
	return &jobs.Outcome{ResultPath: p, ResultName: "bench", Toolchain: "bench"}, nil
}

type watcherResult struct {
	events    int
	latencies []time.Duration
	err       error
	took      time.Duration
}

func raiseNoFile() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

func run(nWatchers, nSlow, slowRate, nEvents, rate, pad int) error {
	raiseNoFile()
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "kettle-sse-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	store, err := jobs.OpenEmbedded(ctx, filepath.Join(dir, "store"), jobs.WithLogger(logger),
		jobs.WithMaxEvents(nEvents+100))
	if err != nil {
		return err
	}
	defer store.Close()
	b := &stampBuilder{n: nEvents, rate: rate, pad: pad, start: make(chan struct{}), dir: dir}
	wctx, stopWorker := context.WithCancel(ctx)
	defer stopWorker()
	go store.RunWorker(wctx, "bench", b)

	h := api.New(store, api.WithLogger(logger), api.WithSpoolDir(dir), coalesceOpt)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	defer srv.Close()
	c := &harness.Client{URL: "http://" + ln.Addr().String(), HTTP: &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: nWatchers + nSlow + 10, DisableCompression: true}}}

	id, err := c.SubmitArchive(ctx, []byte("\x1f\x8b\x08\x00 bench source"), "bench.tar.gz", harness.NewNonce())
	if err != nil {
		return fmt.Errorf("submit: %w", err)
	}

	total := nWatchers + nSlow
	var connected sync.WaitGroup
	connected.Add(total)
	results := make([]watcherResult, total)
	var wg sync.WaitGroup
	var fastDone atomic.Int64
	for w := 0; w < total; w++ {
		wg.Add(1)
		isSlow := w >= nWatchers
		go func() {
			defer wg.Done()
			results[w] = watch(ctx, c, id, isSlow, slowRate, &connected)
			if !isSlow {
				fastDone.Add(1)
			}
		}()
	}
	connected.Wait()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	t0 := time.Now()
	close(b.start)
	// Time until every fast watcher is done, separately from the slow ones.
	for fastDone.Load() < int64(nWatchers) {
		time.Sleep(5 * time.Millisecond)
	}
	fastTook := time.Since(t0)
	wg.Wait()
	allTook := time.Since(t0)
	mem, _ := harness.ReadMem(os.Getpid())

	// queued + vm + n build events + complete, at least; each watcher's log
	// must be identical in length and strictly in order (checked in watch).
	var all []time.Duration
	var slowLat []time.Duration
	counts := map[int]int{}
	failures := 0
	for w, r := range results {
		if r.err != nil {
			failures++
			if failures <= 5 {
				fmt.Fprintf(os.Stderr, "watcher %d: %v\n", w, r.err)
			}
			continue
		}
		counts[r.events]++
		if w < nWatchers {
			all = append(all, r.latencies...)
		} else {
			slowLat = append(slowLat, r.latencies...)
		}
	}
	slices.Sort(all)
	pct := func(d []time.Duration, p float64) time.Duration {
		if len(d) == 0 {
			return 0
		}
		return d[min(len(d)-1, int(float64(len(d))*p))]
	}
	fmt.Printf("watchers=%d slow=%d (at %d B/s) events=%d rate=%d/s GOMAXPROCS=%d\n", nWatchers, nSlow, slowRate, nEvents, rate, runtime.GOMAXPROCS(0))
	fmt.Printf("failed watchers: %d; events per watcher (count→watchers): %v\n", failures, counts)
	fmt.Printf("builder emitted %d events in %v (nominal %v)\n", nEvents, b.emitted.Round(time.Millisecond),
		(time.Duration(nEvents) * time.Second / time.Duration(max(rate, 1))).Round(time.Millisecond))
	fmt.Printf("fast watchers done in %v; all (incl. slow) in %v\n", fastTook.Round(time.Millisecond), allTook.Round(time.Millisecond))
	fmt.Printf("delivery latency over %d deliveries: p50=%v p90=%v p99=%v p99.9=%v max=%v\n", len(all),
		pct(all, .5).Round(time.Microsecond), pct(all, .9).Round(time.Microsecond), pct(all, .99).Round(time.Microsecond),
		pct(all, .999).Round(time.Microsecond), pct(all, 1).Round(time.Microsecond))
	fmt.Printf("process RSS now %d MiB, peak %d MiB\n", mem.RSS>>20, mem.HWM>>20)
	if failures > 0 || len(counts) != 1 {
		return fmt.Errorf("%d watchers failed or logs differ in length: %v", failures, counts)
	}
	if p := pct(all, .99); p > 100*time.Millisecond {
		return fmt.Errorf("p99 %v over the 100 ms budget", p)
	}
	return nil
}

// watch follows the job's events, checks ids are 0,1,2… and build seqs are
// 0,1,2…, and records each build event's latency.
func watch(ctx context.Context, c *harness.Client, id string, slow bool, slowRate int, connected *sync.WaitGroup) watcherResult {
	start := time.Now()
	resp, err := c.Do(ctx, "GET", "/build/"+id+"/events", "", nil)
	if err != nil {
		connected.Done()
		return watcherResult{err: err}
	}
	defer resp.Body.Close()
	var body io.Reader = resp.Body
	if slow {
		body = &throttle{r: resp.Body, rate: slowRate}
	}
	var res watcherResult
	res.latencies = make([]time.Duration, 0, 4096)
	first := true
	next, seq := 0, 0
	err = harness.ReadSSE(body, nil, func(e harness.Event) error {
		if first {
			first = false
			connected.Done()
		}
		if e.ID != next {
			return fmt.Errorf("got id %d, want %d", e.ID, next)
		}
		next++
		res.events++
		if e.Type != "build" {
			return nil
		}
		i := strings.Index(e.Data, "t=")
		j := strings.Index(e.Data, " seq=")
		if i < 0 || j < 0 {
			return nil
		}
		ns, _ := strconv.ParseInt(e.Data[i+2:j], 10, 64)
		rest := e.Data[j+5:]
		k := strings.IndexByte(rest, ' ')
		s, _ := strconv.Atoi(rest[:k])
		if s != seq {
			return fmt.Errorf("got seq %d, want %d", s, seq)
		}
		seq++
		res.latencies = append(res.latencies, e.At.Sub(time.Unix(0, ns)))
		return nil
	})
	if first {
		connected.Done()
	}
	res.err = err
	if err == nil && (res.events == 0) {
		res.err = fmt.Errorf("no events")
	}
	res.took = time.Since(start)
	return res
}

// throttle reads at most rate bytes per second in small chunks.
type throttle struct {
	r    io.Reader
	rate int
}

func (t *throttle) Read(p []byte) (int, error) {
	chunk := max(t.rate/20, 1)
	if len(p) > chunk {
		p = p[:chunk]
	}
	time.Sleep(50 * time.Millisecond)
	return t.r.Read(p)
}
