// Package api is kettle's HTTP service (docs/api.md): the JSON and multipart
// submission routes, the SSE event stream, result downloads, job status,
// health, readiness and Prometheus metrics. It holds no job state of its own:
// everything goes through jobs.Service, so any number of front ends can
// share one store.
package api

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kettle-build/kettle/jobs"
)

// DefaultMaxUpload bounds a decoded source archive (docs/api.md: 1 GiB).
const DefaultMaxUpload int64 = 1 << 30

// DefaultKeepAlive is the SSE keep-alive comment interval (docs/api.md: 15 s).
const DefaultKeepAlive = 15 * time.Second

// RepoChecker validates a repo_url and repo_ref at submit time; its error
// text is shown to the client (source.CheckRepo with the server's policy).
type RepoChecker func(ctx context.Context, url, ref string) error

// Option configures the handler.
type Option func(*config)

type config struct {
	maxUpload  int64
	spoolDir   string
	authToken  string
	checkRepo  RepoChecker
	corsOrigin []string
	localOnly  bool
	logger     *slog.Logger
	registry   prometheus.Registerer
	gatherer   prometheus.Gatherer
	metrics    *Metrics
	keepAlive  time.Duration
	retryAfter time.Duration
	writeWait  time.Duration
	coalesce   time.Duration
	ui         http.Handler
}

// WithMaxUpload bounds the decoded size of an uploaded archive; larger
// uploads answer 413.
func WithMaxUpload(n int64) Option { return func(c *config) { c.maxUpload = n } }

// WithSpoolDir is where uploads are decoded to while they arrive: a
// directory private to the server (0700, in its data dir, never TMPDIR,
// where a build could name it). Without it, archive uploads are refused.
func WithSpoolDir(dir string) Option { return func(c *config) { c.spoolDir = dir } }

// WithAuthToken requires `Authorization: Bearer <token>` on POST routes.
func WithAuthToken(token string) Option { return func(c *config) { c.authToken = token } }

// WithRepoChecker sets the policy check of repo_url/repo_ref (400 on refusal).
// Without one every URL is passed on to the store, whose workers still apply
// their own policy when cloning.
func WithRepoChecker(f RepoChecker) Option { return func(c *config) { c.checkRepo = f } }

// WithCORS sets the origins (scheme://host[:port]) whose web pages may call
// the API from a browser; "*" allows any. By default there are none: no
// CORS headers are sent, and a POST from another origin's page (a plain
// HTML form needs no preflight) is refused with 403.
func WithCORS(origins ...string) Option {
	return func(c *config) {
		c.corsOrigin = nil
		for _, o := range origins {
			if o = strings.TrimSuffix(strings.TrimSpace(o), "/"); o != "" {
				c.corsOrigin = append(c.corsOrigin, o)
			}
		}
	}
}

// WithLoopbackHosts(true) is for a service that listens on loopback only: a
// browser request (one with an Origin or Sec-Fetch-Site header) must then
// name a loopback host (localhost, *.localhost, 127.0.0.0/8, ::1) or the
// host of a --cors-origins origin in its Host header. A web page whose host
// name an attacker rebinds to 127.0.0.1 (DNS rebinding) is same-origin for
// the browser, so the Origin check alone would let it through.
func WithLoopbackHosts(on bool) Option { return func(c *config) { c.localOnly = on } }

// WithLogger sets the structured logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithMetrics registers the service's collectors with reg and serves
// GET /metrics from g (for example one *prometheus.Registry for both). The
// default is a private registry.
func WithMetrics(reg prometheus.Registerer, g prometheus.Gatherer) Option {
	return func(c *config) { c.registry, c.gatherer = reg, g }
}

// WithMetricsCollector shares m (see NewMetrics) so that other parts of the
// process (the build observer) record into the same collectors.
func WithMetricsCollector(m *Metrics) Option { return func(c *config) { c.metrics = m } }

// WithKeepAlive sets the SSE keep-alive interval.
func WithKeepAlive(d time.Duration) Option { return func(c *config) { c.keepAlive = d } }

// WithRetryAfter is the Retry-After advice sent with 503 (default 30 s).
func WithRetryAfter(d time.Duration) Option { return func(c *config) { c.retryAfter = d } }

// WithWriteTimeout bounds how long one write to a client may block before
// the connection is dropped (default 2 minutes). A slow watcher that still
// reads is never dropped; one that stopped reading is.
func WithWriteTimeout(d time.Duration) Option { return func(c *config) { c.writeWait = d } }

// DefaultCoalesce is the shortest time between two writes to one SSE
// watcher.
const DefaultCoalesce = 15 * time.Millisecond

// WithCoalesce sets the shortest time between two writes to one SSE
// watcher: events arriving faster are sent together. It bounds the added
// latency (a quiet stream is written at once) and, with many watchers, the
// number of syscalls per event. 0 writes every event as it comes.
func WithCoalesce(d time.Duration) Option { return func(c *config) { c.coalesce = d } }

// WithUI serves a web front end (package web): GET / and GET /b/{id} (a
// job's page) and its assets under /ui/. The API routes are unchanged.
func WithUI(h http.Handler) Option { return func(c *config) { c.ui = h } }

// Server is the HTTP handler of the service.
type Server struct {
	svc jobs.Service
	cfg config
	log *slog.Logger
	m   *Metrics
	mux *http.ServeMux
}

// New returns the service's HTTP handler over svc.
func New(svc jobs.Service, opts ...Option) *Server {
	c := config{
		maxUpload:  DefaultMaxUpload,
		keepAlive:  DefaultKeepAlive,
		retryAfter: 30 * time.Second,
		writeWait:  2 * time.Minute,
		coalesce:   DefaultCoalesce,
	}
	for _, o := range opts {
		o(&c)
	}
	if c.logger == nil {
		c.logger = slog.Default()
	}
	if c.registry == nil {
		r := prometheus.NewRegistry()
		c.registry, c.gatherer = r, r
	}
	if c.metrics == nil {
		c.metrics = NewMetrics()
	}
	if err := c.metrics.Register(c.registry); err != nil {
		c.logger.Warn("metrics registration", "err", err)
	}
	s := &Server{svc: svc, cfg: c, log: c.logger, m: c.metrics, mux: http.NewServeMux()}
	s.routes()
	return s
}

func (s *Server) routes() {
	s.mux.HandleFunc("GET /health", s.health)
	s.mux.HandleFunc("GET /ready", s.ready)
	s.mux.HandleFunc("POST /build", s.auth(s.submit))
	s.mux.HandleFunc("POST /build/stream", s.auth(s.submitStream))
	s.mux.HandleFunc("GET /build/{id}/events", s.events)
	s.mux.HandleFunc("GET /build/{id}/result", s.result)
	s.mux.HandleFunc("GET /build/{id}", s.status)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.gatherer, promhttp.HandlerOpts{}))
	if s.cfg.ui != nil {
		s.mux.Handle("GET /{$}", s.cfg.ui)
		s.mux.Handle("GET /b/{id}", s.cfg.ui)
		s.mux.Handle("GET /ui/", s.cfg.ui)
	}
}

// ServeHTTP applies CORS and request logging, then routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rw := &respWriter{ResponseWriter: w, status: http.StatusOK}
	rl := &reqLog{}
	r = r.WithContext(context.WithValue(r.Context(), reqLogKey{}, rl))
	if s.cors(rw, r) {
		s.mux.ServeHTTP(rw, r)
	}
	attrs := []any{
		"method", r.Method, "path", r.URL.Path, "status", rw.status,
		"bytes", rw.bytes, "dur", time.Since(start).Round(time.Microsecond),
		"remote", r.RemoteAddr,
	}
	if rl.jobID != "" {
		attrs = append(attrs, "job", rl.jobID)
	}
	level := slog.LevelInfo
	if r.URL.Path == "/health" || r.URL.Path == "/ready" || r.URL.Path == "/metrics" {
		level = slog.LevelDebug
	}
	s.log.Log(r.Context(), level, "http", attrs...)
}

// reqLog carries per-request facts learnt by handlers (the job id) back to
// the access log line.
type reqLog struct{ jobID string }

type reqLogKey struct{}

func setJobID(r *http.Request, id string) {
	if rl, ok := r.Context().Value(reqLogKey{}).(*reqLog); ok {
		rl.jobID = id
	}
}

// respWriter records the status and size for the access log. It keeps
// http.ResponseController working through Unwrap.
type respWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
	wrote  bool
}

func (w *respWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *respWriter) Write(b []byte) (int, error) {
	w.wrote = true
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *respWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// cors sets the CORS headers for allowed origins and answers their
// preflight requests; it reports whether the request still needs routing.
// A state-changing request that a browser sends from a page of another,
// unlisted origin is refused: without it any web site a user visits could
// submit builds to a kettle on their machine (the response being unreadable
// does not stop the build).
func (s *Server) cors(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if s.cfg.localOnly && (origin != "" || r.Header.Get("Sec-Fetch-Site") != "") && !s.localHost(r.Host) {
		s.log.Info("browser request for a foreign host name refused", "host", oneLine(r.Host), "origin", oneLine(origin))
		httpError(w, http.StatusForbidden, "host name not allowed for browser requests to this local service (--cors-origins)")
		return false
	}
	if origin == "" {
		return true // not a cross-origin browser request
	}
	allowed := ""
	for _, o := range s.cfg.corsOrigin {
		if o == "*" {
			allowed = "*"
			break
		}
		if strings.EqualFold(o, origin) {
			allowed = origin
			break
		}
	}
	preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
	if allowed == "" {
		safe := r.Method == http.MethodGet || r.Method == http.MethodHead
		if !safe && !sameOrigin(r, origin) || preflight {
			s.log.Info("cross-origin request refused", "origin", oneLine(origin), "method", r.Method, "path", r.URL.Path)
			httpError(w, http.StatusForbidden, "cross-origin request refused: this origin is not allowed (--cors-origins)")
			return false
		}
		return true // no CORS headers: the browser keeps the response from the page
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", allowed)
	if allowed != "*" {
		h.Add("Vary", "Origin")
	}
	h.Set("Access-Control-Expose-Headers", "Content-Disposition, Content-Length, Retry-After, ETag")
	if preflight {
		h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Last-Event-ID")
		h.Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
		return false
	}
	return true
}

// localHost reports whether a Host header names this machine's loopback
// interface, or the host of an allowed origin.
func (s *Server) localHost(host string) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.ToLower(strings.Trim(h, "[]"))
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	if ip := net.ParseIP(h); ip != nil && ip.IsLoopback() {
		return true
	}
	for _, o := range s.cfg.corsOrigin {
		if u, err := url.Parse(o); err == nil && u.Host != "" && strings.EqualFold(u.Host, host) {
			return true
		}
	}
	return false
}

// sameOrigin reports whether a browser's Origin names the host the request
// was sent to (the service's own web page). Only the host is compared: a
// TLS-terminating proxy changes the scheme.
func sameOrigin(r *http.Request, origin string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return false // includes "null" (sandboxed frames, file:// pages)
	}
	return strings.EqualFold(u.Host, r.Host)
}

// auth enforces the bearer token on POST routes when one is configured.
func (s *Server) auth(next http.HandlerFunc) http.HandlerFunc {
	if s.cfg.authToken == "" {
		return next
	}
	want := []byte(s.cfg.authToken)
	return func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="kettle"`)
			httpError(w, http.StatusUnauthorized, "missing or invalid bearer token")
			return
		}
		next(w, r)
	}
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	fmt.Fprint(w, "ok")
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if err := s.svc.Ready(ctx); err != nil {
		msg := "not ready"
		if errors.Is(err, jobs.ErrNotReady) {
			msg = "not ready: " + oneLine(err.Error())
		}
		s.log.Debug("not ready", "err", err)
		httpError(w, http.StatusServiceUnavailable, msg)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	fmt.Fprint(w, "ready")
}

// httpError writes the one-line plain-text error body of every 4xx/5xx.
func httpError(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h.Del("Content-Length")
	h.Del("Content-Disposition")
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	fmt.Fprintln(w, oneLine(msg))
}

// oneLine folds a message onto one line: error bodies are single lines.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		f := strings.Fields(s)
		s = strings.Join(f, " ")
	}
	if len(s) > 1000 {
		s = s[:1000] + "…"
	}
	return s
}
