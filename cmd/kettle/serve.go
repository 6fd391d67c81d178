package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/kettle-build/kettle/api"
	"github.com/kettle-build/kettle/internal/bytesize"
	"github.com/kettle-build/kettle/jobs"
	"github.com/kettle-build/kettle/source"
	"github.com/kettle-build/kettle/web"
	"github.com/kettle-build/kettle/worker"
)

func init() {
	register("serve", "run the HTTP build service (docs/api.md)", runServe)
}

// serveByteSize is a flag holding a byte count: 1073741824, 1GiB, 512MiB,
// 64M, 10KB.
type serveByteSize int64

// String is the size as --help shows it and Set reads it back: whole
// KiB/MiB/GiB/TiB as such (64MiB), anything else in bytes.
func (s *serveByteSize) String() string {
	n := int64(*s)
	for _, u := range []struct {
		suffix string
		size   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

func (s *serveByteSize) Set(v string) error {
	n, err := bytesize.Parse(v)
	if err != nil {
		return err
	}
	*s = serveByteSize(n)
	return nil
}

// serveDuration is a time.Duration flag that also accepts days: 7d, 1d12h.
type serveDuration time.Duration

func (d *serveDuration) String() string { return time.Duration(*d).String() }

func (d *serveDuration) Set(v string) error {
	n, err := parseDays(v)
	if err != nil {
		return err
	}
	*d = serveDuration(n)
	return nil
}

func parseDays(v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	var days int64
	if i := strings.IndexByte(v, 'd'); i > 0 {
		n, err := strconv.ParseInt(v[:i], 10, 64)
		if err != nil || n < 0 || n > 100000 {
			return 0, fmt.Errorf("invalid duration %q", v)
		}
		days, v = n, v[i+1:]
	}
	var rest time.Duration
	if v != "" {
		var err error
		if rest, err = time.ParseDuration(v); err != nil {
			return 0, fmt.Errorf("invalid duration %q", v)
		}
	}
	return time.Duration(days)*24*time.Hour + rest, nil
}

type serveConfig struct {
	listen, dataDir, natsURL  string
	natsListen                string
	workers, queueLimit       int
	maxAttempts               int
	maxUpload                 serveByteSize
	retention                 serveDuration
	shutdownMax               time.Duration
	build                     builderFlags
	simMeas                   simMeasurementFlag
	singleBuild               bool
	authTokenFile             string
	cors, logFormat, logLevel string
	nats                      natsFlags
	budget                    budgetFlags
	depCache                  depCacheFlags
}

func runServe(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var c serveConfig
	c.maxUpload = serveByteSize(api.DefaultMaxUpload)
	c.retention = serveDuration(jobs.DefaultRetention)
	fs.StringVar(&c.listen, "listen", ":8080", "address to listen on (KETTLE_PORT is honoured when unset)")
	fs.StringVar(&c.dataDir, "data-dir", "./kettle-data", "directory of the embedded job store, uploads and work trees")
	fs.StringVar(&c.natsURL, "nats", "", "join an external NATS JetStream cluster instead of the embedded store")
	fs.StringVar(&c.natsListen, "nats-listen", "", "let kettle workers and other front ends join the embedded store at this `address` (e.g. 127.0.0.1:4222)")
	fs.IntVar(&c.workers, "workers", 1, "builds run in parallel by this process (with --nats: 0 unless given)")
	fs.IntVar(&c.queueLimit, "queue-limit", jobs.DefaultQueueLimit, "queued jobs before submissions answer 503 (0 = no limit)")
	fs.IntVar(&c.maxAttempts, "max-attempts", jobs.DefaultMaxAttempts, "workers that may take a job submitted here: a job whose worker is lost is built again until then (1 with --single-build)")
	fs.Var(&c.maxUpload, "max-upload", "largest uploaded source archive (e.g. 1GiB)")
	fs.Var(&c.retention, "retention", "how long results and logs are kept (e.g. 7d)")
	fs.DurationVar(&c.shutdownMax, "shutdown-timeout", defaultShutdownTimeout, "on SIGTERM, how long running builds may finish before they are marked Interrupted")
	fs.Var(&c.simMeas, "sim-measurement", simMeasurementUsage)
	fs.BoolVar(&c.singleBuild, "single-build", false, "accept exactly one build, ever (confidential-VM mode)")
	fs.StringVar(&c.authTokenFile, "auth-token-file", "", "require this bearer token (file content) on POST routes")
	fs.StringVar(&c.cors, "cors-origins", "", "comma-separated origins (https://host[:port]) whose web pages may call the API; default none")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	c.build.register(fs)
	c.nats.register(fs, true)
	c.budget.register(fs)
	c.depCache.register(fs, "DATA-DIR/depcache")
	if err := parseFlags(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintln(os.Stderr, "kettle serve:", err)
		return exitBadArgs
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "kettle serve: unexpected argument %q\n", fs.Arg(0))
		return exitBadArgs
	}
	if err := c.nats.check(); err != nil {
		fmt.Fprintln(os.Stderr, "kettle serve:", err)
		return exitBadArgs
	}
	if _, err := c.simMeas.options(c.build.attester); err != nil {
		fmt.Fprintln(os.Stderr, "kettle serve:", err)
		return exitBadArgs
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["listen"] {
		if p := os.Getenv("KETTLE_PORT"); p != "" { // the peer's variable
			c.listen = ":" + p
		}
	}
	if c.natsURL != "" && !set["workers"] {
		c.workers = 0 // a clustered front end builds only when asked to
	}
	logger, err := newServeLogger(c.logFormat, c.logLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kettle serve:", err)
		return exitBadArgs
	}
	slog.SetDefault(logger)
	if err := serve(ctx, c, logger); err != nil {
		logger.Error("kettle serve failed", "err", err)
		return exitFailed
	}
	return exitOK
}

func newServeLogger(format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format must be text or json, not %q", format)
}

func serve(ctx context.Context, c serveConfig, logger *slog.Logger) error {
	var token string
	if c.authTokenFile != "" {
		b, err := os.ReadFile(c.authTokenFile)
		if err != nil {
			return fmt.Errorf("--auth-token-file: %w", err)
		}
		token = strings.TrimSpace(string(b))
		if token == "" {
			return errors.New("--auth-token-file is empty")
		}
	}
	dataDir, err := filepath.Abs(c.dataDir)
	if err != nil {
		return err
	}
	spool := filepath.Join(dataDir, "spool")
	work := filepath.Join(dataDir, "work")
	// Leftovers of a previous process (killed mid-upload or mid-build) are
	// garbage: accepted jobs live in the store, not here. They are moved
	// aside and removed in the background, since a child of the killed
	// process (git, the sandbox) may still be writing into them.
	for _, d := range []string{spool, work} {
		if _, err := os.Stat(d); err == nil {
			trash := filepath.Join(dataDir, fmt.Sprintf("trash-%d-%s", time.Now().UnixNano(), filepath.Base(d)))
			if err := os.Rename(d, trash); err != nil {
				return fmt.Errorf("move aside %s: %w", filepath.Base(d), err)
			}
		}
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	go removeTrash(dataDir, logger)

	// Build metrics come from job state: every finished job of the
	// cluster, whichever process built it.
	metrics := api.NewMetrics()
	storeOpts := []jobs.Option{
		jobs.WithFinished(metrics.ObserveJob),
		jobs.WithMaxAttempts(c.maxAttempts),
		jobs.WithWorkerTTL(c.nats.workerTTL),
		jobs.WithQueueLimit(c.queueLimit),
		jobs.WithRetention(time.Duration(c.retention)),
		jobs.WithLogger(logger),
		// Workers spool uploaded sources beside the API's uploads: in the
		// data dir, hidden from builds, swept at start (never TMPDIR).
		jobs.WithTempDir(spool),
	}
	storeOpts = append(storeOpts, c.budget.options()...)
	if c.singleBuild {
		storeOpts = append(storeOpts, jobs.WithSingleBuild())
	}
	if c.natsListen != "" {
		if c.natsURL != "" {
			return errors.New("--nats-listen is for the embedded store; it cannot be combined with --nats")
		}
		storeOpts = append(storeOpts, jobs.WithListen(c.natsListen), jobs.WithListenTLS(c.nats.listenCert, c.nats.listenKey))
	} else if c.nats.listenCert != "" || c.nats.listenKey != "" {
		return errors.New("--nats-listen-cert and --nats-listen-key need --nats-listen")
	}
	var store *jobs.Store
	if c.natsURL != "" {
		store, err = jobs.Connect(ctx, c.natsURL, append(storeOpts, c.nats.options()...)...)
	} else {
		store, err = jobs.OpenEmbedded(ctx, filepath.Join(dataDir, "store"), storeOpts...)
	}
	if err != nil {
		return fmt.Errorf("open job store: %w", err)
	}
	defer store.Close()
	if u := store.URL(); u != "" {
		storeJoinHint(logger, u, store.CredsFile(), c.natsListen, c.nats.listenCert != "")
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	wm := worker.NewMetrics() // builds of this process's own workers
	if err := wm.Register(reg); err != nil {
		return err
	}
	if qd, ok := any(store).(interface {
		QueueDepth(context.Context) (int, error)
	}); ok {
		metrics.SetQueueDepth(qd.QueueDepth)
	}

	policy := c.build.policy(ownListeners(c.listen, c.natsListen, c.natsURL)...)
	workerCtx, stopWorkers := context.WithCancel(context.Background())
	defer stopWorkers()
	var workersDone sync.WaitGroup
	if c.workers > 0 {
		simOpts, err := c.simMeas.options(c.build.attester)
		if err != nil {
			return err
		}
		// The project directory is the only part of the data dir a build
		// sees; hiding the store and the upload spool is defence in depth.
		depCache, err := c.depCache.open(filepath.Join(dataDir, "depcache"), logger)
		if err != nil {
			return err
		}
		b, err := newBuilder(ctx, logger, c.build, buildHost{
			workDir: work, workers: c.workers, depCache: depCache,
			hidden: []string{filepath.Join(dataDir, "store"), spool},
			listen: c.listen, natsListen: c.natsListen, natsURL: c.natsURL,
			attest: simOpts, metrics: wm,
		})
		if err != nil {
			return err
		}
		if b.att.Platform() != "insecure" { // newBuilder warned
			logger.Info("attester", "platform", b.att.Platform())
		}
		logger.Info("sandbox", "runner", b.runner.Name())
		host, _ := os.Hostname()
		for i := 0; i < c.workers; i++ {
			name := fmt.Sprintf("%s-%d-w%d", host, os.Getpid(), i)
			workersDone.Add(1)
			go func() {
				defer workersDone.Done()
				if err := store.RunWorker(workerCtx, name, b); err != nil && workerCtx.Err() == nil {
					logger.Error("worker stopped", "worker", name, "err", err)
				}
			}()
		}
	}

	origins, err := parseOrigins(c.cors)
	if err != nil {
		return err
	}
	warnOpenAccess(logger, c.listen, token != "", origins)
	h := api.New(store,
		api.WithMaxUpload(int64(c.maxUpload)),
		api.WithSpoolDir(spool),
		api.WithAuthToken(token),
		api.WithRepoChecker(func(ctx context.Context, url, ref string) error {
			return source.CheckRepo(ctx, url, ref, policy)
		}),
		api.WithCORS(origins...),
		api.WithLoopbackHosts(loopbackListen(c.listen)),
		api.WithLogger(logger),
		api.WithMetrics(reg, reg),
		api.WithMetricsCollector(metrics),
		api.WithUI(web.Handler()),
	)
	ln, err := net.Listen("tcp", c.listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          log.New(slogWriter{logger}, "", 0),
		// No Read/WriteTimeout: uploads and SSE streams are long; the api
		// sets per-write deadlines instead.
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	logger.Info("kettle serve listening", "addr", ln.Addr().String(), "data_dir", dataDir, "nats", jobs.RedactURL(c.natsURL),
		"workers", c.workers, "queue_limit", c.queueLimit, "max_upload", int64(c.maxUpload),
		"retention", time.Duration(c.retention).String(), "single_build", c.singleBuild, "auth", token != "")

	select {
	case err := <-serveErr:
		return err
	case <-ctx.Done():
	}

	// Graceful shutdown: stop accepting now; running builds may finish
	// (their watchers and synchronous submitters get the result) up to
	// --shutdown-timeout, after which the store marks them Interrupted.
	logger.Info("shutting down: no new connections; waiting for running builds", "deadline", c.shutdownMax.String())
	httpDone := make(chan error, 1)
	httpCtx, cancelHTTP := context.WithCancel(context.Background())
	defer cancelHTTP()
	go func() { httpDone <- srv.Shutdown(httpCtx) }()
	sctx, cancel := context.WithTimeout(context.Background(), c.shutdownMax)
	if err := store.Shutdown(sctx); err != nil {
		logger.Warn("store shutdown", "err", err)
	}
	cancel()
	stopWorkers()
	workersDone.Wait()
	// Let streams deliver the final events, then cut what is left.
	select {
	case <-httpDone:
	case <-time.After(5 * time.Second):
		cancelHTTP()
		srv.Close()
	}
	// Uploads cut by the shutdown were never accepted, and the workers are
	// done: nothing in the spool is wanted, so none of it outlives us.
	if err := os.RemoveAll(spool); err != nil {
		logger.Warn("cannot empty the upload spool", "err", err)
	}
	logger.Info("kettle serve stopped")
	return nil
}

// removeTrash deletes the moved-aside leftovers of earlier runs, retrying
// while stray children of a killed process finish.
func removeTrash(dataDir string, logger *slog.Logger) {
	matches, _ := filepath.Glob(filepath.Join(dataDir, "trash-*"))
	for _, m := range matches {
		var err error
		for i := 0; i < 30; i++ {
			if err = os.RemoveAll(m); err == nil {
				break
			}
			time.Sleep(time.Second)
		}
		if err != nil {
			logger.Warn("cannot remove leftovers of an earlier run", "dir", filepath.Base(m), "err", err)
		}
	}
}

// slogWriter routes net/http's internal log lines to slog.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Warn("http server", "msg", strings.TrimSpace(string(p)))
	return len(p), nil
}
