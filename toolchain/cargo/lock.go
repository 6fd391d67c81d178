package cargo

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/kettle-build/kettle/internal/lazyre"
	"github.com/kettle-build/kettle/provenance"
)

// ErrLockfile is wrapped by every Cargo.lock problem, so callers can tell a
// bad lockfile (the client's fault) from an I/O failure.
var ErrLockfile = errors.New("invalid Cargo.lock")

// Package is one [[package]] entry of Cargo.lock.
type Package struct {
	Name     string `toml:"name"`
	Version  string `toml:"version"`
	Source   string `toml:"source"`
	Checksum string `toml:"checksum"`
}

// Lockfile is the part of Cargo.lock that matters for provenance.
type Lockfile struct {
	Package []Package `toml:"package"`
	// Metadata holds the checksums of version-1 lockfiles:
	// "checksum <name> <version> (<source>)" = "<hex>".
	Metadata map[string]any `toml:"metadata"`
}

// ParseLock parses Cargo.lock bytes. Every error wraps ErrLockfile.
func ParseLock(data []byte) (*Lockfile, error) {
	var lf Lockfile
	if err := toml.Unmarshal(data, &lf); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return nil, fmt.Errorf("%w: line %d column %d: %s", ErrLockfile, row, col, de.String())
		}
		return nil, fmt.Errorf("%w: %v", ErrLockfile, err)
	}
	for i, p := range lf.Package {
		if p.Name == "" || p.Version == "" {
			return nil, fmt.Errorf("%w: package #%d has no name or version", ErrLockfile, i+1)
		}
		if p.Checksum == "" && p.Source != "" {
			key := fmt.Sprintf("checksum %s %s (%s)", p.Name, p.Version, p.Source)
			if v, ok := lf.Metadata[key].(string); ok && v != "<none>" {
				lf.Package[i].Checksum = v
			}
		}
	}
	return &lf, nil
}

var (
	hex64    = lazyre.New(`^[0-9a-f]{64}$`)
	gitHash  = lazyre.New(`^([0-9a-f]{40}|[0-9a-f]{64})$`)
	pctChars = strings.NewReplacer("?", "%3F", "#", "%23", "&", "%26", " ", "%20")
)

// Dependencies turns the lockfile's packages into resolvedDependencies,
// following the peer (reference §B.3): registry packages need a checksum,
// git packages a commit. A package cargo reads from a vendored directory
// (p.Vendored) and a path dependency inside the project that is not a
// workspace member are local code: uri "file:<dir>", digest the dirhash h1
// of the directory. Workspace members and the root package are the project
// itself (covered by the source digest) and skipped. With p nil (the
// lockfile alone), packages without a source are skipped. Sorted by uri.
func (lf *Lockfile) Dependencies(p *Project) ([]provenance.Dependency, error) {
	deps := make([]provenance.Dependency, 0, len(lf.Package))
	for _, pk := range lf.Package {
		id := pk.Name + "@" + pk.Version
		if p != nil {
			if v := p.Vendored[lockKey(pk)]; v != nil {
				deps = append(deps, provenance.Dependency{
					Digest: provenance.Digest{LocalDigestKey: v.H1},
					Name:   pk.Name,
					URI:    LocalURIPrefix + v.Dir,
				})
				continue
			}
		}
		if isFileURL(pk.Source) {
			return nil, fmt.Errorf("%w: cargo dependency %s comes from a local registry outside the project", ErrLockfile, id)
		}
		switch {
		case strings.HasPrefix(pk.Source, "registry+"), strings.HasPrefix(pk.Source, "sparse+"):
			if pk.Checksum == "" {
				return nil, fmt.Errorf("%w: cargo dependency %s from registry has no checksum", ErrLockfile, id)
			}
			if !hex64.MatchString(pk.Checksum) {
				if vendoredChecksum(pk.Checksum) {
					return nil, fmt.Errorf("%w: cargo dependency %s has no crate checksum (Cargo.lock says %q): the lockfile was written against a vendored registry without checksums, such as Debian's /usr/share/cargo/registry; regenerate it against crates.io (`cargo generate-lockfile` without that source replacement) and commit it",
						ErrLockfile, id, pk.Checksum)
				}
				return nil, fmt.Errorf("%w: cargo dependency %s has a malformed checksum (want 64 hex digits, the sha256 of the .crate)", ErrLockfile, id)
			}
			deps = append(deps, provenance.Dependency{
				Digest: provenance.Digest{"sha256": pk.Checksum},
				Name:   pk.Name,
				URI:    "pkg:cargo/" + id + "?checksum=sha256:" + pk.Checksum,
			})
		case strings.HasPrefix(pk.Source, "git+"):
			i := strings.LastIndexByte(pk.Source, '#')
			if i < 0 {
				return nil, fmt.Errorf("%w: cargo dependency %s from git has no commit", ErrLockfile, id)
			}
			url, commit := pk.Source[len("git+"):i], pk.Source[i+1:]
			if !gitHash.MatchString(commit) {
				return nil, fmt.Errorf("%w: cargo dependency %s from git has a malformed commit", ErrLockfile, id)
			}
			deps = append(deps, provenance.Dependency{
				Digest: provenance.Digest{"gitCommit": commit},
				Name:   pk.Name,
				URI:    "pkg:cargo/" + id + "?vcs_url=git+" + pctChars.Replace(url) + "@" + commit,
			})
		case pk.Source == "":
			if p == nil {
				continue
			}
			info, ok := p.find(pk.Name, pk.Version)
			if !ok {
				return nil, fmt.Errorf("%w: package %s has no source, and more than one directory of the project holds a package of that name and version", ErrLockfile, id)
			}
			if info == nil {
				return nil, fmt.Errorf("%w: package %s has no source, and no manifest of the project (root, workspace members, path dependencies) declares it", ErrLockfile, id)
			}
			if info.Own {
				continue // the project itself
			}
			deps = append(deps, provenance.Dependency{
				Digest: provenance.Digest{LocalDigestKey: p.local[info.Dir]},
				Name:   pk.Name,
				URI:    LocalURIPrefix + info.Dir,
			})
		default:
			return nil, fmt.Errorf("%w: cargo dependency %s has unrecognized source", ErrLockfile, id)
		}
	}
	sort.SliceStable(deps, func(i, j int) bool { return deps[i].URI < deps[j].URI })
	return deps, nil
}

// vendoredChecksum reports a checksum field that is a note rather than a
// digest: cargo writes one for crates of a directory registry whose
// .cargo-checksum.json has no package checksum (Debian's vendored crates).
func vendoredChecksum(v string) bool {
	l := strings.ToLower(v)
	return len(v) <= 80 && (strings.Contains(l, "could not get crate checksum") || l == "<none>")
}
