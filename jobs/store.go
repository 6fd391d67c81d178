package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// JetStream layout (docs/jobs.md). Every name is fixed so that any number of
// front ends and workers sharing one cluster agree on it.
const (
	workStream    = "KETTLE_WORK"    // work queue: one message per waiting job
	workSubject   = "kettle.work."   // + job id
	eventsStream  = "KETTLE_EVENTS"  // every job's event log
	eventsSubject = "kettle.events." // + job id
	jobsBucket    = "kettle-jobs"    // job state (KV, CAS updates)
	workersBucket = "kettle-workers" // worker heartbeats (KV with TTL)
	metaBucket    = "kettle-meta"    // the single-build gate
	objectBucket  = "kettle-objects" // source/<id> and result/<id>
	consumerName  = "workers"        // the durable work-queue consumer
	headerIndex   = "Kettle-Index"   // an event's 0-based index in its log
	headerAttempt = "Kettle-Attempt" // the attempt that wrote it (see logCursor)
	singleKey     = "single-build"
	// probePrefix starts the heartbeat-bucket keys janitors write to
	// learn that the bucket takes writes; worker ids never contain '.'.
	probePrefix = "probe."
)

// Defaults of the options.
const (
	// DefaultQueueLimit is `kettle serve --queue-limit`'s default too.
	DefaultQueueLimit = 100
	DefaultRetention  = 7 * 24 * time.Hour
	DefaultMaxEvents  = 100_000
	// DefaultMaxLogBytes bounds the build output one job stores: a log
	// is kept for the whole retention, and the line cap alone still
	// lets a job store 100,000 × 16 KiB.
	DefaultMaxLogBytes int64 = 64 << 20
	// DefaultMaxResult bounds one job's result tarball in the store.
	DefaultMaxResult int64 = 2 << 30
	defaultAckWait         = 30 * time.Second
	// DefaultWorkerTTL: a worker counts as lost this long after its last
	// heartbeat.
	DefaultWorkerTTL = 10 * time.Second
	// DefaultReplicas of kettle's streams and buckets.
	DefaultReplicas = 1
	// DefaultMaxAttempts bounds the workers that may take one job: a job
	// whose worker is lost is retried on another until then.
	DefaultMaxAttempts = 3
)

// Option configures a Store.
type Option func(*config)

type config struct {
	queueLimit  int
	retention   time.Duration
	singleBuild bool
	maxEvents   int
	logger      *slog.Logger
	clock       func() time.Time
	listen      string
	replicas    int
	ackWait     time.Duration
	workerTTL   time.Duration
	tempDir     string
	clientAuth  ClientAuth
	listenCert  string
	listenKey   string
	maxLogBytes int64
	maxResult   int64
	maxAttempts int
	onFinished  func(*Job)
}

// WithQueueLimit bounds the number of waiting jobs; Submit answers
// ErrQueueFull beyond it. Jobs that idle workers are about to take do not
// count. n <= 0 means no limit. Default DefaultQueueLimit.
func WithQueueLimit(n int) Option { return func(c *config) { c.queueLimit = n } }

// WithRetention sets how long job state, logs, sources and results are kept.
// Default DefaultRetention (7 days).
func WithRetention(d time.Duration) Option { return func(c *config) { c.retention = d } }

// WithSingleBuild makes the store accept exactly one build, ever: the gate
// is stored in JetStream, so it survives restarts (confidential-VM mode).
func WithSingleBuild() Option { return func(c *config) { c.singleBuild = true } }

// WithMaxEvents caps the `build` output lines kept per job (default
// DefaultMaxEvents); the rest are summarised in one event.
func WithMaxEvents(n int) Option { return func(c *config) { c.maxEvents = n } }

// WithMaxLogBytes caps the bytes of output lines stored per job (default
// DefaultMaxLogBytes); further lines are dropped and summarised in one
// event, and the build goes on.
func WithMaxLogBytes(n int64) Option { return func(c *config) { c.maxLogBytes = n } }

// WithMaxResult bounds a job's result tarball (default DefaultMaxResult);
// a larger one fails the job with error_type LimitExceeded.
func WithMaxResult(n int64) Option { return func(c *config) { c.maxResult = n } }

// WithLogger sets the structured logger; every job line carries its id.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithClock sets the clock of job timestamps (tests).
func WithClock(now func() time.Time) Option { return func(c *config) { c.clock = now } }

// WithListen makes OpenEmbedded also listen on addr (host:port, port 0 picks
// one) so external `kettle worker` processes can join; see Store.URL.
// Without it the embedded server has no network listener at all.
func WithListen(addr string) Option { return func(c *config) { c.listen = addr } }

// WithReplicas sets the JetStream replica count of every stream (clusters).
func WithReplicas(n int) Option { return func(c *config) { c.replicas = n } }

// WithAckWait sets how long a taken job stays invisible to other workers
// without an in-progress heartbeat (default 30 s; heartbeats every third).
func WithAckWait(d time.Duration) Option { return func(c *config) { c.ackWait = d } }

// WithWorkerTTL sets how long a worker counts as alive after its last
// heartbeat (default 10 s; heartbeats every quarter). A running job whose
// worker is gone is recovered within about this time.
func WithWorkerTTL(d time.Duration) Option { return func(c *config) { c.workerTTL = d } }

// WithTempDir sets the spool directory where workers copy an uploaded
// source out of the object store for the duration of its build. It must be
// private to the server (created 0700, never bound into a sandbox, never
// TMPDIR: a build that names a path there must find nothing of another
// job's). Default for OpenEmbedded: "spool" inside its data dir, emptied
// when the store opens; a store from Connect has no default, and its
// RunWorker fails without one.
func WithTempDir(dir string) Option { return func(c *config) { c.tempDir = dir } }

// WithMaxAttempts sets how many workers may take a job submitted through
// this store (default DefaultMaxAttempts): a job whose worker is lost goes
// back to the queue until then, and only then ends Interrupted. The value
// is stored with the job, so whichever process recovers it applies the
// submitter's. A single-build store allows 1: no other CVM may build it.
func WithMaxAttempts(n int) Option { return func(c *config) { c.maxAttempts = n } }

// WithFinished calls fn once for every job this store sees finished
// (succeeded or failed): those in the store when it opens and those that
// finish later, whichever process built them. Metrics of the whole cluster
// come from it. fn runs on the store's watcher goroutine and must not block.
func WithFinished(fn func(*Job)) Option { return func(c *config) { c.onFinished = fn } }

func newConfig(opts []Option) config {
	c := config{
		queueLimit: DefaultQueueLimit,
		retention:  DefaultRetention,
		maxEvents:  DefaultMaxEvents,
		clock:      time.Now,
		replicas:   DefaultReplicas,
		ackWait:    defaultAckWait,
		workerTTL:  DefaultWorkerTTL,
	}
	for _, o := range opts {
		o(&c)
	}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	if c.retention <= 0 {
		c.retention = DefaultRetention
	}
	if c.maxEvents <= 0 {
		c.maxEvents = DefaultMaxEvents
	}
	if c.maxLogBytes <= 0 {
		c.maxLogBytes = DefaultMaxLogBytes
	}
	if c.maxResult <= 0 {
		c.maxResult = DefaultMaxResult
	}
	if c.replicas <= 0 {
		c.replicas = 1
	}
	if c.maxAttempts <= 0 {
		c.maxAttempts = DefaultMaxAttempts
	}
	return c
}

// Store is the JetStream-backed job store; it implements Service and runs
// workers. It is safe for concurrent use.
type Store struct {
	cfg  config
	log  *slog.Logger
	ns   *server.Server // nil after Connect
	lock *os.File       // data dir lock of an embedded server
	// seedPath is the member credentials file of an embedded server
	// with a listener.
	seedPath string
	nc       *nats.Conn
	js       jetstream.JetStream

	work, evs jetstream.Stream
	cons      jetstream.Consumer
	jobs      jetstream.KeyValue
	workers   jetstream.KeyValue
	meta      jetstream.KeyValue
	objs      jetstream.ObjectStore

	ctx    context.Context // store lifetime
	cancel context.CancelFunc
	bg     sync.WaitGroup

	mu      sync.Mutex
	active  map[string]activeJob // queued and running jobs
	gone    map[string]uint64    // revision at which a job left active
	lastPos map[string]int       // last queue position this process published
	hubs    map[string]*hub
	posKick chan struct{}
	// suspects: running jobs (id/worker id) whose worker's heartbeat the
	// janitor found missing, since when (janitor goroutine only)
	suspects suspicion
	probeKey string // this process's write probe in the heartbeat bucket
	submitMu sync.Mutex

	// Worker control.
	takeCtx    context.Context // ends when Shutdown starts
	stopTaking context.CancelFunc
	buildsMu   sync.Mutex
	builds     map[string]context.CancelCauseFunc
	buildWG    sync.WaitGroup
	closing    atomic.Bool
	closeOnce  sync.Once
}

type activeJob struct {
	job *Job
	rev uint64
}

var (
	errInterrupted = errors.New("store shutting down")
	errClosed      = errors.New("store closed")
	errLost        = errors.New("job taken over by another worker")
)

// OpenEmbedded starts an in-process NATS server with JetStream storing its
// data under dataDir and opens the store on it. By default the server has no
// network listener (WithListen adds one). A lock file keeps two processes
// from opening the same dataDir.
func OpenEmbedded(ctx context.Context, dataDir string, opts ...Option) (*Store, error) {
	cfg := newConfig(opts)
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("jobs: data dir: %w", err)
	}
	lock, err := lockDir(dataDir)
	if err != nil {
		return nil, err
	}
	if cfg.tempDir == "" {
		// Spooled sources of a killed process are garbage (their jobs are
		// in the store); the lock says no one else uses this spool.
		cfg.tempDir = filepath.Join(dataDir, "spool")
		if err := os.RemoveAll(cfg.tempDir); err != nil {
			lock.Close()
			return nil, fmt.Errorf("jobs: clear spool dir: %w", err)
		}
	}
	sopts := &server.Options{
		ServerName: "kettle",
		JetStream:  true,
		StoreDir:   filepath.Join(dataDir, "jetstream"),
		DontListen: cfg.listen == "",
		NoSigs:     true,
		NoLog:      true,
		MaxPayload: 8 << 20,
	}
	fail := func(err error) (*Store, error) {
		lock.Close()
		return nil, err
	}
	self, seedPath, err := embeddedAuth(sopts, dataDir, cfg.listen != "")
	if err != nil {
		return fail(err)
	}
	if cfg.listen != "" {
		host, port, err := net.SplitHostPort(cfg.listen)
		if err != nil {
			return fail(fmt.Errorf("jobs: listen address: %w", err))
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return fail(fmt.Errorf("jobs: listen port: %w", err))
		}
		sopts.Host, sopts.Port = host, p
		if p == 0 {
			sopts.Port = server.RANDOM_PORT
		}
		if cfg.listenCert != "" || cfg.listenKey != "" {
			tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: cfg.listenCert, KeyFile: cfg.listenKey})
			if err != nil {
				return fail(fmt.Errorf("jobs: listener TLS: %w", err))
			}
			sopts.TLS, sopts.TLSConfig, sopts.TLSTimeout = true, tc, 5
			self = inProcessTLS(self, tc)
		}
	} else if cfg.listenCert != "" || cfg.listenKey != "" {
		return fail(errors.New("jobs: listener TLS without a listener"))
	}
	ns, err := server.NewServer(sopts)
	if err != nil {
		return fail(fmt.Errorf("jobs: embedded nats: %w", err))
	}
	ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return fail(errors.New("jobs: embedded nats did not start"))
	}
	nc, err := nats.Connect(ns.ClientURL(), nats.InProcessServer(ns), self, nats.Name("kettle"), nats.MaxReconnects(-1))
	if err != nil {
		ns.Shutdown()
		return fail(fmt.Errorf("jobs: connect embedded nats: %w", err))
	}
	s, err := open(ctx, nc, cfg, ns, lock)
	if err != nil {
		nc.Close()
		ns.Shutdown()
		ns.WaitForShutdown()
		lock.Close()
		return nil, err
	}
	s.seedPath = seedPath
	return s, nil
}

// Connect opens the store on an external NATS cluster with JetStream
// (front ends and workers of clustered mode).
func Connect(ctx context.Context, natsURL string, opts ...Option) (*Store, error) {
	cfg := newConfig(opts)
	nopts, err := cfg.clientAuth.natsOptions(cfg.logger)
	if err != nil {
		return nil, fmt.Errorf("jobs: %w", err)
	}
	if cfg.clientAuth.CredsFile != "" && strings.Contains(natsURL, "@") {
		return nil, errors.New("jobs: NATS credentials given both in the URL and in a credentials file")
	}
	nopts = append(nopts, nats.Name("kettle"), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(false))
	nc, err := nats.Connect(natsURL, nopts...)
	if err != nil {
		if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) {
			err = fmt.Errorf("%w (give the store's credentials: --nats-creds FILE or user info in the URL)", err)
		}
		return nil, fmt.Errorf("jobs: connect %s: %w", RedactURL(natsURL), err)
	}
	if !nc.AuthRequired() {
		// Anyone who reaches it can rewrite what workers build.
		cfg.logger.Warn("the NATS server accepts clients without credentials: anyone who can reach it can read and rewrite every job; configure authentication on it (docs/cluster.md)",
			"nats", nc.ConnectedUrlRedacted())
	}
	s, err := open(ctx, nc, cfg, nil, nil)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return s, nil
}

// URL is the client URL of the embedded server's listener ("" without
// WithListen or after Connect).
func (s *Store) URL() string {
	if s.ns == nil || s.cfg.listen == "" {
		return ""
	}
	return s.ns.ClientURL()
}

// CredsFile is the credentials file (an nkey user seed) that workers and
// front ends joining the embedded server's listener present with
// WithClientAuth ("" without WithListen or after Connect). It is created
// in the data dir on first start and kept across restarts.
func (s *Store) CredsFile() string { return s.seedPath }

func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("jobs: lock data dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("jobs: data dir %s is in use by another process: %w", dir, err)
	}
	return f, nil
}

func open(ctx context.Context, nc *nats.Conn, cfg config, ns *server.Server, lock *os.File) (*Store, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jobs: jetstream: %w", err)
	}
	s := &Store{
		cfg: cfg, log: cfg.logger, ns: ns, lock: lock, nc: nc, js: js,
		active:   map[string]activeJob{},
		gone:     map[string]uint64{},
		lastPos:  map[string]int{},
		hubs:     map[string]*hub{},
		posKick:  make(chan struct{}, 1),
		suspects: suspicion{},
		probeKey: probePrefix + strings.ReplaceAll(uuid.NewString(), "-", ""),
		builds:   map[string]context.CancelCauseFunc{},
	}
	if err := s.setup(ctx); err != nil {
		return nil, err
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.takeCtx, s.stopTaking = context.WithCancel(s.ctx)
	if ns != nil && cfg.listen == "" {
		// Without a listener every worker that ever used this data dir
		// ran in an earlier incarnation of this process: none is alive.
		s.clearWorkers(ctx)
	}
	if err := s.startView(ctx); err != nil {
		s.cancel()
		return nil, err
	}
	s.bg.Add(2)
	go s.positionLoop()
	go s.janitorLoop()
	return s, nil
}

func (s *Store) setup(ctx context.Context) error {
	r, ret := s.cfg.replicas, s.cfg.retention
	var err error
	s.work, err = s.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        workStream,
		Description: "kettle work queue: one message per waiting job",
		Subjects:    []string{workSubject + ">"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    r,
		MaxAge:      ret,
		// One message per job: a re-enqueue never duplicates a job.
		MaxMsgsPerSubject:    1,
		Discard:              jetstream.DiscardNew,
		DiscardNewPerSubject: true,
	})
	if err != nil {
		return fmt.Errorf("jobs: work stream: %w", err)
	}
	dup := 2 * time.Minute
	if dup > ret {
		dup = ret
	}
	s.evs, err = s.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        eventsStream,
		Description: "kettle build logs: subject kettle.events.<job id>",
		Subjects:    []string{eventsSubject + ">"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    r,
		MaxAge:      ret,
		Duplicates:  dup,
		AllowDirect: true,
	})
	if err != nil {
		return fmt.Errorf("jobs: events stream: %w", err)
	}
	s.cons, err = s.work.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       consumerName,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.cfg.ackWait,
		MaxDeliver:    -1,
		MaxAckPending: -1,
		FilterSubject: workSubject + ">",
	})
	if err != nil {
		return fmt.Errorf("jobs: work consumer: %w", err)
	}
	kv := func(bucket, desc string, ttl time.Duration) (jetstream.KeyValue, error) {
		b, err := s.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: bucket, Description: desc, History: 1, TTL: ttl,
			Storage: jetstream.FileStorage, Replicas: r,
		})
		if err != nil {
			return nil, fmt.Errorf("jobs: bucket %s: %w", bucket, err)
		}
		return b, nil
	}
	if s.jobs, err = kv(jobsBucket, "kettle job state", ret); err != nil {
		return err
	}
	if s.workers, err = kv(workersBucket, "kettle worker heartbeats", s.cfg.workerTTL); err != nil {
		return err
	}
	if s.meta, err = kv(metaBucket, "kettle single-build gate", 0); err != nil {
		return err
	}
	s.objs, err = s.js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket: objectBucket, Description: "kettle sources and results",
		TTL: ret, Storage: jetstream.FileStorage, Replicas: r,
	})
	if err != nil {
		return fmt.Errorf("jobs: object store: %w", err)
	}
	return nil
}

func (s *Store) clearWorkers(ctx context.Context) {
	lister, err := s.workers.ListKeys(ctx)
	if err != nil {
		return
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	for _, k := range keys {
		_ = s.workers.Purge(ctx, k)
	}
}

// Shutdown stops taking jobs, lets running builds finish until ctx ends,
// then interrupts the rest: they end `failed` with error_type Interrupted.
// It returns once every build of this process has been finalised (or after
// a short grace period if a builder ignores cancellation).
func (s *Store) Shutdown(ctx context.Context) error {
	s.stopTaking()
	done := make(chan struct{})
	go func() { s.buildWG.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.cancelBuilds(errInterrupted)
	select {
	case <-done:
		return nil
	case <-time.After(30 * time.Second):
		return errors.New("jobs: builds did not stop after interruption")
	}
}

func (s *Store) cancelBuilds(cause error) {
	s.buildsMu.Lock()
	defer s.buildsMu.Unlock()
	for _, cancel := range s.builds {
		cancel(cause)
	}
}

// Close releases the store without finalising anything: builds still
// running are abandoned as if the process had died (a later open marks them
// Interrupted). Call Shutdown first for a graceful stop.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closing.Store(true)
		s.stopTaking()
		s.cancelBuilds(errClosed)
		done := make(chan struct{})
		go func() { s.buildWG.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
		}
		s.cancel()
		s.mu.Lock()
		for _, h := range s.hubs {
			h.stop()
		}
		s.mu.Unlock()
		s.nc.Close()
		s.bg.Wait()
		if s.ns != nil {
			s.ns.Shutdown()
			s.ns.WaitForShutdown()
		}
		if s.lock != nil {
			s.lock.Close()
		}
	})
	return nil
}
