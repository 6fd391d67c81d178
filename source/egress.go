package source

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kettle-build/kettle/internal/tunnel"
)

// egress is the HTTP(S) proxy every git connection of a clone goes
// through (http.proxy): it resolves each destination itself, refuses
// non-public addresses (unless allowed), dials exactly the address it
// checked (no DNS rebinding between check and connect), and so also checks
// every host an HTTP redirect leads to. It counts the bytes received
// towards the clone's size limit.
type egress struct {
	p   Policy
	ln  net.Listener
	srv *http.Server
	rp  *httputil.ReverseProxy
	max int64

	received atomic.Int64
	tooLarge atomic.Bool

	mu      sync.Mutex
	refusal error
	conns   tunnel.Conns
}

func startEgress(p Policy, max int64) (*egress, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e := &egress{p: p, ln: ln, max: max}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           e.dial,
		ForceAttemptHTTP2:     false,
		MaxIdleConns:          4,
		IdleConnTimeout:       30 * time.Second,
		ResponseHeaderTimeout: 5 * time.Minute,
	}
	e.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL = pr.In.URL
			pr.Out.Host = pr.In.Host
		},
		Transport: tr,
		ModifyResponse: func(r *http.Response) error {
			r.Body = &countBody{ReadCloser: r.Body, e: e}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			w.WriteHeader(http.StatusBadGateway)
		},
		ErrorLog: quiet,
	}
	e.srv = &http.Server{Handler: e, ReadHeaderTimeout: 30 * time.Second, ErrorLog: quiet}
	go e.srv.Serve(ln)
	return e, nil
}

// quiet drops net/http's own log lines: refusals are reported through
// err(), and a cut tunnel is expected when a limit is hit.
var quiet = log.New(io.Discard, "", 0)

func (e *egress) url() string { return "http://" + e.ln.Addr().String() }

// Close stops the proxy and every tunnel.
func (e *egress) Close() {
	e.srv.Close()
	e.conns.CloseAll()
}

// err is the first refusal or limit hit, if any.
func (e *egress) err() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.refusal != nil {
		return e.refusal
	}
	if e.tooLarge.Load() {
		return refuse(ErrRepoTooLarge, nil, "the repository is larger than %d bytes", e.max)
	}
	return nil
}

func (e *egress) refuse(err error) {
	e.mu.Lock()
	if e.refusal == nil {
		e.refusal = err
	}
	e.mu.Unlock()
}

// dial connects to hostport after checking the host's addresses.
func (e *egress) dial(ctx context.Context, network, hostport string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, err
	}
	if err := checkHostSyntax(host, hostport); err != nil {
		e.refuse(err)
		return nil, err
	}
	addrs, err := checkHost(ctx, host, e.p)
	if err != nil {
		e.refuse(err)
		return nil, err
	}
	dial := e.p.dial
	if dial == nil {
		d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
		dial = d.DialContext
	}
	var last error
	for _, a := range addrs {
		c, err := dial(ctx, "tcp", net.JoinHostPort(a.String(), port))
		if err == nil {
			return c, nil
		}
		last = err
	}
	return nil, last
}

func (e *egress) count(n int) bool {
	if e.received.Add(int64(n)) > e.max {
		e.tooLarge.Store(true)
		return false
	}
	return true
}

var errEgressLimit = errors.New("egress limit")

type countBody struct {
	io.ReadCloser
	e *egress
}

func (b *countBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if !b.e.count(n) {
		return n, errEgressLimit
	}
	return n, err
}

func (e *egress) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect {
		if r.URL.Scheme != "http" || r.URL.Host == "" {
			http.Error(w, "proxy: absolute http URL required", http.StatusBadRequest)
			return
		}
		e.rp.ServeHTTP(w, r)
		return
	}
	upstream, err := e.dial(r.Context(), "tcp", r.Host)
	if err != nil {
		http.Error(w, "refused", http.StatusForbidden)
		return
	}
	tunnel.Splice(w, upstream, &e.conns, e.count)
}
