package source

import (
	"context"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Resolver looks up a host's addresses; *net.Resolver satisfies it.
type Resolver interface {
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

// Policy says which repositories may be fetched and how.
type Policy struct {
	// AllowLocal permits http://, git://, file:// and absolute local paths.
	// Local paths and file:// run the source repository's own git
	// configuration on this machine: enable only for trusted callers (tests,
	// `kettle build` on one's own checkout).
	AllowLocal bool
	// AllowPrivateNetworks permits hosts resolving to loopback, private,
	// link-local (the cloud metadata service), multicast, unspecified and
	// other non-public addresses.
	AllowPrivateNetworks bool
	// Resolver resolves repository hosts; nil means net.DefaultResolver.
	Resolver Resolver
	// CloneTimeout bounds a whole clone; 0 means DefaultCloneTimeout.
	CloneTimeout time.Duration
	// MaxRepoBytes bounds the bytes a clone transfers and writes to disk;
	// 0 means DefaultMaxRepoBytes.
	MaxRepoBytes int64

	// Test hooks (unexported so production code cannot weaken the policy):
	// dial replaces the network dialer of the egress proxy; caFile is a CA
	// bundle git trusts for https.
	dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	caFile string
}

// Defaults of Policy.
const (
	DefaultCloneTimeout = 10 * time.Minute
	DefaultMaxRepoBytes = 2 << 30
)

func (p Policy) resolver() Resolver {
	if p.Resolver != nil {
		return p.Resolver
	}
	return net.DefaultResolver
}

func (p Policy) cloneTimeout() time.Duration {
	if p.CloneTimeout > 0 {
		return p.CloneTimeout
	}
	return DefaultCloneTimeout
}

func (p Policy) maxRepoBytes() int64 {
	if p.MaxRepoBytes > 0 {
		return p.MaxRepoBytes
	}
	return DefaultMaxRepoBytes
}

// transport is how git reaches a remote.
type transport string

const (
	transHTTPS transport = "https"
	transHTTP  transport = "http"
	transGit   transport = "git"
	transFile  transport = "file" // file:// URLs and absolute paths
)

// remote is a parsed, policy-checked repository URL.
type remote struct {
	url   string // as given
	trans transport
	host  string // hostname or IP literal without brackets; "" for file
	port  string // explicit or default port; "" for file
	path  string // URL path (for naming the checkout)
}

const maxURLLen = 2048

// CheckRepo validates a repo_url and repo_ref against p at submit time: the
// URL's transport and form, its host's addresses (unless
// p.AllowPrivateNetworks) and the ref's syntax. Clone repeats every check at
// fetch time.
func CheckRepo(ctx context.Context, url, ref string, p Policy) error {
	if _, err := parseRef(ref); err != nil {
		return err
	}
	r, err := parseRemote(url, p)
	if err != nil {
		return err
	}
	if r.host == "" || p.AllowPrivateNetworks {
		return nil
	}
	_, err = checkHost(ctx, r.host, p)
	return err
}

// parseRemote checks a repository URL's syntax and transport.
func parseRemote(raw string, p Policy) (*remote, error) {
	switch {
	case raw == "":
		return nil, refuse(ErrURL, nil, "repo_url is empty")
	case len(raw) > maxURLLen:
		return nil, refuse(ErrURL, nil, "repo_url is longer than %d bytes", maxURLLen)
	case strings.HasPrefix(raw, "-"):
		// Would be read as an option by git (--upload-pack=…).
		return nil, refuse(ErrURL, nil, "repo_url must not start with '-'")
	}
	for _, c := range raw {
		if c <= ' ' || c == 0x7f || c == '\\' || (c >= 0x80 && c <= 0x9f) {
			return nil, refuse(ErrURL, nil, "repo_url contains a space, backslash or control character")
		}
	}
	scheme, rest, hasScheme := strings.Cut(raw, "://")
	// git's "<transport>::<address>" syntax runs helpers such as ext::
	// (arbitrary commands) and fd::.
	if i := strings.Index(raw, "::"); i >= 0 && (!hasScheme || i < len(scheme)) {
		return nil, refuse(ErrTransport, nil, "repo_url transport %s is not allowed (use https://)", quote(raw[:i]+"::"))
	}
	if !hasScheme {
		if strings.HasPrefix(raw, "/") {
			if !p.AllowLocal {
				return nil, refuse(ErrTransport, nil, "local repository paths are not allowed (use an https:// URL, or start the server with --allow-local-repos)")
			}
			return &remote{url: raw, trans: transFile, path: raw}, nil
		}
		if strings.Contains(raw, ":") {
			// scp-like user@host:path is ssh.
			return nil, refuse(ErrTransport, nil, "ssh repository URLs are not allowed (use https://)")
		}
		return nil, refuse(ErrURL, nil, "repo_url must be an https:// URL")
	}
	_ = rest
	var tr transport
	switch strings.ToLower(scheme) {
	case "https":
		tr = transHTTPS
	case "http":
		tr = transHTTP
	case "git":
		tr = transGit
	case "file":
		tr = transFile
	default:
		return nil, refuse(ErrTransport, nil, "repo_url scheme %s is not allowed (use https://)", quote(scheme))
	}
	if tr != transHTTPS && !p.AllowLocal {
		return nil, refuse(ErrTransport, nil, "repo_url scheme %s is not allowed (use an https:// URL, or start the server with --allow-local-repos)", quote(scheme))
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, refuse(ErrURL, err, "repo_url is not a valid URL")
	}
	if u.User != nil {
		// Credentials would be stored in the provenance and logs.
		return nil, refuse(ErrURL, nil, "repo_url must not contain credentials")
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return nil, refuse(ErrURL, nil, "repo_url must not contain a fragment")
	}
	if tr == transFile {
		if h := u.Hostname(); h != "" && h != "localhost" {
			return nil, refuse(ErrURL, nil, "file:// repo_url must not name a host")
		}
		if u.Path == "" {
			return nil, refuse(ErrURL, nil, "file:// repo_url has no path")
		}
		return &remote{url: raw, trans: transFile, path: u.Path}, nil
	}
	host := u.Hostname()
	if err := checkHostSyntax(host, u.Host); err != nil {
		return nil, err
	}
	port := u.Port()
	if port == "" {
		port = map[transport]string{transHTTPS: "443", transHTTP: "80", transGit: "9418"}[tr]
	} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return nil, refuse(ErrURL, nil, "repo_url has an invalid port")
	}
	return &remote{url: raw, trans: tr, host: strings.ToLower(host), port: port, path: u.Path}, nil
}

// checkHostSyntax accepts IP literals and DNS names. Numeric forms that
// curl reads as IPv4 addresses but Go does not (2130706433, 0x7f.1, 127.1)
// are refused, so the address git connects to is the one we checked.
func checkHostSyntax(host, hostport string) error {
	if host == "" {
		return refuse(ErrURL, nil, "repo_url has no host")
	}
	if strings.Contains(hostport, "%") {
		return refuse(ErrURL, nil, "repo_url host must not contain '%%'")
	}
	if strings.HasPrefix(hostport, "[") {
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() || a.Zone() != "" {
			return refuse(ErrURL, nil, "repo_url has an invalid IPv6 host")
		}
		return nil
	}
	if a, err := netip.ParseAddr(host); err == nil && a.Is4() {
		return nil
	}
	name := strings.TrimSuffix(host, ".")
	if len(name) == 0 || len(name) > 253 {
		return refuse(ErrURL, nil, "repo_url has an invalid host name")
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return refuse(ErrURL, nil, "repo_url has an invalid host name %s", quote(host))
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return refuse(ErrURL, nil, "repo_url has an invalid host name %s", quote(host))
			}
		}
	}
	last := strings.ToLower(labels[len(labels)-1])
	if isNumericLabel(last) {
		return refuse(ErrURL, nil, "repo_url host %s is neither a host name nor a dotted IPv4 address", quote(host))
	}
	return nil
}

// isNumericLabel reports whether l is a decimal, octal or hex number as
// inet_aton would read it.
func isNumericLabel(l string) bool {
	if strings.HasPrefix(l, "0x") {
		l = l[2:]
		for i := 0; i < len(l); i++ {
			if !strings.ContainsRune("0123456789abcdef", rune(l[i])) {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(l); i++ {
		if l[i] < '0' || l[i] > '9' {
			return false
		}
	}
	return true
}

// checkHost resolves host (unless it is an IP literal) and refuses it when
// any of its addresses is not public. It returns the addresses to connect to.
func checkHost(ctx context.Context, host string, p Policy) ([]netip.Addr, error) {
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		ips, err := p.resolver().LookupIPAddr(rctx, host)
		if err != nil || len(ips) == 0 {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, refuse(ErrResolve, err, "repository host %s does not resolve", quote(host))
		}
		for _, ip := range ips {
			if a, ok := netip.AddrFromSlice(ip.IP); ok {
				addrs = append(addrs, a.Unmap())
			}
		}
	}
	if !p.AllowPrivateNetworks {
		for _, a := range addrs {
			if !IsPublic(a) {
				// The address itself is not echoed: it would let a client map
				// internal DNS names.
				return nil, refuse(ErrPrivateAddress, nil,
					"repository host %s resolves to a non-public address (loopback, private, link-local, multicast or reserved); not allowed unless the server runs with --allow-private-networks", quote(host))
			}
		}
	}
	return addrs, nil
}

// nonPublic lists the ranges, beyond Go's predicates, that must never be
// reached from a build: shared, reserved, benchmarking, protocol and
// translation ranges (the latter are checked through their embedded IPv4).
var nonPublic = func() []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "198.18.0.0/15", "240.0.0.0/4",
		"::/128", "::1/128", "fec0::/10", "100::/64", "2001:db8::/32",
	} {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ps
}()

// IsPublic reports whether a is a globally routable unicast address that a
// build may fetch from: not loopback, private, link-local, multicast,
// unspecified, shared (CGNAT) or reserved; IPv4 embedded in IPv6
// (mapped, NAT64, 6to4, Teredo) is judged by the embedded address.
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
	if a.Is6() {
		b := a.As16()
		switch {
		case netip.MustParsePrefix("64:ff9b::/96").Contains(a), netip.MustParsePrefix("64:ff9b:1::/48").Contains(a):
			return IsPublic(netip.AddrFrom4([4]byte(b[12:16])))
		case netip.MustParsePrefix("2002::/16").Contains(a):
			return IsPublic(netip.AddrFrom4([4]byte(b[2:6])))
		case netip.MustParsePrefix("2001::/32").Contains(a):
			// Teredo: the client's IPv4 is stored inverted.
			var v4 [4]byte
			for i := range v4 {
				v4[i] = ^b[12+i]
			}
			return IsPublic(netip.AddrFrom4(v4))
		case netip.MustParsePrefix("::/96").Contains(a):
			// Deprecated IPv4-compatible addresses.
			return IsPublic(netip.AddrFrom4([4]byte(b[12:16])))
		}
	}
	return true
}

// refKind is what a repo_ref names.
type refKind int

const (
	refDefault refKind = iota // the remote's HEAD ("" or "HEAD")
	refName                   // a branch or tag by name
	refFull                   // refs/heads/<name> or refs/tags/<name>
	refCommit                 // a full 40- or 64-hex commit
	refAbbrev                 // 7 to 39 hex digits: an abbreviated commit, or a name that looks like one
)

// gitRef is a validated repo_ref.
type gitRef struct {
	kind refKind
	name string // the ref as given; a commit in lower case
}

// parseRef validates repo_ref: "" or HEAD (the remote HEAD), a full 40- or
// 64-hex commit, an abbreviated commit of at least 7 hex digits (resolved
// on the remote), refs/heads/<name> or refs/tags/<name>, or a branch or tag
// name of safe characters that git cannot read as an option.
func parseRef(ref string) (gitRef, error) {
	if ref == "" || ref == "HEAD" {
		return gitRef{kind: refDefault}, nil
	}
	if len(ref) > 255 {
		return gitRef{}, refuse(ErrRef, nil, "repo_ref is longer than 255 bytes")
	}
	if isHex(ref) {
		switch {
		case len(ref) == 40 || len(ref) == 64:
			return gitRef{kind: refCommit, name: strings.ToLower(ref)}, nil
		case len(ref) >= 7 && len(ref) < 40:
			return gitRef{kind: refAbbrev, name: strings.ToLower(ref)}, nil
		}
	}
	for i := 0; i < len(ref); i++ {
		c := ref[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '/' || c == '-') {
			return gitRef{}, refuse(ErrRef, nil, "repo_ref %s contains a character outside [A-Za-z0-9._/-]", quote(ref))
		}
	}
	switch {
	case ref[0] == '-':
		return gitRef{}, refuse(ErrRef, nil, "repo_ref must not start with '-'")
	case strings.Contains(ref, ".."):
		return gitRef{}, refuse(ErrRef, nil, "repo_ref must not contain '..'")
	case ref[0] == '/' || strings.HasSuffix(ref, "/") || strings.Contains(ref, "//"):
		return gitRef{}, refuse(ErrRef, nil, "repo_ref %s is not a valid branch or tag name", quote(ref))
	case strings.HasSuffix(ref, ".") || strings.HasSuffix(ref, ".lock") || strings.Contains(ref, "/."):
		return gitRef{}, refuse(ErrRef, nil, "repo_ref %s is not a valid branch or tag name", quote(ref))
	case ref[0] == '.':
		return gitRef{}, refuse(ErrRef, nil, "repo_ref %s is not a valid branch or tag name", quote(ref))
	}
	if strings.HasPrefix(ref, "refs/") {
		rest, ok := strings.CutPrefix(ref, "refs/heads/")
		if !ok {
			rest, ok = strings.CutPrefix(ref, "refs/tags/")
		}
		if !ok || rest == "" {
			return gitRef{}, refuse(ErrRef, nil, "repo_ref %s: only refs/heads/<branch> and refs/tags/<tag> are supported", quote(ref))
		}
		return gitRef{kind: refFull, name: ref}, nil
	}
	return gitRef{kind: refName, name: ref}, nil
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}
