package cargo

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/pelletier/go-toml/v2"

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
	hex64    = regexp.MustCompile(`^[0-9a-f]{64}$`)
	gitHash  = regexp.MustCompile(`^([0-9a-f]{40}|[0-9a-f]{64})$`)
	pctChars = strings.NewReplacer("?", "%3F", "#", "%23", "&", "%26", " ", "%20")
)

// LocalPackage is a package without a source in Cargo.lock that lives
// outside the project (a path dependency), resolved by ReadManifests.
type LocalPackage struct {
	Dir string // absolute, symlinks resolved
	Rel string // Dir relative to the project directory, slash-separated
}

// gitHead returns the HEAD commit of the git work tree at dir, or an error
// when dir is not a clean git work tree.
func gitHead(dir string) (string, error) {
	git := func(args ...string) (string, error) {
		// The checkout is not kettle's: no config of it may run programs.
		cmd := exec.Command("git", append([]string{"-C", dir, "-c", "core.fsmonitor=false", "-c", "core.untrackedCache=false"}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_OPTIONAL_LOCKS=0")
		out, err := cmd.Output()
		return strings.TrimSpace(string(out)), err
	}
	if _, err := git("rev-parse", "--show-toplevel"); err != nil {
		return "", errors.New("not in a git repository")
	}
	st, err := git("status", "--porcelain")
	if err != nil {
		return "", errors.New("git status failed")
	}
	if st != "" {
		return "", errors.New("git work tree has uncommitted changes")
	}
	return git("rev-parse", "HEAD")
}

// Dependencies turns the lockfile's packages into resolvedDependencies,
// following the peer (reference §B.3): registry packages need a checksum,
// git packages a commit; packages without a source are workspace members
// (skipped) unless local names them as path dependencies outside the
// project, which must be clean git work trees. Sorted by uri.
func (lf *Lockfile) Dependencies(local map[string]LocalPackage) ([]provenance.Dependency, error) {
	deps := make([]provenance.Dependency, 0, len(lf.Package))
	for _, p := range lf.Package {
		id := p.Name + "@" + p.Version
		switch {
		case strings.HasPrefix(p.Source, "registry+"), strings.HasPrefix(p.Source, "sparse+"):
			if p.Checksum == "" {
				return nil, fmt.Errorf("%w: cargo dependency %s from registry has no checksum", ErrLockfile, id)
			}
			if !hex64.MatchString(p.Checksum) {
				return nil, fmt.Errorf("%w: cargo dependency %s has a malformed checksum", ErrLockfile, id)
			}
			deps = append(deps, provenance.Dependency{
				Digest: provenance.Digest{"sha256": p.Checksum},
				Name:   p.Name,
				URI:    "pkg:cargo/" + id + "?checksum=sha256:" + p.Checksum,
			})
		case strings.HasPrefix(p.Source, "git+"):
			i := strings.LastIndexByte(p.Source, '#')
			if i < 0 {
				return nil, fmt.Errorf("%w: cargo dependency %s from git has no commit", ErrLockfile, id)
			}
			url, commit := p.Source[len("git+"):i], p.Source[i+1:]
			if !gitHash.MatchString(commit) {
				return nil, fmt.Errorf("%w: cargo dependency %s from git has a malformed commit", ErrLockfile, id)
			}
			deps = append(deps, provenance.Dependency{
				Digest: provenance.Digest{"gitCommit": commit},
				Name:   p.Name,
				URI:    "pkg:cargo/" + id + "?vcs_url=git+" + pctChars.Replace(url) + "@" + commit,
			})
		case p.Source == "":
			lp, ok := local[p.Name+" "+p.Version]
			if !ok {
				lp, ok = local[p.Name+" *"]
			}
			if !ok {
				continue // a workspace member or a path dependency inside the project
			}
			commit, err := gitHead(lp.Dir)
			if err != nil {
				return nil, fmt.Errorf("%w: path dependency %s at %s: %v (it must be a clean git checkout to be recorded)", ErrLockfile, id, lp.Rel, err)
			}
			deps = append(deps, provenance.Dependency{
				Digest: provenance.Digest{"gitCommit": commit},
				Name:   p.Name,
				URI:    "pkg:cargo/" + id + "?vcs_url=git+file:" + pctChars.Replace(lp.Rel) + "@" + commit,
			})
		default:
			return nil, fmt.Errorf("%w: cargo dependency %s has unrecognized source", ErrLockfile, id)
		}
	}
	sort.SliceStable(deps, func(i, j int) bool { return deps[i].URI < deps[j].URI })
	return deps, nil
}

// manifest is the part of a Cargo.toml that names packages and path
// dependencies. Dependency tables are kept generic: they appear under
// many keys (dependencies, dev-, build-, target.*, workspace, patch.*).
type manifest struct {
	Package   *struct{ Name, Version any } `toml:"package"`
	Workspace *struct {
		Members      []string       `toml:"members"`
		Exclude      []string       `toml:"exclude"`
		Dependencies map[string]any `toml:"dependencies"`
	} `toml:"workspace"`
	Dependencies      map[string]any            `toml:"dependencies"`
	DevDependencies   map[string]any            `toml:"dev-dependencies"`
	BuildDependencies map[string]any            `toml:"build-dependencies"`
	Target            map[string]map[string]any `toml:"target"`
	Patch             map[string]map[string]any `toml:"patch"`
	Replace           map[string]any            `toml:"replace"`
}

// maxManifests bounds how many Cargo.toml files one build may make kettle
// read (members plus transitive path dependencies).
const maxManifests = 10000

// ReadManifests finds the path dependencies of the project in dir that live
// outside it: it reads the root Cargo.toml, the workspace members, and
// (transitively) the manifests of path dependencies. The map key is
// "<name> <version>" as in Cargo.lock.
func ReadManifests(dir string) (map[string]LocalPackage, error) {
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, err
	}
	r := &reader{root: root, seen: map[string]bool{}, out: map[string]LocalPackage{}}
	if err := r.visit(root); err != nil {
		return nil, err
	}
	return r.out, nil
}

type reader struct {
	root string
	seen map[string]bool
	out  map[string]LocalPackage
}

func (r *reader) inside(p string) bool {
	rel, err := filepath.Rel(r.root, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

func (r *reader) rel(p string) string {
	rel, err := filepath.Rel(r.root, p)
	if err != nil {
		return filepath.Base(p)
	}
	return filepath.ToSlash(rel)
}

// visit reads the manifest of the package (or workspace) at dir.
func (r *reader) visit(dir string) error {
	if r.seen[dir] {
		return nil
	}
	r.seen[dir] = true
	if len(r.seen) > maxManifests {
		return fmt.Errorf("%w: more than %d manifests", ErrLockfile, maxManifests)
	}
	data, err := os.ReadFile(filepath.Join(dir, "Cargo.toml"))
	if err != nil {
		if dir == r.root {
			return fmt.Errorf("%w: read Cargo.toml: %v", ErrLockfile, errors.Unwrap(err))
		}
		return fmt.Errorf("%w: path dependency %s has no readable Cargo.toml", ErrLockfile, r.rel(dir))
	}
	var m manifest
	if err := toml.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("%w: %s/Cargo.toml: %v", ErrLockfile, r.rel(dir), err)
	}
	if m.Package != nil && !r.inside(dir) {
		name, _ := m.Package.Name.(string)
		// An inherited version (version.workspace = true) belongs to the
		// dependency's own workspace, which kettle does not resolve: such
		// a package matches Cargo.lock by name alone ("*").
		version := "0.0.0" // cargo's default when the manifest omits it
		switch v := m.Package.Version.(type) {
		case string:
			version = v
		case map[string]any:
			version = "*"
		}
		if name != "" {
			r.out[name+" "+version] = LocalPackage{Dir: dir, Rel: r.rel(dir)}
		}
	}
	var paths []string
	collect := func(tbl map[string]any) {
		for _, v := range tbl {
			if spec, ok := v.(map[string]any); ok {
				if p, ok := spec["path"].(string); ok {
					paths = append(paths, p)
				}
			}
		}
	}
	collect(m.Dependencies)
	collect(m.DevDependencies)
	collect(m.BuildDependencies)
	collect(m.Replace)
	for _, t := range m.Target {
		for _, k := range []string{"dependencies", "dev-dependencies", "build-dependencies"} {
			if tbl, ok := t[k].(map[string]any); ok {
				collect(tbl)
			}
		}
	}
	for _, tbl := range m.Patch {
		collect(tbl)
	}
	if m.Workspace != nil {
		collect(m.Workspace.Dependencies)
		for _, pat := range m.Workspace.Members {
			matches, err := filepath.Glob(filepath.Join(dir, filepath.FromSlash(pat)))
			if err != nil {
				return fmt.Errorf("%w: workspace member pattern %q: %v", ErrLockfile, pat, err)
			}
			for _, mdir := range matches {
				if excluded(dir, mdir, m.Workspace.Exclude) {
					continue
				}
				if fi, err := os.Stat(filepath.Join(mdir, "Cargo.toml")); err != nil || !fi.Mode().IsRegular() {
					continue
				}
				if err := r.visitPath(mdir); err != nil {
					return err
				}
			}
		}
	}
	sort.Strings(paths)
	for _, p := range paths {
		if err := r.visitPath(filepath.Join(dir, filepath.FromSlash(p))); err != nil {
			return err
		}
	}
	return nil
}

func (r *reader) visitPath(p string) error {
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return fmt.Errorf("%w: path dependency %s does not exist", ErrLockfile, r.rel(filepath.Clean(p)))
	}
	return r.visit(real)
}

func excluded(ws, member string, exclude []string) bool {
	for _, e := range exclude {
		if filepath.Clean(filepath.Join(ws, e)) == filepath.Clean(member) {
			return true
		}
	}
	return false
}
