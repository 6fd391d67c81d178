package source

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/kettle-build/kettle/egress"
	"github.com/kettle-build/kettle/failure"
)

// fakeResolver maps host names to addresses; unknown names do not resolve.
// Every lookup is counted, and a name may resolve differently on later
// lookups (DNS rebinding).
type fakeResolver struct {
	hosts map[string][]string
	later map[string][]string // used from the second lookup on
	n     atomic.Int32
}

func (f *fakeResolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	n := f.n.Add(1)
	addrs := f.hosts[host]
	if n > 1 && f.later[host] != nil {
		addrs = f.later[host]
	}
	if addrs == nil {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	var out []net.IPAddr
	for _, a := range addrs {
		out = append(out, net.IPAddr{IP: net.ParseIP(a)})
	}
	return out, nil
}

var testResolver = &fakeResolver{hosts: map[string][]string{
	"github.com":          {"140.82.121.3"},
	"dual.example.com":    {"140.82.121.3", "10.0.0.7"},
	"metadata.example":    {"169.254.169.254"},
	"localhost.example":   {"127.0.0.1"},
	"v6local.example":     {"::1"},
	"mapped.example":      {"::ffff:192.168.1.1"},
	"nat64.example":       {"64:ff9b::a00:1"},
	"cgnat.example":       {"100.64.3.4"},
	"multicast.example":   {"224.0.0.251"},
	"unspecified.example": {"0.0.0.0"},
	"public6.example":     {"2606:4700::6810:84e5"},
}}

func TestCheckRepo(t *testing.T) {
	strict := Policy{Resolver: testResolver}
	local := Policy{Resolver: testResolver, AllowLocal: true}
	open := Policy{Resolver: testResolver, AllowLocal: true, AllowPrivateNetworks: true}
	sha1 := strings.Repeat("ab", 20)
	cases := []struct {
		name, url, ref string
		p              Policy
		want           error // nil = accepted
	}{
		{"https", "https://github.com/junegunn/fzf.git", "", strict, nil},
		{"https ref branch", "https://github.com/junegunn/fzf", "release/v1.2_x-y", strict, nil},
		{"https ref sha1", "https://github.com/a/b", sha1, strict, nil},
		{"https ref sha256", "https://github.com/a/b", strings.Repeat("0f", 32), strict, nil},
		{"https port", "https://github.com:8443/a/b", "", strict, nil},
		{"https ipv6 public", "https://public6.example/a", "", strict, nil},
		{"https public IP literal", "https://140.82.121.3/a/b", "", strict, nil},
		{"http refused", "http://github.com/a/b", "", strict, ErrTransport},
		{"git refused", "git://github.com/a/b", "", strict, ErrTransport},
		{"file refused", "file:///srv/repo", "", strict, ErrTransport},
		{"path refused", "/srv/repo", "", strict, ErrTransport},
		{"http local", "http://github.com/a/b", "", local, nil},
		{"git local", "git://github.com/a/b", "", local, nil},
		{"file local", "file:///srv/repo", "", local, nil},
		{"path local", "/srv/repo", "", local, nil},
		{"file host", "file://evil.example/srv/repo", "", local, ErrURL},
		{"ext", "ext::sh -c touch% /tmp/pwned", "", open, ErrURL},
		{"ext nospace", "ext::sh%20-c%20id", "", open, ErrTransport},
		{"fd", "fd::3", "", open, ErrTransport},
		{"transport helper", "https::github.com/a", "", open, ErrTransport},
		{"ssh", "ssh://git@github.com/a/b", "", open, ErrTransport},
		{"git+ssh", "git+ssh://github.com/a/b", "", open, ErrTransport},
		{"scp", "git@github.com:a/b.git", "", open, ErrTransport},
		{"ftp", "ftp://github.com/a", "", open, ErrTransport},
		{"relative", "a/b", "", open, ErrURL},
		{"empty", "", "", open, ErrURL},
		{"option injection url", "--upload-pack=touch /tmp/pwned", "", open, ErrURL},
		{"option injection url2", "-uhttps://github.com/a", "", open, ErrURL},
		{"credentials", "https://user:token@github.com/a/b", "", strict, ErrURL},
		{"fragment", "https://github.com/a/b#x", "", strict, ErrURL},
		{"newline", "https://github.com/a\n/b", "", strict, ErrURL},
		{"no host", "https:///a/b", "", strict, ErrURL},
		{"bad port", "https://github.com:99999/a", "", strict, ErrURL},
		{"decimal ip", "https://2130706433/a", "", open, ErrURL},
		{"hex ip", "https://0x7f000001/a", "", open, ErrURL},
		{"short ip", "https://127.1/a", "", open, ErrURL},
		{"octal ip label", "https://0177.0.0.1/a", "", open, ErrURL},
		{"zone", "https://[fe80::1%25eth0]/a", "", open, ErrURL},
		{"percent host", "https://git%68ub.com/a", "", strict, ErrURL},
		{"loopback literal", "https://127.0.0.1/a", "", strict, ErrPrivateAddress},
		{"v6 loopback literal", "https://[::1]/a", "", strict, ErrPrivateAddress},
		{"metadata literal", "https://169.254.169.254/latest/meta-data", "", strict, ErrPrivateAddress},
		{"private literal", "https://10.1.2.3/a", "", strict, ErrPrivateAddress},
		{"metadata name", "https://metadata.example/a", "", strict, ErrPrivateAddress},
		{"loopback name", "https://localhost.example/a", "", strict, ErrPrivateAddress},
		{"v6 loopback name", "https://v6local.example/a", "", strict, ErrPrivateAddress},
		{"mapped v4 name", "https://mapped.example/a", "", strict, ErrPrivateAddress},
		{"nat64 name", "https://nat64.example/a", "", strict, ErrPrivateAddress},
		{"cgnat name", "https://cgnat.example/a", "", strict, ErrPrivateAddress},
		{"multicast name", "https://multicast.example/a", "", strict, ErrPrivateAddress},
		{"unspecified name", "https://unspecified.example/a", "", strict, ErrPrivateAddress},
		{"one private among public", "https://dual.example.com/a", "", strict, ErrPrivateAddress},
		{"unresolvable", "https://nx.example/a", "", strict, ErrResolve},
		{"private allowed", "https://metadata.example/a", "", open, nil},
		{"git private", "git://10.0.0.1/a", "", local, ErrPrivateAddress},
		{"ref option", "https://github.com/a", "--upload-pack=touch /tmp/x", strict, ErrRef},
		{"ref dash", "https://github.com/a", "-x", strict, ErrRef},
		{"ref dotdot", "https://github.com/a", "a..b", strict, ErrRef},
		{"ref control", "https://github.com/a", "main\n", strict, ErrRef},
		{"ref space", "https://github.com/a", "ma in", strict, ErrRef},
		{"ref colon", "https://github.com/a", "a:b", strict, ErrRef},
		{"ref caret", "https://github.com/a", "HEAD^", strict, ErrRef},
		{"ref lock", "https://github.com/a", "x.lock", strict, ErrRef},
		{"ref slash", "https://github.com/a", "/x", strict, ErrRef},
		{"ref dot comp", "https://github.com/a", "a/.b", strict, ErrRef},
		{"ref short hex is a name", "https://github.com/a", "abc123", strict, nil},
		{"ref too long", "https://github.com/a", strings.Repeat("a", 256), strict, ErrRef},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := CheckRepo(context.Background(), c.url, c.ref, c.p)
			if c.want == nil {
				if err != nil {
					t.Fatalf("CheckRepo(%q, %q) = %v", c.url, c.ref, err)
				}
				return
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("CheckRepo(%q, %q) = %v, want %v", c.url, c.ref, err, c.want)
			}
			var fe *failure.Error
			if !errors.As(err, &fe) || fe.Kind != failure.InvalidSource || fe.Msg == "" {
				t.Fatalf("not a client-safe InvalidSource failure: %#v", err)
			}
			// Resolved addresses are never echoed to the client.
			for _, a := range []string{"169.254", "10.0.0", "127.0.0.1", "192.168"} {
				if strings.Contains(fe.Msg, a) && !strings.Contains(c.url, a) {
					t.Errorf("message %q leaks address %s", fe.Msg, a)
				}
			}
		})
	}
}

// FuzzCheckRepo checks that whatever URL and ref are accepted under the
// default policy is an https URL of a public host with a plain ref, so
// nothing git reads as an option, a helper transport or a local path can
// get through.
func FuzzCheckRepo(f *testing.F) {
	for _, s := range [][2]string{
		{"https://github.com/junegunn/fzf.git", ""}, {"https://github.com/a/b", "main"},
		{"ext::sh -c touch% /tmp/pwned", ""}, {"fd::3", ""}, {"--upload-pack=touch /tmp/x", ""},
		{"git@github.com:a/b", ""}, {"https://169.254.169.254/", ""}, {"https://2130706433/", ""},
		{"https://[::ffff:127.0.0.1]/", ""}, {"https://github.com/a", "--upload-pack=x"},
		{"https://github.com/a", strings.Repeat("a", 40)}, {"HTTPS://GITHUB.COM/a", "v1.0"},
		{"https://github.com::/a", ""}, {"file:///etc", ""}, {"/etc", ""},
	} {
		f.Add(s[0], s[1])
	}
	res := &fakeResolver{hosts: map[string][]string{"github.com": {"140.82.121.3"}}}
	f.Fuzz(func(t *testing.T, url, ref string) {
		err := CheckRepo(context.Background(), url, ref, Policy{Resolver: res})
		if err != nil {
			var fe *failure.Error
			if !errors.As(err, &fe) || fe.Kind != failure.InvalidSource || fe.Msg == "" {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		if !strings.HasPrefix(strings.ToLower(url), "https://") || strings.HasPrefix(url, "-") || strings.Contains(url[:8], "::") {
			t.Fatalf("accepted URL %q", url)
		}
		r, err := parseRemote(url, Policy{})
		if err != nil || r.trans != transHTTPS || r.host != "github.com" && !func() bool {
			a, err := netip.ParseAddr(r.host)
			return err == nil && egress.IsPublic(a)
		}() {
			t.Fatalf("accepted URL %q: %+v %v", url, r, err)
		}
		if strings.HasPrefix(ref, "-") || strings.Contains(ref, "..") || strings.ContainsAny(ref, " \t\n\r\x00:~^?*[\\@{") {
			t.Fatalf("accepted ref %q", ref)
		}
	})
}

// TestHostRefusalMessages: the client-facing texts of host refusals, now
// decided by egress, are the ones source has always given.
func TestHostRefusalMessages(t *testing.T) {
	strict := Policy{Resolver: testResolver}
	open := Policy{Resolver: testResolver, AllowPrivateNetworks: true}
	private := "repository host %q resolves to a non-public address (loopback, private, link-local, multicast or reserved); not allowed unless the server runs with --allow-private-networks"
	for _, c := range []struct {
		url  string
		p    Policy
		want string
	}{
		{"https://dual.example.com/a", strict, fmt.Sprintf(private, "dual.example.com")},
		{"https://169.254.169.254/a", strict, fmt.Sprintf(private, "169.254.169.254")},
		{"https://[::ffff:10.0.0.1]/a", strict, fmt.Sprintf(private, "::ffff:10.0.0.1")},
		{"https://nx.example/a", strict, `repository host "nx.example" does not resolve`},
		{"https://2130706433/a", open, `repo_url host "2130706433" is neither a host name nor a dotted IPv4 address`},
		{"https://0x7f.1/a", open, `repo_url host "0x7f.1" is neither a host name nor a dotted IPv4 address`},
		{"https://a..b/a", open, `repo_url has an invalid host name "a..b"`},
		{"https://" + strings.Repeat("a.", 127) + "com/a", open, "repo_url has an invalid host name"},
		{"https://[fe80::1%25eth0]/a", open, "repo_url host must not contain '%'"},
	} {
		err := CheckRepo(context.Background(), c.url, "", c.p)
		if got := failure.Message(err); got != c.want {
			t.Errorf("CheckRepo(%.40q) = %q, want %q", c.url, got, c.want)
		}
	}
}

// TestRefusalsSayWhatToDo: a refusal an operator can lift names the flag
// that lifts it (issue 18).
func TestRefusalsSayWhatToDo(t *testing.T) {
	strict := Policy{Resolver: testResolver}
	for _, c := range []struct{ url, want string }{
		{"http://github.com/a/b", "--allow-local-repos"},
		{"file:///srv/repo", "--allow-local-repos"},
		{"/srv/repo", "--allow-local-repos"},
		{"https://10.1.2.3/a", "--allow-private-networks"},
	} {
		err := CheckRepo(context.Background(), c.url, "", strict)
		if err == nil || !strings.Contains(failure.Message(err), c.want) {
			t.Errorf("CheckRepo(%q) = %v, want a message naming %s", c.url, err, c.want)
		}
	}
}
