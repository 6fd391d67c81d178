package gomod

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"

	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"

	"github.com/kettle-build/kettle/provenance"
)

// ErrGoSum marks a go.sum that cannot be used; its message names only the
// file and a line number, so it is safe to show a client.
var ErrGoSum = errors.New("go.sum")

// Sum is a parsed go.sum: the h1 hashes the lockfile pins.
type Sum struct {
	// Zips are the module content hashes ("<module> <version> h1:…"), the
	// dependencies of the build, sorted by module path then version.
	Zips []Hash
	// GoMods are the go.mod-only hashes ("<module> <version>/go.mod h1:…"):
	// go read those files to select versions; they are not built.
	GoMods []Hash
}

// Hash is one go.sum line.
type Hash struct {
	Path    string // module path
	Version string // module version (without "/go.mod")
	H1      string // base64 sha256 of the dirhash summary, without "h1:"
}

// ParseSum parses go.sum. Blank lines are ignored as go does; every other
// line must be "<module> <version>[/go.mod] h1:<base64 of 32 bytes>", and a
// module version may not be pinned to two different hashes.
func ParseSum(data []byte) (*Sum, error) {
	s := &Sum{}
	seen := map[string]string{} // "path version[/go.mod]" → h1
	for i, line := range bytes.Split(data, []byte("\n")) {
		n := i + 1
		text := strings.TrimSuffix(string(line), "\r")
		f := strings.Fields(text)
		if len(f) == 0 {
			continue
		}
		if len(f) != 3 {
			return nil, fmt.Errorf("%w:%d: want \"<module> <version> h1:<hash>\", have %d fields", ErrGoSum, n, len(f))
		}
		if !utf8.ValidString(text) {
			return nil, fmt.Errorf("%w:%d: not UTF-8", ErrGoSum, n)
		}
		path, version, hash := f[0], f[1], f[2]
		h1, ok := strings.CutPrefix(hash, "h1:")
		if !ok {
			// go itself only checks h1 and ignores other algorithms, but
			// an unknown hash would pin nothing kettle can check.
			return nil, fmt.Errorf("%w:%d: unsupported hash %q for %s (only h1: is known)", ErrGoSum, n, clip(hash), clip(path))
		}
		if raw, err := base64.StdEncoding.DecodeString(h1); err != nil || len(raw) != 32 {
			return nil, fmt.Errorf("%w:%d: malformed h1 hash for %s %s", ErrGoSum, n, clip(path), clip(version))
		}
		ver, isGoMod := strings.CutSuffix(version, "/go.mod")
		if err := checkModule(path, ver); err != nil {
			return nil, fmt.Errorf("%w:%d: %s %s: %v", ErrGoSum, n, clip(path), clip(version), err)
		}
		key := path + " " + version
		if prev, ok := seen[key]; ok {
			if prev != h1 {
				return nil, fmt.Errorf("%w:%d: %s %s is pinned to two different hashes", ErrGoSum, n, path, version)
			}
			continue
		}
		seen[key] = h1
		h := Hash{Path: path, Version: ver, H1: h1}
		if isGoMod {
			s.GoMods = append(s.GoMods, h)
		} else {
			s.Zips = append(s.Zips, h)
		}
	}
	less := func(a, b Hash) bool {
		if a.Path != b.Path {
			return a.Path < b.Path
		}
		return a.Version < b.Version
	}
	sort.Slice(s.Zips, func(i, j int) bool { return less(s.Zips[i], s.Zips[j]) })
	sort.Slice(s.GoMods, func(i, j int) bool { return less(s.GoMods[i], s.GoMods[j]) })
	return s, nil
}

// Lookup returns the pinned h1 of a module's content (goMod false) or of its
// go.mod file (goMod true).
func (s *Sum) Lookup(path, version string, goMod bool) (string, bool) {
	list := s.Zips
	if goMod {
		list = s.GoMods
	}
	i := sort.Search(len(list), func(i int) bool {
		h := list[i]
		return h.Path > path || h.Path == path && h.Version >= version
	})
	if i < len(list) && list[i].Path == path && list[i].Version == version {
		return list[i].H1, true
	}
	return "", false
}

// DigestKey is the digest algorithm name of a Go dependency in the
// provenance: the value is go.sum's h1 hash (base64, without "h1:").
const DigestKey = "h1"

// Dependencies are the module contents go.sum pins, as
// pkg:golang/<module>@<version> with digest {"h1": <base64>}, sorted by uri.
// go.mod-only lines are not dependencies: go read those files to choose
// versions but compiled nothing from them.
func (s *Sum) Dependencies() []provenance.Dependency {
	deps := make([]provenance.Dependency, 0, len(s.Zips))
	for _, z := range s.Zips {
		deps = append(deps, provenance.Dependency{
			Digest: provenance.Digest{DigestKey: z.H1},
			URI:    "pkg:golang/" + z.Path + "@" + z.Version,
		})
	}
	sort.SliceStable(deps, func(i, j int) bool { return deps[i].URI < deps[j].URI })
	return deps
}

// checkModule checks a go.sum line's module path and version with go's
// own rules (golang.org/x/mod/module.Check: a valid module path, a
// canonical semantic version matching its major version suffix), so a uri
// built from them stays a plain package URL.
func checkModule(path, version string) error {
	if err := module.CheckPath(path); err != nil {
		return errors.New("invalid module path")
	}
	if !semver.IsValid(version) || semver.Canonical(version) != version && semver.Canonical(version)+"+incompatible" != version {
		return errors.New("not a canonical semantic version")
	}
	if err := module.Check(path, version); err != nil {
		return errors.New("version does not match the module path's major version")
	}
	return nil
}

// clip bounds the untrusted text quoted in an error.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
