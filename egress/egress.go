// Package egress is kettle's one way out to the network: the HTTP proxy
// (CONNECT tunnels and plain-HTTP forwarding) that is a fetch sandbox's only
// exit and that every git connection of a clone (package source) goes
// through, and the address policy both apply (Check, IsPublic,
// CheckHostName; source checks repo_url with it too). It runs in the trusted
// process, resolves each host itself, refuses the destination when any of
// its addresses is not public (unless AllowPrivate), always refuses the
// cloud metadata service, link-local addresses and the addresses in
// Policy.Deny (kettle's own listeners), and then dials exactly the address
// it checked, so a DNS answer that changes between check and connect
// (rebinding) gains nothing. Every destination asked for, allowed or
// refused, is reported; a session can also bound the bytes it receives
// (Budget) and tell its first refusal (Session.Err).
package egress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Resolver looks up a host's addresses; *net.Resolver satisfies it.
type Resolver interface {
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

// Policy says where sandboxed commands may connect.
type Policy struct {
	// AllowPrivate permits loopback, private and other non-public
	// addresses (--allow-private-networks, for tests with local
	// registries). The metadata service, link-local addresses and Deny stay
	// refused.
	AllowPrivate bool
	// Deny lists addresses that are never reachable, whatever AllowPrivate
	// says: kettle's HTTP listener, its NATS ports. Each entry is
	// "host:port", ":port" (every address of this machine) or an IP
	// without port (every port). Host names are resolved by New.
	Deny []string
	// Resolver resolves destination hosts; nil means net.DefaultResolver.
	Resolver Resolver
	// Dial connects to a checked "ip:port"; nil means a net.Dialer. Tests
	// use it to send a public address to a local server.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Logger receives one debug line per destination (default slog.Default()).
	Logger *slog.Logger
}

// Contact is one destination a command asked the proxy for.
type Contact struct {
	Addr    string // "host:port" as asked (host lower-cased)
	Refused bool
	Reason  string // why it was refused; safe to show a client (no address)
}

// Proxy checks and forwards connections. One Proxy serves many commands
// (Serve per command); it is safe for concurrent use.
type Proxy struct {
	p    Policy
	deny []denied
	log  *slog.Logger
}

// denied is one Deny entry: any port when port is 0, every local address
// when local.
type denied struct {
	addr  netip.Addr
	port  uint16
	local bool
}

// alwaysRefused are never reachable: link-local (the metadata service at
// 169.254.169.254 and its IPv6 form) and AWS's fd00:ec2::254.
var alwaysRefused = []netip.Prefix{
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("fd00:ec2::254/128"),
	netip.MustParsePrefix("100.100.100.200/32"), // Alibaba Cloud metadata
}

// isAlwaysRefused reports a in alwaysRefused, or an IPv6 address carrying
// one (NAT64, 6to4, Teredo, IPv4-compatible): with AllowPrivate a NAT64
// gateway would otherwise reach the metadata service as 64:ff9b::a9fe:a9fe.
func isAlwaysRefused(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range alwaysRefused {
		if p.Contains(a) {
			return true
		}
	}
	if v4, ok := embedded4(a); ok {
		return isAlwaysRefused(v4)
	}
	return false
}

// New returns a Proxy for p. A Deny entry that does not parse or resolve
// is an error: a deny list with a hole is worse than none.
func New(p Policy) (*Proxy, error) {
	x := &Proxy{p: p, log: p.Logger}
	if x.log == nil {
		x.log = slog.Default()
	}
	for _, d := range p.Deny {
		ds, err := parseDeny(context.Background(), d, x.resolver())
		if err != nil {
			return nil, fmt.Errorf("egress: deny %q: %w", d, err)
		}
		x.deny = append(x.deny, ds...)
	}
	return x, nil
}

func parseDeny(ctx context.Context, s string, r Resolver) ([]denied, error) {
	s = strings.TrimSpace(s)
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		// An address without port: every port.
		host, portStr = strings.Trim(s, "[]"), "0"
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("invalid port")
	}
	if host == "" {
		return []denied{{port: uint16(port), local: true}}, nil
	}
	if a, err := netip.ParseAddr(host); err == nil {
		a = a.Unmap()
		return []denied{{addr: a, port: uint16(port), local: a.IsUnspecified()}}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ips, err := r.LookupIPAddr(ctx, host)
	if err != nil || len(ips) == 0 {
		return nil, fmt.Errorf("does not resolve: %v", err)
	}
	var out []denied
	for _, ip := range ips {
		if a, ok := netip.AddrFromSlice(ip.IP); ok {
			a = a.Unmap()
			out = append(out, denied{addr: a, port: uint16(port), local: a.IsUnspecified()})
		}
	}
	return out, nil
}

func (x *Proxy) resolver() Resolver {
	if x.p.Resolver != nil {
		return x.p.Resolver
	}
	return net.DefaultResolver
}

// Errors of refused destinations (Contact.Reason carries their text).
var (
	ErrSyntax   = errors.New("invalid destination")
	ErrResolve  = errors.New("destination does not resolve")
	ErrPrivate  = errors.New("destination is not a public address")
	ErrDenied   = errors.New("destination is one of kettle's own services or the metadata service")
	ErrNotProxy = errors.New("not a proxy request")
)

// Host name errors of CheckHostName; each wraps ErrSyntax.
var (
	ErrHostLength  = fmt.Errorf("%w: host name length", ErrSyntax)
	ErrHostName    = fmt.Errorf("%w: host name", ErrSyntax)
	ErrNumericHost = fmt.Errorf("%w: numeric host name", ErrSyntax)
)

// Check resolves host and returns the addresses that may be dialled for
// port, or an error wrapping one of the Err… sentinels.
func (x *Proxy) Check(ctx context.Context, host string, port uint16) ([]netip.Addr, error) {
	if err := CheckHostName(host); err != nil {
		return nil, err
	}
	if port == 0 {
		return nil, fmt.Errorf("%w: port 0", ErrSyntax)
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a.Unmap()}
	} else {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		ips, err := x.resolver().LookupIPAddr(rctx, host)
		if err != nil || len(ips) == 0 {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if err != nil {
				return nil, fmt.Errorf("%w: %v", ErrResolve, err)
			}
			return nil, ErrResolve
		}
		for _, ip := range ips {
			// A zone is dropped, not a reason to skip the answer: the
			// zone-less address is the one judged (link-local: refused)
			// and the one dialled.
			if a, ok := netip.AddrFromSlice(ip.IP); ok {
				addrs = append(addrs, a.Unmap())
			}
		}
		if len(addrs) == 0 {
			return nil, ErrResolve
		}
	}
	var local []netip.Addr // this machine's addresses, read when needed
	localRead := false
	isLocal := func(a netip.Addr) bool {
		if a.IsLoopback() || a.IsUnspecified() {
			return true
		}
		if !localRead {
			local, localRead = localAddrs(), true
		}
		for _, l := range local {
			if l == a {
				return true
			}
		}
		return false
	}
	// Every address must pass: the client cannot pick which one we dial,
	// and neither can a resolver that answers differently each time.
	for _, a := range addrs {
		if isAlwaysRefused(a) {
			return nil, ErrDenied
		}
		if a.IsUnspecified() || a.IsMulticast() || !a.IsValid() {
			return nil, ErrPrivate
		}
		for _, d := range x.deny {
			if d.port != 0 && d.port != port {
				continue
			}
			if (d.local && isLocal(a)) || d.addr == a {
				return nil, ErrDenied
			}
		}
		if !x.p.AllowPrivate && (!IsPublic(a) || isLocal(a)) {
			return nil, ErrPrivate
		}
	}
	return addrs, nil
}

// localAddrs are the addresses of this machine's interfaces: a listener on
// 0.0.0.0 is reachable through every one of them.
func localAddrs() []netip.Addr {
	ifAddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, ia := range ifAddrs {
		if n, ok := ia.(*net.IPNet); ok {
			if a, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, a.Unmap())
			}
		}
	}
	return out
}

// nonPublic lists the ranges, beyond Go's predicates, that must never be
// reached from a build: shared, reserved, benchmarking, protocol and
// translation ranges (the latter are checked through their embedded IPv4,
// except the local-use 64:ff9b:1::/48, which is never public).
var nonPublic = func() []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "198.18.0.0/15", "240.0.0.0/4",
		"::/128", "::1/128", "fec0::/10", "100::/64", "2001:db8::/32", "64:ff9b:1::/48",
	} {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ps
}()

// IsPublic reports whether a is a globally routable unicast address that a
// build may fetch from: not loopback, private, link-local, multicast,
// unspecified, shared (CGNAT) or reserved; IPv4 embedded in IPv6
// (mapped, NAT64, 6to4, Teredo, IPv4-compatible) is judged by the embedded
// address.
func IsPublic(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsValid() || a.Zone() != "" {
		return false
	}
	if a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a.IsMulticast() || a.IsUnspecified() {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(a) {
			return false
		}
	}
	if v4, ok := embedded4(a); ok {
		return IsPublic(v4)
	}
	return true
}

var (
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	nat64Loc  = netip.MustParsePrefix("64:ff9b:1::/48")
	sixToFour = netip.MustParsePrefix("2002::/16")
	teredo    = netip.MustParsePrefix("2001::/32")
	v4Compat  = netip.MustParsePrefix("::/96")
)

// embedded4 is the IPv4 address an IPv6 address carries by a translation
// or tunnelling scheme (RFC 6052 NAT64, 6to4, Teredo, IPv4-compatible).
func embedded4(a netip.Addr) (netip.Addr, bool) {
	if !a.Is6() || a.Is4In6() {
		return netip.Addr{}, false
	}
	b := a.As16()
	switch {
	case nat64.Contains(a), v4Compat.Contains(a):
		return netip.AddrFrom4([4]byte(b[12:16])), true
	case nat64Loc.Contains(a):
		// A /48 prefix: the IPv4 address around the reserved octet 8.
		return netip.AddrFrom4([4]byte{b[6], b[7], b[9], b[10]}), true
	case sixToFour.Contains(a):
		return netip.AddrFrom4([4]byte(b[2:6])), true
	case teredo.Contains(a):
		// The client's IPv4 is stored inverted.
		return netip.AddrFrom4([4]byte{^b[12], ^b[13], ^b[14], ^b[15]}), true
	}
	return netip.Addr{}, false
}

// CheckHostName accepts IP literals and DNS names (letters, digits, '-'
// and '_' in labels) and nothing else: no zones, no empty labels, no
// numeric forms that inet_aton and curl read as IPv4 but Go does not
// (2130706433, 0x7f.1, 127.1, 0177.0.0.1), so the address a tool connects
// to is the one checked. Errors wrap ErrSyntax; a name's are ErrHostLength,
// ErrHostName or ErrNumericHost.
func CheckHostName(host string) error {
	if host == "" {
		return fmt.Errorf("%w: empty host", ErrSyntax)
	}
	if strings.Contains(host, "%") {
		return fmt.Errorf("%w: zone in host", ErrSyntax)
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	name := strings.TrimSuffix(host, ".")
	if len(name) == 0 || len(name) > 253 {
		return ErrHostLength
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return ErrHostName
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return ErrHostName
			}
		}
	}
	last := strings.ToLower(labels[len(labels)-1])
	numeric := last != ""
	for i := 0; i < len(last); i++ {
		if !(last[i] >= '0' && last[i] <= '9' || last[i] == 'x' || last[i] >= 'a' && last[i] <= 'f') {
			numeric = false
		}
	}
	if numeric && (last[0] >= '0' && last[0] <= '9') {
		return ErrNumericHost
	}
	return nil
}

// SplitTarget parses a proxy destination "host:port" (IPv6 in brackets).
func SplitTarget(hostport string) (host string, port uint16, err error) {
	if len(hostport) > 300 {
		return "", 0, fmt.Errorf("%w: too long", ErrSyntax)
	}
	h, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", 0, fmt.Errorf("%w: %v", ErrSyntax, err)
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return "", 0, fmt.Errorf("%w: invalid port", ErrSyntax)
	}
	return strings.ToLower(h), uint16(n), nil
}

// Session is the proxy serving one listener (one command, one clone).
type Session struct {
	x      *Proxy
	ln     net.Listener
	srv    *http.Server
	rp     *httputil.ReverseProxy
	report func(Contact)
	budget int64 // bytes the session may receive; 0: no bound

	received atomic.Int64
	exceeded atomic.Bool

	mu    sync.Mutex
	first *Refusal

	conns conns
	done  chan struct{}
}

// Option configures a Session.
type Option func(*Session)

// Budget bounds the bytes a session receives from its destinations
// (response bodies of forwarded requests, everything a CONNECT tunnel
// carries to the client) at max; max <= 0 means no bound. The transfer
// that crosses it is cut, and Exceeded reports it.
func Budget(max int64) Option {
	return func(s *Session) { s.budget = max }
}

// quiet drops net/http's own log lines: refusals are reported as contacts,
// and a cut transfer is expected when the budget is spent.
var quiet = log.New(io.Discard, "", 0)

// Serve proxies the connections of ln until Close; report (may be nil)
// receives every destination asked for.
func (x *Proxy) Serve(ln net.Listener, report func(Contact), opts ...Option) *Session {
	s := &Session{x: x, ln: ln, report: report, done: make(chan struct{})}
	for _, o := range opts {
		o(s)
	}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           s.dial,
		ForceAttemptHTTP2:     false,
		MaxIdleConns:          8,
		IdleConnTimeout:       30 * time.Second,
		ResponseHeaderTimeout: 5 * time.Minute,
	}
	s.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL = pr.In.URL
			pr.Out.Host = pr.In.Host
		},
		Transport: tr,
		ModifyResponse: func(r *http.Response) error {
			if s.budget > 0 {
				r.Body = &countBody{ReadCloser: r.Body, s: s}
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) { refusedResponse(w, err) },
		ErrorLog:     quiet,
	}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 30 * time.Second, ErrorLog: quiet}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln)
	}()
	return s
}

// Close stops the listener and cuts every connection.
func (s *Session) Close() {
	_ = s.srv.Close()
	s.conns.closeAll()
	<-s.done
	if t, ok := s.rp.Transport.(*http.Transport); ok {
		t.CloseIdleConnections()
	}
}

// Err is the first destination the session refused (a *Refusal), or nil.
// A dial that failed, or was cancelled, is not a refusal.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.first == nil {
		return nil
	}
	return s.first
}

// Exceeded reports whether the session received more than its Budget.
func (s *Session) Exceeded() bool { return s.exceeded.Load() }

// count adds n received bytes and reports whether the budget still holds.
func (s *Session) count(n int) bool {
	if s.received.Add(int64(n)) > s.budget {
		s.exceeded.Store(true)
		return false
	}
	return true
}

var errBudget = errors.New("egress: byte budget exceeded")

// countBody counts a forwarded response body against the budget.
type countBody struct {
	io.ReadCloser
	s *Session
}

func (b *countBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if !b.s.count(n) {
		return 0, errBudget
	}
	return n, err
}

func (s *Session) contact(addr string, err error) {
	c := Contact{Addr: printable(addr)}
	if err != nil {
		c.Refused = true
		c.Reason = reason(err)
	}
	s.x.log.Debug("egress", "addr", addr, "refused", c.Refused, "reason", c.Reason)
	if s.report != nil {
		s.report(c)
	}
}

// reason is the client-safe text of a refusal.
func reason(err error) string {
	for _, e := range []error{ErrDenied, ErrPrivate, ErrResolve, ErrSyntax, ErrNotProxy} {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	return "connection failed"
}

// Refusal is a destination the proxy refused to dial.
type Refusal struct {
	// Target is the destination as asked ("host:port", unfiltered: quote
	// it before showing it).
	Target string
	// Err is Check's or SplitTarget's error: it wraps one of the Err…
	// sentinels, or is the context's error.
	Err error
}

func (r *Refusal) Error() string { return "egress: " + printable(r.Target) + ": " + r.Err.Error() }
func (r *Refusal) Unwrap() error { return r.Err }

// dial checks hostport and connects to exactly the checked addresses.
func (s *Session) dial(ctx context.Context, network, hostport string) (net.Conn, error) {
	host, port, err := SplitTarget(hostport)
	if err == nil {
		var addrs []netip.Addr
		addrs, err = s.x.Check(ctx, host, port)
		if err == nil {
			s.contact(net.JoinHostPort(host, strconv.Itoa(int(port))), nil)
			return s.connect(ctx, addrs, port)
		}
	}
	s.contact(hostport, err)
	r := &Refusal{Target: hostport, Err: err}
	if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		s.mu.Lock()
		if s.first == nil {
			s.first = r
		}
		s.mu.Unlock()
	}
	return nil, r
}

func (s *Session) connect(ctx context.Context, addrs []netip.Addr, port uint16) (net.Conn, error) {
	dial := s.x.p.Dial
	if dial == nil {
		d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
		dial = d.DialContext
	}
	var last error
	for _, a := range addrs {
		c, err := dial(ctx, "tcp", netip.AddrPortFrom(a, port).String())
		if err == nil {
			return c, nil
		}
		last = err
	}
	return nil, last
}

func refusedResponse(w http.ResponseWriter, err error) {
	var r *Refusal
	if errors.As(err, &r) {
		http.Error(w, "kettle egress: refused: "+reason(err), http.StatusForbidden)
		return
	}
	http.Error(w, "kettle egress: "+reason(err), http.StatusBadGateway)
}

// ServeHTTP implements the proxy: CONNECT tunnels, absolute http:// URLs
// forwarded. Nothing else (origin-form requests would reach the proxy
// itself).
func (s *Session) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect {
		if r.URL.Scheme != "http" || r.URL.Host == "" {
			s.contact(r.Host, ErrNotProxy)
			http.Error(w, "kettle egress: absolute http:// URL or CONNECT required", http.StatusBadRequest)
			return
		}
		if r.URL.Port() == "" {
			r.URL.Host = net.JoinHostPort(r.URL.Hostname(), "80")
		}
		s.rp.ServeHTTP(w, r)
		return
	}
	upstream, err := s.dial(r.Context(), "tcp", r.Host)
	if err != nil {
		refusedResponse(w, err)
		return
	}
	var received func(int) bool
	if s.budget > 0 {
		received = s.count
	}
	splice(w, upstream, &s.conns, received)
}

// printable bounds a client-chosen destination for logs and provenance:
// at most 256 bytes, control and non-ASCII bytes as '?'.
func printable(s string) string {
	if len(s) > 256 {
		s = s[:256]
	}
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c >= 0x7f {
			b[i] = '?'
		}
	}
	return string(b)
}
