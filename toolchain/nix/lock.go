package nix

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/kettle-build/kettle/internal/lazyre"
	"github.com/kettle-build/kettle/provenance"
)

// ErrLock is wrapped by every refusal of a flake.lock: the trusted process
// reads the lock before anything runs and accepts only inputs it can make
// available without reading anything outside the project (see
// docs/security/nix.md).
var ErrLock = errors.New("flake.lock refused")

// Lock is what kettle takes from an accepted flake.lock.
type Lock struct {
	// Inputs are the root inputs with their narHash (provenance).
	Inputs []provenance.FlakeInput
	// Paths are the relative path inputs inside the project, which kettle
	// checks and adds to the job's store itself.
	Paths []PathInput
	// Remote are the locked attributes of every input fetched over the
	// network, keyed by node name; kettle fetches exactly these
	// (builtins.fetchTree) before evaluating the flake, which then runs
	// offline.
	Remote map[string]map[string]any
	// URLs are the addresses Remote names, for the address policy.
	URLs []string
	// InputURLs are the url attributes of the git, tarball and file
	// inputs: evaluation (restrict-eval) may name exactly these.
	InputURLs []string
}

// PathInput is one `path:./sub` input of the root flake.
type PathInput struct {
	Node    string // node name in flake.lock
	Path    string // clean, relative to the project root, never "." or ".."
	NarHash string // SRI sha256 from the lock
}

// Lock limits: far above real flakes, small enough that a hostile lock
// cannot make the parse expensive.
const (
	maxLockBytes  = 16 << 20
	maxLockNodes  = 10000
	maxFollowsLen = 64
)

// Attributes each accepted input type may carry in "locked" (Nix 2.8's
// fetchers). Anything else (submodules, which fetches URLs from the input's
// own .gitmodules; unknown attributes of later Nix versions) is refused.
var lockedAttrs = map[string][]string{
	"github":    {"type", "owner", "repo", "rev", "ref", "host", "narHash", "lastModified", "dir"},
	"gitlab":    {"type", "owner", "repo", "rev", "ref", "host", "narHash", "lastModified", "dir"},
	"sourcehut": {"type", "owner", "repo", "rev", "ref", "host", "narHash", "lastModified", "dir"},
	"git":       {"type", "url", "rev", "ref", "narHash", "lastModified", "revCount", "shallow", "allRefs", "dir"},
	"tarball":   {"type", "url", "narHash", "lastModified", "rev", "revCount"},
	"file":      {"type", "url", "narHash", "lastModified"},
	"path":      {"type", "path", "narHash", "lastModified", "rev", "revCount"},
}

var defaultHosts = map[string]string{"github": "github.com", "gitlab": "gitlab.com", "sourcehut": "git.sr.ht"}

// Lengths are checked apart from these: a counted repetition compiles to a
// large program in every process's init.
var (
	revRe       = lazyre.New(`^[0-9a-f]{40}$`)
	ownerRepoRe = lazyre.New(`^[A-Za-z0-9][A-Za-z0-9._~-]*$`)
	hostRe      = lazyre.New(`^[A-Za-z0-9.-]+$`)
	refRe       = lazyre.New(`^[A-Za-z0-9._/-]+$`)
)

type lockFile struct {
	Nodes   map[string]lockNode `json:"nodes"`
	Root    string              `json:"root"`
	Version int                 `json:"version"`
}

type lockNode struct {
	Inputs map[string]json.RawMessage `json:"inputs"`
	Locked map[string]any             `json:"locked"`
}

// refuseLock makes a client-facing reason; name is the client's own node
// name, quoted and shortened. Reasons never contain a hash or file content.
func refuseLock(name, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if name != "" {
		msg = "input " + quoteName(name) + ": " + msg
	}
	return fmt.Errorf("%w: %s", ErrLock, msg)
}

func quoteName(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return fmt.Sprintf("%q", s)
}

// ParseLock reads and checks a flake.lock (versions 5 to 7). Accepted:
// github, gitlab, sourcehut, git over https and tarball/file over https,
// each locked (narHash; a rev for the git kinds); path inputs of the root
// flake that stay inside the project. Refused: indirect (registry), path
// outside the project, file:// and every other scheme, unlocked inputs,
// follows that lead nowhere, unknown types and attributes.
func ParseLock(data []byte) (*Lock, error) {
	if len(data) > maxLockBytes {
		return nil, refuseLock("", "larger than %d bytes", maxLockBytes)
	}
	var lf lockFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&lf); err != nil {
		return nil, refuseLock("", "not valid JSON")
	}
	if lf.Version < 5 || lf.Version > 7 {
		return nil, refuseLock("", "unsupported version %d (Nix 2.8 reads 5 to 7)", lf.Version)
	}
	if len(lf.Nodes) > maxLockNodes {
		return nil, refuseLock("", "more than %d nodes", maxLockNodes)
	}
	if lf.Root == "" {
		lf.Root = "root"
	}
	root, ok := lf.Nodes[lf.Root]
	if !ok {
		return nil, refuseLock("", "no root node")
	}
	if root.Locked != nil {
		return nil, refuseLock("", "the root node must not be locked")
	}
	// Every node's inputs must resolve: a name of an existing node, or a
	// follows path that leads to one.
	names := make([]string, 0, len(lf.Nodes))
	for n := range lf.Nodes {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		for in, raw := range lf.Nodes[n].Inputs {
			if _, err := lf.resolve(raw, 0); err != nil {
				return nil, refuseLock(n, "its input %s: %v", quoteName(in), err)
			}
		}
	}
	direct := map[string]bool{}
	for _, raw := range root.Inputs {
		var key string
		if json.Unmarshal(raw, &key) == nil {
			direct[key] = true
		}
	}
	l := &Lock{Remote: map[string]map[string]any{}}
	for _, n := range names {
		if n == lf.Root {
			continue
		}
		if err := l.addNode(n, lf.Nodes[n], direct[n]); err != nil {
			return nil, err
		}
	}
	inputs, err := FlakeInputs(data)
	if err != nil {
		return nil, refuseLock("", "%v", err)
	}
	l.Inputs = inputs
	sort.Slice(l.Paths, func(i, j int) bool { return l.Paths[i].Node < l.Paths[j].Node })
	sort.Strings(l.URLs)
	sort.Strings(l.InputURLs)
	return l, nil
}

// resolve follows an input reference (a node name, or a follows path from
// the root) to a node name.
func (lf *lockFile) resolve(raw json.RawMessage, depth int) (string, error) {
	if depth > maxFollowsLen {
		return "", errors.New("follows chain too long or circular")
	}
	var key string
	if json.Unmarshal(raw, &key) == nil {
		if _, ok := lf.Nodes[key]; !ok {
			return "", errors.New("names a node the lock does not have")
		}
		return key, nil
	}
	var follows []string
	if err := json.Unmarshal(raw, &follows); err != nil {
		return "", errors.New("neither a node name nor a follows path")
	}
	if len(follows) > maxFollowsLen {
		return "", errors.New("follows path too long")
	}
	cur := lf.Root
	for _, step := range follows {
		next, ok := lf.Nodes[cur].Inputs[step]
		if !ok {
			return "", errors.New("follows an input that does not exist")
		}
		var err error
		if cur, err = lf.resolve(next, depth+1); err != nil {
			return "", err
		}
	}
	return cur, nil
}

func (l *Lock) addNode(name string, n lockNode, direct bool) error {
	if n.Locked == nil {
		return refuseLock(name, "not locked")
	}
	typ, _ := n.Locked["type"].(string)
	allowed, ok := lockedAttrs[typ]
	switch {
	case typ == "indirect":
		return refuseLock(name, "indirect (flake registry) inputs are not allowed: lock it")
	case !ok:
		return refuseLock(name, "input type %s is not supported", quoteName(typ))
	}
	for k := range n.Locked {
		if !contains(allowed, k) {
			return refuseLock(name, "attribute %s is not allowed for %s inputs", quoteName(k), typ)
		}
	}
	str := func(k string) (string, error) {
		v, ok := n.Locked[k]
		if !ok {
			return "", nil
		}
		s, ok := v.(string)
		if !ok {
			return "", refuseLock(name, "attribute %s must be a string", k)
		}
		return s, nil
	}
	for k, v := range n.Locked {
		switch v.(type) {
		case string, json.Number, bool:
		default:
			return refuseLock(name, "attribute %s has an unsupported value", quoteName(k))
		}
	}
	narHash, err := str("narHash")
	if err != nil {
		return err
	}
	if narHash == "" {
		return refuseLock(name, "not locked (no narHash)")
	}
	if !validSRI(narHash) {
		return refuseLock(name, "narHash is not an SRI sha256 hash")
	}
	if dir, err := str("dir"); err != nil {
		return err
	} else if dir != "" && !cleanRelative(dir) {
		return refuseLock(name, "dir must be a relative path inside the input")
	}
	if ref, err := str("ref"); err != nil {
		return err
	} else if ref != "" && (len(ref) > 200 || !refRe.MatchString(ref) || strings.Contains(ref, "..")) {
		return refuseLock(name, "ref is not a plain branch or tag name")
	}
	switch typ {
	case "path":
		p, err := str("path")
		if err != nil {
			return err
		}
		switch {
		case p == "" || strings.HasPrefix(p, "/"):
			return refuseLock(name, "path inputs outside the project are not allowed (only relative paths such as ./sub)")
		case !cleanRelative(p):
			return refuseLock(name, "path input leaves the project")
		case !direct:
			return refuseLock(name, "relative path inputs are supported only as inputs of the root flake")
		}
		l.Paths = append(l.Paths, PathInput{Node: name, Path: path.Clean(p), NarHash: narHash})
		return nil
	case "github", "gitlab", "sourcehut":
		owner, _ := str("owner")
		repo, _ := str("repo")
		rev, err := str("rev")
		if err != nil {
			return err
		}
		if len(owner) > 100 || len(repo) > 100 || !ownerRepoRe.MatchString(owner) || !ownerRepoRe.MatchString(repo) {
			return refuseLock(name, "owner and repo must be plain names")
		}
		if !revRe.MatchString(rev) {
			return refuseLock(name, "not locked (no full commit rev)")
		}
		host, err := str("host")
		if err != nil {
			return err
		}
		if host == "" {
			host = defaultHosts[typ]
		}
		if len(host) > 253 || !hostRe.MatchString(host) {
			return refuseLock(name, "host is not a plain host name")
		}
		l.URLs = append(l.URLs, "https://"+host+"/")
	case "git":
		u, err := str("url")
		if err != nil {
			return err
		}
		rev, err := str("rev")
		if err != nil {
			return err
		}
		if !revRe.MatchString(rev) {
			return refuseLock(name, "not locked (no full commit rev)")
		}
		if err := httpsURL(u); err != nil {
			return refuseLock(name, "%v", err)
		}
		l.URLs = append(l.URLs, u)
		l.InputURLs = append(l.InputURLs, u)
	case "tarball", "file":
		u, err := str("url")
		if err != nil {
			return err
		}
		if err := httpsURL(u); err != nil {
			return refuseLock(name, "%v", err)
		}
		l.URLs = append(l.URLs, u)
		l.InputURLs = append(l.InputURLs, u)
	}
	attrs := make(map[string]any, len(n.Locked))
	for k, v := range n.Locked {
		if num, ok := v.(json.Number); ok {
			i, err := num.Int64()
			if err != nil || i < 0 {
				return refuseLock(name, "attribute %s must be a non-negative integer", quoteName(k))
			}
			v = i
		}
		attrs[k] = v
	}
	l.Remote[name] = attrs
	return nil
}

// httpsURL accepts only https:// URLs (no file://, git+file://, http://,
// ssh: every other transport either reads this machine or bypasses the
// repo_url policy). Hosts are checked against the address policy later.
func httpsURL(u string) error {
	if len(u) > 2048 {
		return errors.New("URL too long")
	}
	// Nor anything that could end a nix.conf value or line (the URL goes
	// into allowed-uris) or hide part of the URL from a reader.
	for _, c := range u {
		if c <= ' ' || c == 0x7f || c == '#' || c == '\\' || (c >= 0x80 && c <= 0x9f) {
			return errors.New("URL contains a space, control character, backslash or '#'")
		}
	}
	scheme, _, ok := strings.Cut(u, "://")
	if !ok {
		return errors.New("URL has no scheme (only https:// is allowed)")
	}
	if !strings.EqualFold(scheme, "https") {
		return fmt.Errorf("URL scheme %s is not allowed (only https://)", quoteName(scheme))
	}
	return nil
}

// cleanRelative reports whether p is a relative path that stays below its
// base: no absolute path, no "..", not the base itself.
func cleanRelative(p string) bool {
	if p == "" || strings.HasPrefix(p, "/") || strings.ContainsAny(p, "\x00\\") {
		return false
	}
	c := path.Clean(p)
	if c == "." || c == ".." || strings.HasPrefix(c, "../") {
		return false
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return false
		}
	}
	return true
}

// validSRI reports whether h is "sha256-" and the base64 of 32 bytes.
func validSRI(h string) bool {
	b64, ok := strings.CutPrefix(h, "sha256-")
	if !ok {
		return false
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	return err == nil && len(raw) == 32
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
