package source

import (
	"bufio"
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
	conns   map[net.Conn]bool
	closed  bool
}

func startEgress(p Policy, max int64) (*egress, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e := &egress{p: p, ln: ln, max: max, conns: map[net.Conn]bool{}}
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
	e.mu.Lock()
	e.closed = true
	for c := range e.conns {
		c.Close()
	}
	e.mu.Unlock()
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

func (e *egress) track(c net.Conn) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		c.Close()
		return false
	}
	e.conns[c] = true
	return true
}

func (e *egress) untrack(c net.Conn) {
	e.mu.Lock()
	delete(e.conns, c)
	e.mu.Unlock()
	c.Close()
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
	hj, ok := w.(http.Hijacker)
	if !ok {
		upstream.Close()
		http.Error(w, "no hijack", http.StatusInternalServerError)
		return
	}
	client, brw, err := hj.Hijack()
	if err != nil {
		upstream.Close()
		return
	}
	if !e.track(client) || !e.track(upstream) {
		client.Close()
		upstream.Close()
		return
	}
	defer e.untrack(client)
	defer e.untrack(upstream)
	if _, err := client.Write([]byte("HTTP/1.1 200 Connection Established\r\n\r\n")); err != nil {
		return
	}
	go func() {
		// Client → server: anything already buffered first.
		io.Copy(upstream, io.MultiReader(io.LimitReader(brw.Reader, int64(brw.Reader.Buffered())), client))
		if tc, ok := upstream.(interface{ CloseWrite() error }); ok {
			tc.CloseWrite()
		}
	}()
	buf := make([]byte, 32<<10)
	r2 := bufio.NewReaderSize(upstream, 32<<10)
	for {
		n, err := r2.Read(buf)
		if n > 0 {
			if !e.count(n) {
				return
			}
			if _, werr := client.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
