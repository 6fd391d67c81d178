package main

import (
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kettle-build/kettle/depcache"
	"github.com/kettle-build/kettle/jobs"
)

// natsFlags are the job store's connection flags, shared by `kettle serve`
// and `kettle worker`.
type natsFlags struct {
	creds, ca, cert, key string
	// the cluster's shape: every process of one cluster must agree
	replicas  int
	workerTTL time.Duration
	// serve only: TLS of the embedded store's --nats-listen
	listenCert, listenKey string
}

func (n *natsFlags) register(fs *flag.FlagSet, serve bool) {
	fs.StringVar(&n.creds, "nats-creds", "", "credentials for --nats: the member.nk an embedded store generated, an nkey seed, a NATS .creds file, a user:password line or a token line")
	fs.StringVar(&n.ca, "nats-ca", "", "PEM CA bundle that verifies the NATS server's TLS certificate (--nats tls://…)")
	fs.StringVar(&n.cert, "nats-cert", "", "PEM client certificate for NATS mutual TLS (with --nats-key)")
	fs.StringVar(&n.key, "nats-key", "", "PEM key of --nats-cert")
	fs.IntVar(&n.replicas, "nats-replicas", jobs.DefaultReplicas, "JetStream replicas of kettle's streams and buckets (3 on a three-node NATS cluster, so a lost node loses nothing); the same on every process of a cluster")
	fs.DurationVar(&n.workerTTL, "worker-ttl", jobs.DefaultWorkerTTL, "a worker counts as lost this long after its last heartbeat (it beats every quarter), and its job goes to another; the same on every process of a cluster")
	if serve {
		fs.StringVar(&n.listenCert, "nats-listen-cert", "", "PEM certificate: --nats-listen speaks TLS only (with --nats-listen-key)")
		fs.StringVar(&n.listenKey, "nats-listen-key", "", "PEM key of --nats-listen-cert")
	}
}

// check validates the cluster-shape flags.
func (n *natsFlags) check() error {
	if n.replicas < 1 || n.replicas > 5 {
		return fmt.Errorf("--nats-replicas must be 1 to 5 (JetStream's limit), not %d", n.replicas)
	}
	// Heartbeats go every quarter of it; below this a busy NATS server
	// would make live workers look lost.
	if n.workerTTL < time.Second {
		return fmt.Errorf("--worker-ttl must be at least 1s, not %v", n.workerTTL)
	}
	return nil
}

// options are the store options of these flags for jobs.Connect.
func (n *natsFlags) options() []jobs.Option {
	return []jobs.Option{jobs.WithClientAuth(jobs.ClientAuth{CredsFile: n.creds, CAFile: n.ca, CertFile: n.cert, KeyFile: n.key}),
		jobs.WithReplicas(n.replicas), jobs.WithWorkerTTL(n.workerTTL)}
}

// budgetFlags are the per-job budgets a process enforces on the builds it
// runs (the log cap applies where the build runs, so workers take them too).
type budgetFlags struct {
	maxEvents              int
	maxLogBytes, maxResult serveByteSize
}

func (b *budgetFlags) register(fs *flag.FlagSet) {
	b.maxLogBytes = serveByteSize(jobs.DefaultMaxLogBytes)
	b.maxResult = serveByteSize(jobs.DefaultMaxResult)
	fs.IntVar(&b.maxEvents, "max-events", jobs.DefaultMaxEvents, "build output lines kept per job; the rest is summarised in one event")
	fs.Var(&b.maxLogBytes, "max-log-bytes", "build output bytes stored per job (e.g. 64MiB); the rest is dropped and summarised, the build goes on")
	fs.Var(&b.maxResult, "max-result", "largest result tarball a job may store (e.g. 2GiB); a larger one fails the job with LimitExceeded")
}

func (b *budgetFlags) options() []jobs.Option {
	return []jobs.Option{jobs.WithMaxEvents(b.maxEvents), jobs.WithMaxLogBytes(int64(b.maxLogBytes)), jobs.WithMaxResult(int64(b.maxResult))}
}

// loopbackListen reports whether addr (host:port) only listens on
// loopback: an empty host or a wildcard address listens everywhere.
func loopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// parseOrigins reads --cors-origins: comma-separated scheme://host[:port]
// origins, or "*".
func parseOrigins(v string) ([]string, error) {
	var out []string
	for _, o := range strings.Split(v, ",") {
		o = strings.TrimSuffix(strings.TrimSpace(o), "/")
		if o == "" {
			continue
		}
		if o != "*" {
			u, err := url.Parse(o)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" ||
				u.RawQuery != "" || u.Fragment != "" || u.User != nil {
				return nil, fmt.Errorf("--cors-origins: %q is not an origin (want https://host[:port])", o)
			}
		}
		out = append(out, o)
	}
	return out, nil
}

// warnOpenAccess warns when anyone who can reach the HTTP port may submit
// builds, or any web page may drive the API.
func warnOpenAccess(logger *slog.Logger, listen string, token bool, origins []string) {
	if !token && !loopbackListen(listen) {
		logger.Warn("!!! NO AUTHENTICATION: --listen is not loopback-only and no --auth-token-file is set; anyone who can reach this port can submit builds !!!",
			"listen", listen)
	}
	for _, o := range origins {
		if o == "*" {
			logger.Warn("--cors-origins '*': every web page a user of this service opens may call its API", "auth", token)
		}
	}
}

// storeJoinHint is the log line that tells how workers join an embedded
// store's listener.
func storeJoinHint(logger *slog.Logger, url, creds, listen string, tls bool) {
	if !tls && !loopbackListen(listen) {
		logger.Warn("--nats-listen is reachable beyond loopback without TLS: sources, results and the session travel in clear text; give --nats-listen-cert/--nats-listen-key",
			"nats_listen", listen)
	}
	join := fmt.Sprintf("kettle worker --nats %s --nats-creds %s", url, creds)
	if tls {
		join = fmt.Sprintf("kettle worker --nats %s --nats-ca CA_OF_THE_LISTENER_CERT --nats-creds %s", strings.Replace(url, "nats://", "tls://", 1), creds)
	}
	logger.Info("embedded job store accepts workers and front ends with its credentials",
		"nats", url, "creds", creds, "join", join)
}

// depCacheFlags configure the dependency cache shared by the builds of a
// process (package depcache), for `kettle serve` and `kettle worker`.
type depCacheFlags struct {
	dir  string
	size serveByteSize
}

// register adds the flags; where describes the default directory.
func (d *depCacheFlags) register(fs *flag.FlagSet, where string) {
	d.size = serveByteSize(depcache.DefaultSize)
	fs.StringVar(&d.dir, "dep-cache-dir", "", "dependency cache shared between jobs (Go modules), filled and checked by kettle only, read-only in sandboxes (default "+where+")")
	fs.Var(&d.size, "dep-cache-size", "byte budget of --dep-cache-dir (e.g. 4GiB); least recently used entries are evicted; 0 disables the shared cache")
}

// open opens the cache (at defaultDir without --dep-cache-dir), or
// returns nil when --dep-cache-size is 0.
func (d *depCacheFlags) open(defaultDir string, logger *slog.Logger) (*depcache.Cache, error) {
	if d.size <= 0 {
		return nil, nil
	}
	dir := d.dir
	if dir == "" {
		dir = defaultDir
	}
	c, err := depcache.Open(dir, int64(d.size), logger)
	if err != nil {
		return nil, fmt.Errorf("--dep-cache-dir: %w", err)
	}
	return c, nil
}

// defaultDepCacheDir is the worker's default --dep-cache-dir: its
// --work-dir is removed at exit, the cache is meant to outlive it.
func defaultDepCacheDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "kettle", "depcache")
	}
	return filepath.Join(os.TempDir(), "kettle-depcache")
}
