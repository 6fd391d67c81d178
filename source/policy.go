package source

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/kettle-build/kettle/egress"
)

// Resolver looks up a host's addresses; *net.Resolver satisfies it.
type Resolver = egress.Resolver

// Policy says which repositories may be fetched and how.
type Policy struct {
	// AllowLocal permits http://, git://, file:// and absolute local paths.
	// Local paths and file:// run the source repository's own git
	// configuration on this machine: enable only for trusted callers (tests,
	// `kettle build` on one's own checkout).
	AllowLocal bool
	// AllowPrivateNetworks permits hosts resolving to loopback, private
	// and other non-public addresses. Link-local addresses (the cloud
	// metadata service), unspecified and multicast addresses stay refused
	// (egress.Policy.AllowPrivate).
	AllowPrivateNetworks bool
	// Deny lists addresses no clone may reach whatever AllowPrivateNetworks
	// says: kettle's own listeners (egress.Policy.Deny: "host:port",
	// ":port" for every address of this machine, or an IP).
	Deny []string
	// Resolver resolves repository hosts; nil means net.DefaultResolver.
	Resolver Resolver
	// CloneTimeout bounds a whole clone; 0 means DefaultCloneTimeout.
	CloneTimeout time.Duration
	// MaxRepoBytes bounds the bytes a clone transfers and writes to disk;
	// 0 means DefaultMaxRepoBytes.
	MaxRepoBytes int64
	// MaxRepoEntries bounds the files, links and directories of a clone's
	// checkout, counted from its trees before git checks them out; 0
	// means DefaultMaxEntries (an archive's limit too).
	MaxRepoEntries int

	// Test hooks (unexported so production code cannot weaken the policy):
	// dial replaces the network dialer of the egress proxy (and of nothing
	// else: git:// connects by itself); caFile is a CA bundle git trusts
	// for https.
	dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	caFile string
}

// Defaults of Policy.
const (
	DefaultCloneTimeout = 10 * time.Minute
	DefaultMaxRepoBytes = 2 << 30
)

// proxy is the address policy of p as an egress proxy: it checks every
// repository host, and a Session of it carries a clone's http(s)
// connections.
func (p Policy) proxy() (*egress.Proxy, error) {
	return egress.New(egress.Policy{AllowPrivate: p.AllowPrivateNetworks, Deny: p.Deny, Resolver: p.Resolver, Dial: p.dial})
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

func (p Policy) maxRepoEntries() int64 {
	if p.MaxRepoEntries > 0 {
		return int64(p.MaxRepoEntries)
	}
	return DefaultMaxEntries
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
// URL's transport and form, its host's addresses (with
// p.AllowPrivateNetworks, only against p.Deny) and the ref's syntax. Clone
// repeats every check at fetch time.
func CheckRepo(ctx context.Context, url, ref string, p Policy) error {
	if _, err := parseRef(ref); err != nil {
		return err
	}
	r, err := parseRemote(url, p)
	if err != nil {
		return err
	}
	if r.host == "" || (p.AllowPrivateNetworks && len(p.Deny) == 0) {
		return nil
	}
	x, err := p.proxy()
	if err != nil {
		return err
	}
	_, err = checkHost(ctx, x, r, p)
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

// checkHostSyntax checks a URL's host: an IPv4 literal, an IPv6 literal in
// brackets, or a DNS name by egress.CheckHostName's rules (numeric forms
// that curl reads as IPv4 addresses but Go does not, 2130706433, 0x7f.1,
// 127.1, are refused, so the address git connects to is the one we
// checked).
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
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Is4() {
			return nil
		}
		// An IPv6 literal outside brackets.
		return refuse(ErrURL, nil, "repo_url has an invalid host name %s", quote(host))
	}
	switch err := egress.CheckHostName(host); {
	case err == nil:
		return nil
	case errors.Is(err, egress.ErrHostLength):
		return refuse(ErrURL, err, "repo_url has an invalid host name")
	case errors.Is(err, egress.ErrNumericHost):
		return refuse(ErrURL, err, "repo_url host %s is neither a host name nor a dotted IPv4 address", quote(host))
	default:
		return refuse(ErrURL, err, "repo_url has an invalid host name %s", quote(host))
	}
}

// checkHost checks r's host and port with x (egress.Proxy.Check: resolved
// once, every address must pass) and returns the addresses to connect to.
func checkHost(ctx context.Context, x *egress.Proxy, r *remote, p Policy) ([]netip.Addr, error) {
	port, err := strconv.ParseUint(r.port, 10, 16)
	if err != nil {
		return nil, refuse(ErrURL, nil, "repo_url has an invalid port")
	}
	addrs, err := x.Check(ctx, r.host, uint16(port))
	if err != nil {
		return nil, hostRefusal(r.host, r.host, err, p)
	}
	return addrs, nil
}

// hostRefusal is the client's refusal of a host egress refused: err is
// egress.Proxy.Check's error for host (hostport as it was asked for).
func hostRefusal(host, hostport string, err error, p Policy) error {
	switch {
	case errors.Is(err, egress.ErrResolve):
		return refuse(ErrResolve, err, "repository host %s does not resolve", quote(host))
	case errors.Is(err, egress.ErrPrivate), errors.Is(err, egress.ErrDenied):
		// The address itself is not echoed: it would let a client map
		// internal DNS names.
		if p.AllowPrivateNetworks {
			if errors.Is(err, egress.ErrDenied) {
				return refuse(ErrPrivateAddress, err,
					"repository host %s resolves to the cloud metadata service or one of kettle's own listeners, which are never allowed", quote(host))
			}
			return refuse(ErrPrivateAddress, err,
				"repository host %s resolves to a link-local (cloud metadata), unspecified or multicast address, which is never allowed", quote(host))
		}
		return refuse(ErrPrivateAddress, err,
			"repository host %s resolves to a non-public address (loopback, private, link-local, multicast or reserved); not allowed unless the server runs with --allow-private-networks", quote(host))
	case errors.Is(err, egress.ErrSyntax):
		if serr := checkHostSyntax(host, hostport); serr != nil {
			return serr
		}
		return refuse(ErrURL, err, "repo_url has an invalid host %s", quote(hostport))
	}
	return err // the context's
}

// proxyRefusal is the client's refusal of a connection a clone's egress
// session refused (a redirect's target, or a name that rebound).
func proxyRefusal(err error, p Policy) error {
	var r *egress.Refusal
	if !errors.As(err, &r) {
		return err
	}
	host, _, serr := net.SplitHostPort(r.Target)
	if serr != nil {
		host = r.Target
	}
	return hostRefusal(host, r.Target, r.Err, p)
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
