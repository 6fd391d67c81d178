package pnpm

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"path"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/kettle-build/kettle/provenance"
)

// ErrLockfile marks a pnpm-lock.yaml that cannot be used. Messages name the
// file and the package key, never a server path, so they can be shown to a
// client.
var ErrLockfile = errors.New("pnpm-lock.yaml")

// MaxLockfileSize bounds the lockfile kettle parses (the largest real ones
// are a few MiB).
const MaxLockfileSize = 64 << 20

// DigestKey is the digest name of every pnpm dependency: the peer writes
// "sha512" whatever the integrity's algorithm (the value keeps its SRI
// prefix, so "sha1-…" stays recognisable).
const DigestKey = "sha512"

type lockfile struct {
	LockfileVersion any                 `yaml:"lockfileVersion"`
	Packages        map[string]*pkgInfo `yaml:"packages"`
}

type pkgInfo struct {
	Resolution resolution `yaml:"resolution"`
}

type resolution struct {
	Integrity string `yaml:"integrity"`
	Tarball   string `yaml:"tarball"`
	Type      string `yaml:"type"` // "git", "directory"
	Repo      string `yaml:"repo"`
	Commit    string `yaml:"commit"`
	Directory string `yaml:"directory"`
}

// Lock is what kettle reads from pnpm-lock.yaml.
type Lock struct {
	Version string // lockfileVersion, e.g. "9.0"
	// Dependencies are the packages, in the peer's format, sorted by uri.
	Dependencies []provenance.Dependency
}

// ParseLock reads pnpm-lock.yaml (lockfile versions 6 and 9, as written by
// pnpm 8 to 10) the peer's way (reference §B.5): every key of the top-level
// packages mapping, its peer suffix "(…)" and v6's leading "/" removed, is
// split into name and version at the "@" after the name (the second one for
// a scoped name). A package resolved by integrity becomes
// pkg:npm/<name>@<version>?checksum=<integrity> with digest
// {"sha512": <integrity>}; a GitHub codeload tarball becomes its URL with
// the commit as digest. Anything else (git repositories, local
// directories, other tarballs without integrity) pins nothing kettle can
// check and is an error.
func ParseLock(data []byte) (*Lock, error) {
	if len(data) > MaxLockfileSize {
		return nil, fmt.Errorf("%w: larger than %d MiB", ErrLockfile, MaxLockfileSize>>20)
	}
	var lf lockfile
	if err := yaml.Unmarshal(data, &lf); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrLockfile, yamlMsg(err))
	}
	version, err := lockVersion(lf.LockfileVersion)
	if err != nil {
		return nil, err
	}
	deps := make([]provenance.Dependency, 0, len(lf.Packages))
	seen := map[string]bool{}
	for key, info := range lf.Packages {
		d, err := dependency(key, info)
		if err != nil {
			return nil, err
		}
		// v6 lists a package once per set of peers: one entry is enough.
		if id := d.URI + "\x00" + d.Digest[DigestKey]; !seen[id] {
			seen[id] = true
			deps = append(deps, d)
		}
	}
	sort.Slice(deps, func(i, j int) bool {
		if deps[i].URI != deps[j].URI {
			return deps[i].URI < deps[j].URI
		}
		return deps[i].Digest[DigestKey] < deps[j].Digest[DigestKey]
	})
	return &Lock{Version: version, Dependencies: deps}, nil
}

// lockVersion accepts the lockfile formats whose package keys kettle knows:
// "6.0"/"6.1" (pnpm 8) and "9.0" (pnpm 9 and 10).
func lockVersion(v any) (string, error) {
	var s string
	switch v := v.(type) {
	case nil:
		return "", fmt.Errorf("%w: no lockfileVersion", ErrLockfile)
	case string:
		s = v
	case int, float64:
		s = fmt.Sprint(v)
	default:
		return "", fmt.Errorf("%w: lockfileVersion is not a version", ErrLockfile)
	}
	major, _, _ := strings.Cut(s, ".")
	if major != "6" && major != "9" {
		return "", fmt.Errorf("%w: lockfileVersion %q is not supported (pnpm 8 or newer writes 6.x or 9.x): regenerate the lockfile with pnpm 9", ErrLockfile, clip(s))
	}
	return s, nil
}

func dependency(key string, info *pkgInfo) (provenance.Dependency, error) {
	name, version, err := splitKey(key)
	if err != nil {
		return provenance.Dependency{}, err
	}
	var r resolution
	if info != nil {
		r = info.Resolution
	}
	if r.Integrity != "" {
		if err := checkIntegrity(r.Integrity); err != nil {
			return provenance.Dependency{}, fmt.Errorf("%w: package %q: integrity %q: %v", ErrLockfile, clip(key), clip(r.Integrity), err)
		}
		return provenance.Dependency{
			Digest: provenance.Digest{DigestKey: r.Integrity},
			URI:    "pkg:npm/" + name + "@" + version + "?checksum=" + r.Integrity,
		}, nil
	}
	if strings.Contains(r.Tarball, "codeload.github.com") {
		commit, err := codeloadCommit(r.Tarball)
		if err != nil {
			return provenance.Dependency{}, fmt.Errorf("%w: package %q: tarball %q: %v", ErrLockfile, clip(key), clip(r.Tarball), err)
		}
		return provenance.Dependency{
			Digest: provenance.Digest{DigestKey: commit},
			URI:    r.Tarball,
		}, nil
	}
	what := ""
	switch {
	case r.Type != "":
		what = fmt.Sprintf(" (resolution type %q is not supported)", clip(r.Type))
	case r.Tarball != "":
		what = " (a tarball without integrity)"
	}
	return provenance.Dependency{}, fmt.Errorf("%w: package %q missing resolution with integrity or commit tarball%s", ErrLockfile, clip(key), what)
}

// splitKey turns "@scope/name@1.2.3(peer@1.0.0)" into "@scope/name",
// "1.2.3".
func splitKey(key string) (name, version string, err error) {
	k := key
	if i := strings.IndexByte(k, '('); i >= 0 {
		k = k[:i]
	}
	k = strings.TrimPrefix(k, "/") // lockfile v6: "/name@1.0.0"
	at := -1
	if strings.HasPrefix(k, "@") {
		if i := strings.IndexByte(k[1:], '@'); i >= 0 {
			at = i + 1
		}
	} else {
		at = strings.IndexByte(k, '@')
	}
	if at <= 0 || at == len(k)-1 {
		return "", "", fmt.Errorf("%w: package key %q is not <name>@<version>", ErrLockfile, clip(key))
	}
	name, version = k[:at], k[at+1:]
	if bad := strings.IndexFunc(key, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '?' || r == '#' }); bad >= 0 {
		return "", "", fmt.Errorf("%w: package key %q contains a space, control character, '?' or '#'", ErrLockfile, clip(key))
	}
	return name, version, nil
}

// sriSizes are the digest sizes of the integrity algorithms npm uses.
var sriSizes = map[string]int{"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}

// checkIntegrity accepts one Subresource Integrity string as pnpm writes it.
func checkIntegrity(s string) error {
	algo, b64, ok := strings.Cut(s, "-")
	size, known := sriSizes[algo]
	if !ok || !known {
		return errors.New("not <sha1|sha256|sha384|sha512>-<base64>")
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) != size {
		return fmt.Errorf("not a base64 %s digest", algo)
	}
	return nil
}

// codeloadCommit returns the commit of a GitHub codeload tarball URL
// (https://codeload.github.com/<owner>/<repo>/tar.gz/<40-hex commit>): the
// commit is all that pins such a dependency.
func codeloadCommit(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host != "codeload.github.com" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", errors.New("not an https://codeload.github.com/ URL")
	}
	commit := path.Base(u.Path)
	if len(commit) != 40 || strings.Trim(commit, "0123456789abcdef") != "" {
		return "", errors.New("does not end in a full commit hash")
	}
	return commit, nil
}

// yamlMsg keeps yaml's first error line (it names the line, nothing else).
func yamlMsg(err error) string {
	msg := err.Error()
	if te := new(yaml.TypeError); errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
		if len(te.Errors) > 1 {
			msg += fmt.Sprintf(" (and %d more)", len(te.Errors)-1)
		}
	}
	msg, _, _ = strings.Cut(msg, "\n")
	return clip(strings.TrimPrefix(msg, "yaml: "))
}

// clip bounds untrusted text quoted in an error.
func clip(s string) string {
	if len(s) > 100 {
		return s[:100] + "…"
	}
	return s
}
