package pnpm

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
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
	LockfileVersion     any                  `yaml:"lockfileVersion"`
	Packages            map[string]*pkgInfo  `yaml:"packages"`
	Importers           map[string]*importer `yaml:"importers"`
	PatchedDependencies map[string]yaml.Node `yaml:"patchedDependencies"`
	// A v6 lockfile of a single project has its importer at the top.
	importer `yaml:",inline"`
}

type pkgInfo struct {
	Resolution resolution `yaml:"resolution"`
	Name       string     `yaml:"name"` // v6 keys of local packages ("file:dir") carry no name
}

// importer is one project of the lockfile: its direct dependencies.
type importer struct {
	Dependencies         map[string]depRef `yaml:"dependencies"`
	DevDependencies      map[string]depRef `yaml:"devDependencies"`
	OptionalDependencies map[string]depRef `yaml:"optionalDependencies"`
}

type depRef struct {
	Specifier string `yaml:"specifier"`
	Version   string `yaml:"version"`
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
	// Local are the inputs that are files of the project rather than
	// registry packages: file:/link: packages, workspace members, local
	// tarballs and patch files. Their paths are checked (by their text) to
	// stay inside the project; the driver hashes them.
	Local []LocalRef
	// Registry are the packages fetched from the configured registry:
	// resolved by integrity alone (no tarball URL), once per integrity and
	// name@version, sorted. Their integrity keys the shared dependency
	// cache.
	Registry []RegistryPackage
	// OtherRemote counts the remote packages that are not Registry ones
	// (tarball URLs, codeload tarballs): the fetch needs the network for
	// them whatever the cache holds.
	OtherRemote int
}

// RegistryPackage is a registry package as the lockfile pins it.
type RegistryPackage struct{ Name, Version, Integrity string }

// LocalRef is a project file or directory that goes into the build.
type LocalRef struct {
	Kind LocalKind
	Name string // the package (or, for a patch, the patched package) it stands for
	Path string // slash-separated, cleaned, relative to the project root
	// Integrity is a local tarball's integrity as the lockfile pins it.
	Integrity string
}

// LocalKind says what a LocalRef is.
type LocalKind string

// The kinds of local inputs.
const (
	LocalDir       LocalKind = "directory" // file:<dir> package
	LocalLink      LocalKind = "link"      // link:<dir> dependency
	LocalWorkspace LocalKind = "workspace" // a workspace member (importer)
	LocalTarball   LocalKind = "tarball"   // file:<x.tgz> package
	LocalPatch     LocalKind = "patch"     // patchedDependencies file
)

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
	lock := &Lock{Version: version}
	for key, info := range lf.Packages {
		d, local, err := dependency(key, info)
		if err != nil {
			return nil, err
		}
		if local != nil {
			lock.Local = append(lock.Local, *local)
			continue
		}
		// v6 lists a package once per set of peers: one entry is enough.
		if id := d.URI + "\x00" + d.Digest[DigestKey]; !seen[id] {
			seen[id] = true
			deps = append(deps, d)
			if info != nil && info.Resolution.Tarball == "" && info.Resolution.Integrity != "" {
				name, version, _ := splitKey(key)
				lock.Registry = append(lock.Registry, RegistryPackage{Name: name, Version: version, Integrity: info.Resolution.Integrity})
			} else {
				lock.OtherRemote++
			}
		}
	}
	sort.Slice(deps, func(i, j int) bool {
		if deps[i].URI != deps[j].URI {
			return deps[i].URI < deps[j].URI
		}
		return deps[i].Digest[DigestKey] < deps[j].Digest[DigestKey]
	})
	lock.Dependencies = deps
	sort.Slice(lock.Registry, func(i, j int) bool {
		a, b := lock.Registry[i], lock.Registry[j]
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return a.Version < b.Version
	})
	importers := lf.Importers
	if len(importers) == 0 {
		importers = map[string]*importer{".": &lf.importer}
	}
	for dir, imp := range importers {
		refs, err := importerRefs(dir, imp)
		if err != nil {
			return nil, err
		}
		lock.Local = append(lock.Local, refs...)
	}
	for key, n := range lf.PatchedDependencies {
		ref, err := patchRef(key, &n)
		if err != nil {
			return nil, err
		}
		if ref != nil {
			lock.Local = append(lock.Local, *ref)
		}
	}
	lock.Local = dedupLocal(lock.Local)
	return lock, nil
}

// importerRefs are the local inputs an importer names: the importer itself
// when it is a workspace member, and its link: dependencies (relative to
// the importer's directory).
func importerRefs(dir string, imp *importer) ([]LocalRef, error) {
	clean, err := insidePath(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: importer %q: %v", ErrLockfile, clip(dir), err)
	}
	var refs []LocalRef
	if clean != "." {
		refs = append(refs, LocalRef{Kind: LocalWorkspace, Name: clean, Path: clean})
	}
	if imp == nil {
		return refs, nil
	}
	for _, m := range []map[string]depRef{imp.Dependencies, imp.DevDependencies, imp.OptionalDependencies} {
		for name, d := range m {
			target, ok := strings.CutPrefix(d.Version, "link:")
			if !ok {
				continue
			}
			p, err := insidePath(path.Join(clean, target))
			if err != nil {
				return nil, fmt.Errorf("%w: importer %q: dependency %q links to %s: %v", ErrLockfile, clip(dir), clip(name), quotePath(target), err)
			}
			refs = append(refs, LocalRef{Kind: LocalLink, Name: name, Path: p})
		}
	}
	return refs, nil
}

// patchRef reads one patchedDependencies entry: {hash, path} (pnpm 8 and
// 9) or just the hash (pnpm 10, whose path is in package.json or
// pnpm-workspace.yaml: see PatchFiles).
func patchRef(key string, n *yaml.Node) (*LocalRef, error) {
	if n.Kind == yaml.ScalarNode {
		return nil, nil
	}
	var v struct {
		Path string `yaml:"path"`
	}
	if err := n.Decode(&v); err != nil || v.Path == "" {
		return nil, fmt.Errorf("%w: patchedDependencies %q: no path", ErrLockfile, clip(key))
	}
	p, err := insidePath(v.Path)
	if err != nil {
		return nil, fmt.Errorf("%w: patchedDependencies %q: patch %s: %v", ErrLockfile, clip(key), quotePath(v.Path), err)
	}
	return &LocalRef{Kind: LocalPatch, Name: key, Path: p}, nil
}

func dedupLocal(refs []LocalRef) []LocalRef {
	sort.Slice(refs, func(i, j int) bool {
		if refs[i].Path != refs[j].Path {
			return refs[i].Path < refs[j].Path
		}
		if refs[i].Kind != refs[j].Kind {
			return refs[i].Kind < refs[j].Kind
		}
		return refs[i].Name < refs[j].Name
	})
	out := refs[:0]
	for i, r := range refs {
		// One directory is one input, however many importers link it.
		if i > 0 && out[len(out)-1].Path == r.Path && r.Kind != LocalPatch && r.Kind != LocalTarball &&
			out[len(out)-1].Kind != LocalPatch && out[len(out)-1].Kind != LocalTarball {
			continue
		}
		out = append(out, r)
	}
	return out
}

// errOutside is the reason of every refusal of a path leaving the project.
var errOutside = errors.New("outside the project (only files inside the project can be local packages)")

// insidePath checks by its text that a path of the lockfile stays inside
// the project, and returns it cleaned (the driver then resolves it
// through the project root, so a symlink cannot lead out either).
func insidePath(p string) (string, error) {
	if p == "" || strings.HasPrefix(p, "/") || strings.ContainsAny(p, "\\\x00") || len(p) >= 2 && p[1] == ':' || strings.HasPrefix(p, "~") {
		return "", errOutside
	}
	c := path.Clean(p)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", errOutside
	}
	return c, nil
}

// quotePath quotes a relative path of the lockfile; an absolute one is
// not repeated (it would name something on the server).
func quotePath(p string) string {
	if strings.HasPrefix(p, "/") || strings.HasPrefix(p, "~") || len(p) >= 2 && p[1] == ':' {
		return "an absolute path"
	}
	return fmt.Sprintf("%q", clip(p))
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

func dependency(key string, info *pkgInfo) (provenance.Dependency, *LocalRef, error) {
	var r resolution
	if info != nil {
		r = info.Resolution
	}
	// Local packages: "name@file:dir" (v9) or "file:dir" (v6, name in
	// the entry), resolved as a directory or as a file: tarball.
	if r.Type == "directory" || strings.HasPrefix(r.Tarball, "file:") {
		name := ""
		if n, _, err := splitKey(key); err == nil {
			name = n
		} else if info != nil && info.Name != "" {
			name = info.Name
		}
		if name == "" {
			name = strings.TrimPrefix(key, "/")
		}
		if r.Type == "directory" {
			p, err := insidePath(r.Directory)
			if err != nil {
				return provenance.Dependency{}, nil, fmt.Errorf("%w: package %q: directory %s: %v", ErrLockfile, clip(key), quotePath(r.Directory), err)
			}
			return provenance.Dependency{}, &LocalRef{Kind: LocalDir, Name: name, Path: p}, nil
		}
		file := strings.TrimPrefix(r.Tarball, "file:")
		p, err := insidePath(file)
		if err != nil {
			return provenance.Dependency{}, nil, fmt.Errorf("%w: package %q: tarball %s: %v", ErrLockfile, clip(key), quotePath(file), err)
		}
		if r.Integrity != "" {
			if err := checkIntegrity(r.Integrity); err != nil {
				return provenance.Dependency{}, nil, fmt.Errorf("%w: package %q: integrity %q: %v", ErrLockfile, clip(key), clip(r.Integrity), err)
			}
		}
		return provenance.Dependency{}, &LocalRef{Kind: LocalTarball, Name: name, Path: p, Integrity: r.Integrity}, nil
	}
	name, version, err := splitKey(key)
	if err != nil {
		return provenance.Dependency{}, nil, err
	}
	if r.Tarball != "" && !strings.HasPrefix(r.Tarball, "https://") {
		// Registry tarballs come over https only; the fetch's egress
		// proxy applies the address policy to the host.
		return provenance.Dependency{}, nil, fmt.Errorf("%w: package %q: tarball %q is not an https:// URL", ErrLockfile, clip(key), clip(r.Tarball))
	}
	if r.Integrity != "" {
		if err := checkIntegrity(r.Integrity); err != nil {
			return provenance.Dependency{}, nil, fmt.Errorf("%w: package %q: integrity %q: %v", ErrLockfile, clip(key), clip(r.Integrity), err)
		}
		return provenance.Dependency{
			Digest: provenance.Digest{DigestKey: r.Integrity},
			URI:    "pkg:npm/" + name + "@" + version + "?checksum=" + r.Integrity,
		}, nil, nil
	}
	if strings.Contains(r.Tarball, "codeload.github.com") {
		commit, err := codeloadCommit(r.Tarball)
		if err != nil {
			return provenance.Dependency{}, nil, fmt.Errorf("%w: package %q: tarball %q: %v", ErrLockfile, clip(key), clip(r.Tarball), err)
		}
		return provenance.Dependency{
			Digest: provenance.Digest{DigestKey: commit},
			URI:    r.Tarball,
		}, nil, nil
	}
	what := ""
	switch {
	case r.Type != "":
		what = fmt.Sprintf(" (resolution type %q is not supported: git dependencies must be GitHub codeload tarballs pinned by commit)", clip(r.Type))
	case r.Tarball != "":
		what = " (a tarball without integrity)"
	}
	return provenance.Dependency{}, nil, fmt.Errorf("%w: package %q missing resolution with integrity or commit tarball%s", ErrLockfile, clip(key), what)
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

// sriHash is the hash of a Subresource Integrity algorithm name as
// pnpm-lock.yaml writes it ("sha512-…"), nil for one it does not know.
func sriHash(algo string) hash.Hash {
	switch algo {
	case "sha1":
		return sha1.New()
	case "sha256":
		return sha256.New()
	case "sha384":
		return sha512.New384()
	case "sha512":
		return sha512.New()
	}
	return nil
}
