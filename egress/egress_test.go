package egress

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// flipResolver answers with first on the first lookup of a name and with
// then afterwards: a DNS-rebinding name.
type flipResolver struct {
	mu          sync.Mutex
	calls       map[string]int
	first, then map[string][]string
}

func (r *flipResolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.calls == nil {
		r.calls = map[string]int{}
	}
	r.calls[host]++
	ans := r.then[host]
	if r.calls[host] == 1 {
		ans = r.first[host]
	}
	if ans == nil {
		return nil, errors.New("no such host")
	}
	var out []net.IPAddr
	for _, a := range ans {
		out = append(out, net.IPAddr{IP: net.ParseIP(a)})
	}
	return out, nil
}

// recordDial sends every dial to target and records the address asked for.
type recordDial struct {
	mu     sync.Mutex
	target string
	dialed []string
}

func (d *recordDial) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	d.dialed = append(d.dialed, addr)
	d.mu.Unlock()
	return (&net.Dialer{}).DialContext(ctx, network, d.target)
}

func serve(t *testing.T, p Policy) (*url.URL, *[]Contact) {
	t.Helper()
	x, err := New(p)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []Contact
	s := x.Serve(ln, func(c Contact) { mu.Lock(); got = append(got, c); mu.Unlock() })
	t.Cleanup(s.Close)
	u, _ := url.Parse("http://" + ln.Addr().String())
	return u, &got
}

func client(proxy *url.URL) *http.Client {
	return &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxy)}}
}

// TestRebinding: a name that resolves to a public address when checked and
// to loopback afterwards is dialled at the checked address; a name with
// one private address among public ones is refused.
func TestRebinding(t *testing.T) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "origin") }))
	defer origin.Close()
	res := &flipResolver{
		first: map[string][]string{"rebind.test": {"93.184.216.34"}, "mixed.test": {"93.184.216.34", "127.0.0.1"}},
		then:  map[string][]string{"rebind.test": {"127.0.0.1"}, "mixed.test": {"127.0.0.1"}},
	}
	d := &recordDial{target: strings.TrimPrefix(origin.URL, "http://")}
	u, got := serve(t, Policy{Resolver: res, Dial: d.dial})
	c := client(u)
	for i := 0; i < 3; i++ {
		resp, err := c.Get(fmt.Sprintf("http://rebind.test:%d/", 8080+i)) // a new port: a new dial
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		c.CloseIdleConnections()
		if i == 0 && resp.StatusCode != 200 {
			t.Fatalf("first fetch: %s", resp.Status)
		}
		if i > 0 && resp.StatusCode != http.StatusForbidden {
			t.Fatalf("fetch %d after rebinding to loopback: %s, want 403", i, resp.Status)
		}
	}
	resp, err := c.Get("http://mixed.test/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("mixed public/loopback name: %s, want 403", resp.Status)
	}
	for _, a := range d.dialed {
		if a != "93.184.216.34:8080" {
			t.Errorf("dialled %s: only the checked public address may be dialled", a)
		}
	}
	if len(*got) != 4 || (*got)[0].Refused || !(*got)[1].Refused || !(*got)[3].Refused {
		t.Errorf("contacts = %+v", *got)
	}
}

// TestConnectDenied: CONNECT to kettle's own listeners and the metadata
// service is refused even with AllowPrivate; other loopback ports are not.
func TestConnectDenied(t *testing.T) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "origin") }))
	defer origin.Close()
	_, originPort, _ := net.SplitHostPort(strings.TrimPrefix(origin.URL, "http://"))
	u, got := serve(t, Policy{AllowPrivate: true, Deny: []string{"127.0.0.1:8080", ":4222", "10.9.9.9"}})
	for _, tc := range []struct {
		target string
		ok     bool
	}{
		{"127.0.0.1:8080", false},
		{"127.0.0.2:4222", false},
		{"[::1]:4222", false},
		{"0.0.0.0:" + originPort, false},
		{"169.254.169.254:80", false},
		{"[fd00:ec2::254]:80", false},
		{"[::ffff:169.254.169.254]:80", false},
		{"10.9.9.9:443", false},
		{"0x7f.1:80", false},
		{"2130706433:80", false},
		{"127.0.0.1:" + originPort, true},
	} {
		conn, err := net.Dial("tcp", u.Host)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", tc.target, tc.target)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		conn.Close()
		if err != nil {
			t.Fatalf("%s: %v", tc.target, err)
		}
		if (resp.StatusCode == 200) != tc.ok {
			t.Errorf("CONNECT %s: %s, want ok=%v", tc.target, resp.Status, tc.ok)
		}
	}
	if len(*got) != 11 {
		t.Errorf("%d contacts reported, want 11: %+v", len(*got), *got)
	}
}

// TestOriginForm: a request for the proxy itself (not an absolute URL, not
// CONNECT) is refused, not forwarded to whatever Host names.
func TestOriginForm(t *testing.T) {
	u, got := serve(t, Policy{AllowPrivate: true})
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusBadRequest || len(*got) != 1 || !(*got)[0].Refused {
		t.Fatalf("origin-form request: %s, contacts %+v", resp.Status, *got)
	}
	if p := printable("a\x00b\x1b[31m\xffc"); p != "a?b?[31m?c" {
		t.Errorf("printable = %q", p)
	}
}

// TestStrictPolicy: without AllowPrivate only public addresses pass.
func TestStrictPolicy(t *testing.T) {
	x, err := New(Policy{Resolver: &flipResolver{first: map[string][]string{"pub.test": {"1.1.1.1"}, "lan.test": {"192.168.1.1"}}}})
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]error{
		"pub.test": nil, "lan.test": ErrPrivate, "127.0.0.1": ErrPrivate, "10.0.0.1": ErrPrivate,
		"100.64.0.1": ErrPrivate, "169.254.169.254": ErrDenied, "::1": ErrPrivate, "nx.test": ErrResolve,
		"a..b": ErrSyntax, "x%25eth0": ErrSyntax, "0x7f000001": ErrSyntax,
	} {
		_, err := x.Check(context.Background(), host, 443)
		if !errors.Is(err, want) && !(want == nil && err == nil) {
			t.Errorf("%s: %v, want %v", host, err, want)
		}
	}
}

func TestIsPublic(t *testing.T) {
	for s, want := range map[string]bool{
		"8.8.8.8": true, "140.82.121.3": true, "2606:4700::1": true, "203.0.113.9": true,
		"127.0.0.1": false, "10.0.0.1": false, "172.16.0.1": false, "192.168.0.1": false, "169.254.169.254": false,
		"100.64.0.1": false, "0.0.0.0": false, "0.1.2.3": false, "224.0.0.1": false, "255.255.255.255": false,
		"240.0.0.1": false, "198.18.0.1": false, "192.0.0.1": false,
		"::": false, "::1": false, "fe80::1": false, "fc00::1": false, "fd00::1": false, "ff02::1": false, "fec0::1": false,
		"::ffff:127.0.0.1": false, "::ffff:8.8.8.8": true, "64:ff9b::7f00:1": false, "64:ff9b::808:808": true,
		"2002:a00:1::": false, "2002:808:808::": true, "2001:0:4136:e378:8000:63bf:f5ff:fffe": false,
		"::127.0.0.1": false, "2001:db8::1": false,
		// The local-use NAT64 prefix is never public, whatever it carries.
		"64:ff9b:1:808:8:808::": false,
	} {
		if got := IsPublic(netip.MustParseAddr(s)); got != want {
			t.Errorf("IsPublic(%s) = %v, want %v", s, got, want)
		}
	}
}

// TestCheckHostName: the host name rules source's repo_url check and the
// proxy share.
func TestCheckHostName(t *testing.T) {
	for host, want := range map[string]error{
		"github.com": nil, "a_b.example.": nil, "1.2.3.4": nil, "::1": nil, "x1.example.com": nil, "example.c0m": nil,
		"": ErrSyntax, "fe80::1%eth0": ErrSyntax, strings.Repeat("a.", 127) + "com": ErrHostLength,
		"a..b": ErrHostName, "-a.com": ErrHostName, "a-.com": ErrHostName, "a b.com": ErrHostName, "ex\x00.com": ErrHostName,
		strings.Repeat("a", 64) + ".com": ErrHostName, "münchen.de": ErrHostName,
		"2130706433": ErrNumericHost, "0x7f000001": ErrNumericHost, "0x7f.1": ErrNumericHost, "127.1": ErrNumericHost,
		"0177.0.0.1": ErrNumericHost, "0x": ErrNumericHost, "a.0X1F": ErrNumericHost, "a.1e5": ErrNumericHost,
	} {
		err := CheckHostName(host)
		if want == nil && err != nil || want != nil && !errors.Is(err, want) {
			t.Errorf("CheckHostName(%q) = %v, want %v", host, err, want)
		}
		if err != nil && !errors.Is(err, ErrSyntax) {
			t.Errorf("CheckHostName(%q) = %v, not an ErrSyntax", host, err)
		}
	}
}

type resolverFunc func(ctx context.Context, host string) ([]net.IPAddr, error)

func (f resolverFunc) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	return f(ctx, host)
}

// TestAlwaysRefusedForms: with AllowPrivate, the metadata service and
// link-local addresses stay refused in every form: carried by NAT64 (both
// prefixes), 6to4, Teredo, IPv4-compatible and IPv4-mapped addresses, and
// as a zoned DNS answer beside a public one.
func TestAlwaysRefusedForms(t *testing.T) {
	res := resolverFunc(func(ctx context.Context, host string) ([]net.IPAddr, error) {
		switch host {
		case "zoned.test":
			return []net.IPAddr{{IP: net.ParseIP("93.184.216.34")}, {IP: net.ParseIP("fe80::1"), Zone: "eth0"}}, nil
		case "lan.test":
			return []net.IPAddr{{IP: net.ParseIP("10.0.0.1")}}, nil
		}
		return nil, errors.New("no such host")
	})
	x, err := New(Policy{AllowPrivate: true, Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]error{
		"169.254.169.254": ErrDenied, "::ffff:169.254.169.254": ErrDenied, "::169.254.169.254": ErrDenied,
		"64:ff9b::a9fe:a9fe": ErrDenied, "64:ff9b:1:a9fe:a9:fe00::": ErrDenied, "2002:a9fe:a9fe::1": ErrDenied,
		"2001:0:1:2:3:4:5601:5601": ErrDenied, "fe80::1": ErrDenied, "fd00:ec2::254": ErrDenied,
		"64:ff9b::6464:64c8": ErrDenied, // 100.100.100.200
		"zoned.test":         ErrDenied, "0.0.0.0": ErrPrivate, "::": ErrPrivate, "224.0.0.1": ErrPrivate,
		"lan.test": nil, "127.0.0.1": nil, "64:ff9b::a00:1": nil,
	} {
		_, err := x.Check(context.Background(), host, 80)
		if !errors.Is(err, want) && !(want == nil && err == nil) {
			t.Errorf("%s: %v, want %v", host, err, want)
		}
	}
}

// serveSession starts a Session with opts on a loopback listener.
func serveSession(t *testing.T, p Policy, opts ...Option) (*url.URL, *Session) {
	t.Helper()
	x, err := New(p)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := x.Serve(ln, nil, opts...)
	t.Cleanup(s.Close)
	u, _ := url.Parse("http://" + ln.Addr().String())
	return u, s
}

// connectRead opens a CONNECT tunnel to target through the proxy at u and
// reads it to the end.
func connectRead(t *testing.T, u *url.URL, target string) (status int, n int64) {
	t.Helper()
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		return resp.StatusCode, 0
	}
	n, _ = io.Copy(io.Discard, br)
	return 200, n
}

// TestBudgetConnect: a CONNECT tunnel carrying more than the session's
// budget is cut before the byte that crosses it reaches the client, and
// Exceeded says so; within the budget everything arrives.
func TestBudgetConnect(t *testing.T) {
	const size = 1 << 20
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { c.Write(make([]byte, size)); c.Close() }()
		}
	}()
	for _, tc := range []struct {
		budget   int64
		exceeded bool
	}{{64 << 10, true}, {size, false}, {0, false}} {
		u, s := serveSession(t, Policy{AllowPrivate: true}, Budget(tc.budget))
		status, n := connectRead(t, u, ln.Addr().String())
		if status != 200 {
			t.Fatalf("budget %d: CONNECT %s", tc.budget, http.StatusText(status))
		}
		switch {
		case s.Exceeded() != tc.exceeded:
			t.Errorf("budget %d: Exceeded() = %v after %d bytes", tc.budget, s.Exceeded(), n)
		case tc.exceeded && n > tc.budget:
			t.Errorf("budget %d: %d bytes reached the client", tc.budget, n)
		case !tc.exceeded && n != size:
			t.Errorf("budget %d: %d bytes of %d arrived", tc.budget, n, size)
		}
		if s.Err() != nil {
			t.Errorf("budget %d: Err() = %v: a spent budget is not a refusal", tc.budget, s.Err())
		}
	}
}

// TestBudgetHTTP: a forwarded plain-http response larger than the budget
// is cut, and Exceeded says so.
func TestBudgetHTTP(t *testing.T) {
	const size = 1 << 20
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(size))
		w.Write(make([]byte, size))
	}))
	defer origin.Close()
	for _, tc := range []struct {
		budget   int64
		exceeded bool
	}{{64 << 10, true}, {size, false}} {
		u, s := serveSession(t, Policy{AllowPrivate: true}, Budget(tc.budget))
		c := client(u)
		resp, err := c.Get(origin.URL + "/blob")
		if err != nil {
			t.Fatalf("budget %d: %v", tc.budget, err)
		}
		n, rerr := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		c.CloseIdleConnections()
		if s.Exceeded() != tc.exceeded {
			t.Errorf("budget %d: Exceeded() = %v after %d bytes", tc.budget, s.Exceeded(), n)
		}
		if tc.exceeded && (rerr == nil || n > tc.budget) {
			t.Errorf("budget %d: read %d bytes, err %v: want a cut transfer", tc.budget, n, rerr)
		}
		if !tc.exceeded && (rerr != nil || n != size) {
			t.Errorf("budget %d: read %d bytes, err %v", tc.budget, n, rerr)
		}
	}
}

// TestSessionErr: Err is the first destination refused, with the target
// as asked and its Check error; allowed destinations, failed dials and
// cancelled checks leave it alone.
func TestSessionErr(t *testing.T) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "origin") }))
	defer origin.Close()
	res := &flipResolver{first: map[string][]string{"pub.test": {"93.184.216.34"}, "lan.test": {"192.168.1.1"}}}
	d := &recordDial{target: strings.TrimPrefix(origin.URL, "http://")}
	u, s := serveSession(t, Policy{Resolver: res, Dial: d.dial})
	c := client(u)
	get := func(rawURL string, want int) {
		t.Helper()
		resp, err := c.Get(rawURL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("GET %s: %s, want %d", rawURL, resp.Status, want)
		}
	}
	get("http://pub.test/", 200)
	if s.Err() != nil {
		t.Fatalf("Err() = %v after an allowed destination", s.Err())
	}
	// A cancelled check is not the destination's fault.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.dial(ctx, "tcp", "slow.test:443"); err == nil || s.Err() != nil {
		t.Fatalf("cancelled dial: %v, Err() = %v", err, s.Err())
	}
	get("http://lan.test:8080/x", http.StatusForbidden)
	if status, _ := connectRead(t, u, "nx.test:443"); status != http.StatusForbidden {
		t.Fatalf("CONNECT nx.test: %d", status)
	}
	var r *Refusal
	if err := s.Err(); !errors.As(err, &r) || r.Target != "lan.test:8080" || !errors.Is(err, ErrPrivate) {
		t.Fatalf("Err() = %#v, want the first refusal (lan.test:8080, ErrPrivate)", err)
	}
	if strings.Contains(s.Err().Error(), "192.168") {
		t.Errorf("Err() names the resolved address: %v", s.Err())
	}
}

func TestDenyParse(t *testing.T) {
	if _, err := New(Policy{Deny: []string{"127.0.0.1:notaport"}}); err == nil {
		t.Error("a bad deny entry was accepted")
	}
	if _, err := New(Policy{Deny: []string{"no-such-host.invalid:4222"}}); err == nil {
		t.Error("an unresolvable deny entry was accepted")
	}
}

// FuzzTarget: whatever a client puts after CONNECT, SplitTarget and
// Check neither panic nor pass a host that fails the syntax rules.
func FuzzTarget(f *testing.F) {
	for _, s := range []string{"example.com:443", "[::1]:80", "1.2.3.4:0", "a:b:c", "x%y:1", "0x7f.1:80", ":80", "[fe80::1%eth0]:443"} {
		f.Add(s)
	}
	x, _ := New(Policy{Resolver: &flipResolver{}})
	f.Fuzz(func(t *testing.T, s string) {
		host, port, err := SplitTarget(s)
		if err != nil {
			return
		}
		addrs, err := x.Check(context.Background(), host, port)
		if err == nil && len(addrs) == 0 {
			t.Fatalf("%q: allowed with no address", s)
		}
		if err == nil && CheckHostName(host) != nil {
			t.Fatalf("%q: allowed with invalid syntax", s)
		}
	})
}
