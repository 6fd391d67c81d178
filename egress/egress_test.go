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
		if err == nil && checkHostSyntax(host) != nil {
			t.Fatalf("%q: allowed with invalid syntax", s)
		}
	})
}
