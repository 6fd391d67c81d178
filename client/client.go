// Package client talks to a kettle server (docs/api.md): it submits builds as
// streamed JSON, follows a build's Server-Sent Events (resuming a dropped
// stream with Last-Event-ID, so no event is lost or repeated), reads job
// status and downloads result tarballs. Transient failures (connection
// errors, 5xx) are retried with capped exponential backoff; a submission is
// retried only when the server cannot have accepted it.
//
// It also packs a local checkout for upload (PackDir): what git tracks plus
// .git, so build outputs and untracked files stay home.
package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Sentinel errors, checked with errors.Is.
var (
	// ErrUnreachable: no connection to the server could be made.
	ErrUnreachable = errors.New("cannot reach server")
	// ErrUnauthorized: the server refused the bearer token (401 or 403).
	ErrUnauthorized = errors.New("unauthorized")
	// ErrNotFound: the job is unknown, or (for a result) not available.
	ErrNotFound = errors.New("not found")
	// ErrRejected: the server refused the request as invalid (other 4xx).
	ErrRejected = errors.New("rejected by server")
	// ErrBusy: the server asked us to come back later (503 or 429) more
	// often than the retry budget allows.
	ErrBusy = errors.New("server busy")
	// ErrProtocol: the server answered something this client cannot read.
	ErrProtocol = errors.New("protocol error")
	// ErrIntegrity: a download does not match the digest or size the server
	// announced.
	ErrIntegrity = errors.New("download integrity")
)

// HTTPError is a non-success answer. Message is the server's one-line
// plain-text body.
type HTTPError struct {
	Method     string
	URL        string // without query
	StatusCode int
	Message    string
	RetryAfter time.Duration // from Retry-After, when given
}

func (e *HTTPError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.StatusCode)
	}
	return fmt.Sprintf("%s %s: %d %s", e.Method, e.URL, e.StatusCode, msg)
}

// Is maps status codes to the package's sentinels.
func (e *HTTPError) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.StatusCode == http.StatusUnauthorized || e.StatusCode == http.StatusForbidden
	case ErrNotFound:
		return e.StatusCode == http.StatusNotFound
	case ErrBusy:
		return e.StatusCode == http.StatusServiceUnavailable || e.StatusCode == http.StatusTooManyRequests
	case ErrRejected:
		return e.StatusCode >= 400 && e.StatusCode < 500 && e.StatusCode != http.StatusUnauthorized &&
			e.StatusCode != http.StatusForbidden && e.StatusCode != http.StatusNotFound &&
			e.StatusCode != http.StatusTooManyRequests
	}
	return false
}

// Backoff is the retry schedule: attempt n (0-based) waits a random time in
// [d/2, d] with d = min(Max, Base·2ⁿ); a server's Retry-After is honoured up
// to MaxRetryAfter. Attempts counts tries in a row without progress.
type Backoff struct {
	Base, Max     time.Duration
	Attempts      int
	MaxRetryAfter time.Duration
}

// DefaultBackoff retries for about a minute before giving up.
var DefaultBackoff = Backoff{Base: 500 * time.Millisecond, Max: 15 * time.Second, Attempts: 8, MaxRetryAfter: 2 * time.Minute}

func (b Backoff) delay(n int, retryAfter time.Duration) time.Duration {
	if retryAfter > 0 {
		return min(retryAfter, b.MaxRetryAfter)
	}
	d := b.Base
	for i := 0; i < n && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	if d <= 0 {
		return 0
	}
	// Jitter spreads the reconnects of many clients after a server restart.
	return d/2 + rand.N(d/2+1)
}

// Retry describes one retry, for WithRetryNotify.
type Retry struct {
	Op      string // "submit", "events", "status", "result"
	Attempt int    // 1 for the first retry
	Err     error
	Wait    time.Duration
}

// Option configures a Client.
type Option func(*Client)

// WithToken sends `Authorization: Bearer <token>` with every request.
func WithToken(token string) Option { return func(c *Client) { c.token = strings.TrimSpace(token) } }

// WithHTTPClient replaces the HTTP client. Its Timeout must be zero: event
// streams and downloads last as long as builds do.
func WithHTTPClient(h *http.Client) Option { return func(c *Client) { c.http = h } }

// WithBackoff sets the retry schedule.
func WithBackoff(b Backoff) Option { return func(c *Client) { c.backoff = b } }

// WithIdleTimeout is how long an event stream may stay silent (the server
// sends a keep-alive every 15 s) before the connection is taken for dead
// and resumed. Default 45 s.
func WithIdleTimeout(d time.Duration) Option { return func(c *Client) { c.idle = d } }

// WithRetryNotify calls f before each retry (to tell a user why we wait).
func WithRetryNotify(f func(Retry)) Option { return func(c *Client) { c.notify = f } }

// WithLogger logs retries at debug level.
func WithLogger(l *slog.Logger) Option { return func(c *Client) { c.log = l } }

// WithUserAgent sets the User-Agent header.
func WithUserAgent(ua string) Option { return func(c *Client) { c.ua = ua } }

// Client is a kettle API client. It is safe for concurrent use.
type Client struct {
	base    *url.URL
	token   string
	http    *http.Client
	backoff Backoff
	idle    time.Duration
	notify  func(Retry)
	log     *slog.Logger
	ua      string
	// reached is set once the server answered anything: before that, a
	// refused connection most likely means a wrong address or a server
	// that is not running, and is not worth a minute of retries.
	reached atomic.Bool
}

// firstContactAttempts bounds retries of connection errors before the
// server has ever answered.
const firstContactAttempts = 3

// do sends req and notes that the server is reachable.
func (c *Client) do(req *http.Request) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err == nil {
		c.reached.Store(true)
	}
	return resp, err
}

// New returns a client of the server at baseURL (http:// or https://; a
// path prefix is kept, for servers behind a reverse proxy).
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(strings.TrimSpace(baseURL), "/"))
	if err != nil {
		return nil, fmt.Errorf("server URL %q: %w", baseURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("server URL %q: want http:// or https://", baseURL)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("server URL %q: no host", baseURL)
	}
	if u.User != nil {
		return nil, fmt.Errorf("server URL %q: credentials in the URL are not supported; use a token", baseURL)
	}
	u.RawQuery, u.Fragment = "", ""
	c := &Client{base: u, backoff: DefaultBackoff, idle: 45 * time.Second, log: slog.New(slog.DiscardHandler), ua: "kettle-client"}
	for _, o := range opts {
		o(c)
	}
	if c.http == nil {
		c.http = &http.Client{Transport: defaultTransport()}
	}
	if c.backoff.Attempts <= 0 {
		c.backoff.Attempts = 1
	}
	return c, nil
}

func defaultTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = 15 * time.Second
	// Large uploads are read and stored before the server answers.
	t.ResponseHeaderTimeout = 10 * time.Minute
	return t
}

// Server returns the server's base URL.
func (c *Client) Server() string { return c.base.String() }

func (c *Client) url(p string, q url.Values) string {
	u := *c.base
	u.Path = strings.TrimRight(u.Path, "/") + p
	u.RawPath = ""
	if len(q) > 0 {
		u.RawQuery = q.Encode()
	}
	return u.String()
}

func (c *Client) newRequest(ctx context.Context, method, u string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.ua != "" {
		req.Header.Set("User-Agent", c.ua)
	}
	return req, nil
}

// readError turns a non-success response into an *HTTPError and closes it.
func readError(resp *http.Response) error {
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	msg := strings.TrimSpace(string(b))
	if i := strings.IndexAny(msg, "\r\n"); i >= 0 {
		msg = strings.TrimSpace(msg[:i])
	}
	msg = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, msg)
	if strings.HasPrefix(strings.ToLower(resp.Header.Get("Content-Type")), "text/html") {
		msg = "" // a proxy's error page says nothing useful on one line
	}
	u := *resp.Request.URL
	u.RawQuery = ""
	return &HTTPError{Method: resp.Request.Method, URL: u.String(), StatusCode: resp.StatusCode, Message: msg,
		RetryAfter: retryAfter(resp.Header.Get("Retry-After"))}
}

func retryAfter(v string) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return max(time.Duration(n)*time.Second, time.Millisecond)
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), time.Millisecond)
	}
	return 0
}

// transient reports whether a GET may be retried after err.
func transient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var he *HTTPError
	if errors.As(err, &he) {
		return he.StatusCode >= 500 || he.StatusCode == http.StatusTooManyRequests || he.StatusCode == http.StatusRequestTimeout
	}
	return !errors.Is(err, ErrProtocol) && !errors.Is(err, ErrIntegrity)
}

// netError wraps a transport error with ErrUnreachable when no connection
// could be made at all.
func (c *Client) netError(err error) error {
	if err == nil {
		return nil
	}
	var he *HTTPError
	if errors.As(err, &he) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if isDialError(err) {
		return fmt.Errorf("%w at %s: %w", ErrUnreachable, c.base.Redacted(), err)
	}
	return err
}

// isDialError reports whether err happened while connecting, so the
// request was certainly not sent.
func isDialError(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// retry runs f until it succeeds, fails permanently, or the budget is used.
// f reports progress (which resets the attempt count) through its bool.
func (c *Client) retry(ctx context.Context, op string, f func() (progress bool, err error), canRetry func(error) bool) error {
	attempt := 0
	for {
		progress, err := f()
		if err == nil {
			return nil
		}
		if progress {
			attempt = 0
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !canRetry(err) {
			return err
		}
		attempt++
		if attempt >= c.backoff.Attempts || (errors.Is(err, ErrUnreachable) && !c.reached.Load() && attempt >= firstContactAttempts) {
			if errors.Is(err, ErrBusy) {
				return fmt.Errorf("%w after %d attempts: %w", ErrBusy, attempt, err)
			}
			return fmt.Errorf("gave up after %d attempts: %w", attempt, err)
		}
		var ra time.Duration
		var he *HTTPError
		if errors.As(err, &he) {
			ra = he.RetryAfter
		}
		wait := c.backoff.delay(attempt-1, ra)
		c.log.Debug("retry", "op", op, "attempt", attempt, "wait", wait, "err", err)
		if c.notify != nil {
			c.notify(Retry{Op: op, Attempt: attempt, Err: err, Wait: wait})
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// get performs a GET with retries and returns a 2xx response.
func (c *Client) get(ctx context.Context, op, u string, hdr http.Header) (*http.Response, error) {
	var resp *http.Response
	err := c.retry(ctx, op, func() (bool, error) {
		req, err := c.newRequest(ctx, http.MethodGet, u, nil)
		if err != nil {
			return false, err
		}
		for k, v := range hdr {
			req.Header[k] = v
		}
		r, err := c.do(req)
		if err != nil {
			return false, c.netError(err)
		}
		if r.StatusCode/100 != 2 {
			return false, readError(r)
		}
		resp = r
		return false, nil
	}, transient)
	return resp, err
}
