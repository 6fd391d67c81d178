package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kettle-build/kettle/jobs"
	"github.com/kettle-build/kettle/worker"
)

func init() {
	register("worker", "build jobs of a kettle cluster (--nats URL); --once: one job, then exit", runWorkerCmd)
}

type workerFlags struct {
	natsURL, name, workDir, logLevel string
	metricsListen                    string
	once                             bool
	shutdownMax                      time.Duration
	build                            builderFlags
	nats                             natsFlags
	budget                           budgetFlags
	depCache                         depCacheFlags
}

func runWorkerCmd(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	var c workerFlags
	host, _ := os.Hostname()
	fs.StringVar(&c.natsURL, "nats", "", "URL of the NATS JetStream cluster to join (required)")
	fs.BoolVar(&c.once, "once", false, "build one job, then exit (a fresh confidential VM per build)")
	fs.StringVar(&c.name, "name", fmt.Sprintf("%s-%d", host, os.Getpid()), "worker name shown in job logs")
	fs.DurationVar(&c.shutdownMax, "shutdown-timeout", defaultShutdownTimeout, "on SIGTERM, how long a running build may finish before it is marked Interrupted")
	fs.StringVar(&c.workDir, "work-dir", filepath.Join(os.TempDir(), "kettle-worker"), "directory for job work trees")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&c.metricsListen, "metrics-listen", "", "serve Prometheus metrics of this process and its builds at http://ADDR/metrics (e.g. 127.0.0.1:9102)")
	c.build.register(fs)
	c.nats.register(fs, false)
	c.budget.register(fs)
	c.depCache.register(fs, "the user cache directory's kettle/depcache")
	if err := parseFlags(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintln(os.Stderr, "kettle worker:", err)
		return exitBadArgs
	}
	if c.natsURL == "" || fs.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "kettle worker: --nats URL is required and no arguments are taken")
		return exitBadArgs
	}
	if err := c.nats.check(); err != nil {
		fmt.Fprintln(os.Stderr, "kettle worker:", err)
		return exitBadArgs
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		fmt.Fprintln(os.Stderr, "kettle worker: --log-level:", err)
		return exitBadArgs
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if err := workerMain(ctx, c, logger); err != nil {
		logger.Error("kettle worker failed", "err", err)
		return exitFailed
	}
	return exitOK
}

func workerMain(ctx context.Context, c workerFlags, logger *slog.Logger) error {
	wm := worker.NewMetrics()
	depCache, err := c.depCache.open(defaultDepCacheDir(), logger)
	if err != nil {
		return err
	}
	b, err := newBuilder(ctx, logger, c.build, buildHost{workDir: c.workDir, workers: 1, natsURL: c.natsURL, metrics: wm, depCache: depCache})
	if err != nil {
		return err
	}
	// Leftovers of a killed worker are garbage: the store re-runs or
	// interrupts its jobs.
	if err := os.RemoveAll(c.workDir); err != nil {
		return err
	}
	if err := os.MkdirAll(c.workDir, 0o700); err != nil {
		return err
	}
	// Nor does anything outlive a clean exit (the default is under TMPDIR).
	defer os.RemoveAll(c.workDir)
	opts := append([]jobs.Option{jobs.WithLogger(logger), jobs.WithTempDir(filepath.Join(c.workDir, "spool"))}, c.nats.options()...)
	store, err := jobs.Connect(ctx, c.natsURL, append(opts, c.budget.options()...)...)
	if err != nil {
		return err
	}
	defer store.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := wm.Register(reg); err != nil {
		return err
	}
	if c.metricsListen != "" {
		ln, err := net.Listen("tcp", c.metricsListen)
		if err != nil {
			return fmt.Errorf("--metrics-listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
		logger.Info("metrics", "addr", ln.Addr().String())
	}
	logger.Info("kettle worker joined", "nats", jobs.RedactURL(c.natsURL), "name", c.name, "once", c.once,
		"sandbox", b.runner.Name(), "attester", b.att.Platform())

	// The worker stops taking jobs when ctx ends (SIGTERM); a build in
	// progress may finish within --shutdown-timeout.
	done := make(chan error, 1)
	go func() {
		if c.once {
			done <- store.RunOnce(ctx, c.name, b)
		} else {
			done <- store.RunWorker(ctx, c.name, b)
		}
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	logger.Info("stopping: no new jobs; waiting for the running build", "deadline", c.shutdownMax.String())
	sctx, cancel := context.WithTimeout(context.Background(), c.shutdownMax)
	defer cancel()
	if err := store.Shutdown(sctx); err != nil {
		logger.Warn("shutdown", "err", err)
	}
	return <-done
}
