package cargo

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"syscall"

	"github.com/kettle-build/kettle/toolchain"
	"github.com/pelletier/go-toml/v2"
)

// ErrProject is wrapped by every refusal of what the project's manifests or
// cargo configuration say (the client's fault). Messages name only
// project-relative paths and strings the client wrote, never what kettle
// found on disk outside the project.
var ErrProject = errors.New("invalid Cargo project")

// Bounds on what one project may make the trusted process read.
const (
	maxManifests     = 10000
	maxManifestBytes = 4 << 20
	maxGlobMatches   = 10000
)

// pkgInfo is a package of the project found through its manifests.
type pkgInfo struct {
	Dir     string // slash path relative to the project root ("." for the root)
	Name    string
	Version string // "*" when it cannot be known (inherited from another workspace)
	Own     bool   // the root package or a workspace member: the project's own code
	// Local is true when a path dependency, [patch] or [replace] names it.
	Local bool
}

// Project is what kettle reads of a Cargo project with its own Go code,
// through os.Root of the project directory: the manifests of the root, of
// the workspace members and of the path dependencies, Cargo.lock, and the
// project's .cargo/config.toml. Nothing it names may lie outside the
// project.
type Project struct {
	Lock     *Lockfile
	LockData []byte
	Config   *Config
	// Packages by directory.
	Packages map[string]*pkgInfo
	// manifests holds the bytes of every Cargo.toml read, by directory,
	// for the fetch copy (the exact bytes that were checked).
	manifests map[string][]byte
	// stubs are the target source files (relative paths) that cargo looks
	// for when it loads the manifests; the fetch copy has empty ones.
	stubs map[string]bool
	// Vendored maps a Cargo.lock package key to its checked vendored copy.
	Vendored map[string]*Vendored
	// local is the tree digest of each local package directory (path
	// dependencies that are not the project's own).
	local map[string]string
}

// find returns the package of the project named name at version (a
// package whose version is unknown matches any); ok is false when two
// directories match, so kettle cannot tell which one cargo builds.
func (p *Project) find(name, version string) (pk *pkgInfo, ok bool) {
	var exact, any []*pkgInfo
	for _, d := range sortedKeys(p.Packages) {
		c := p.Packages[d]
		switch {
		case c.Name != name:
		case c.Version == version:
			exact = append(exact, c)
		case c.Version == "*":
			any = append(any, c)
		}
	}
	switch {
	case len(exact) == 1:
		return exact[0], true
	case len(exact) > 1:
		return nil, false
	case len(any) == 1:
		return any[0], true
	case len(any) > 1:
		return nil, false
	}
	return nil, true
}

// refuse builds a client-facing refusal.
func refuse(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProject, fmt.Sprintf(format, args...))
}

// clip bounds a client string quoted in an error.
func clip(s string) string {
	if len(s) > 120 {
		s = s[:120] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}

// openRegular is toolchain.OpenRegular: no open blocks on a FIFO.
var openRegular = toolchain.OpenRegular

// readFile is toolchain.ReadFile: a bounded read of a regular file
// through root.
var readFile = toolchain.ReadFile

// inside resolves the path p written in a file of directory base (both
// slash-separated, base relative to the project root) the way cargo does
// (lexically), and refuses it when it is absolute or leaves the project, or
// when a symlink on it leads out. what names the key for the message.
func inside(root *os.Root, base, p, what string) (string, error) {
	if p == "" {
		return "", refuse("%s is an empty path", what)
	}
	if strings.ContainsRune(p, 0) {
		return "", refuse("%s contains a NUL byte", what)
	}
	if path.IsAbs(p) {
		return "", refuse("%s %q is an absolute path: only paths inside the project are allowed", what, clip(p))
	}
	q := path.Clean(path.Join(base, p))
	if q == ".." || strings.HasPrefix(q, "../") {
		return "", refuse("%s %q leaves the project: only paths inside the project are allowed", what, clip(p))
	}
	if _, err := root.Stat(q); err != nil && !errors.Is(err, fs.ErrNotExist) {
		// os.Root refuses a symlink that leads out; say so without
		// saying where it leads.
		return "", refuse("%s %q cannot be resolved inside the project (a symlink leading out of it?)", what, clip(p))
	}
	return q, nil
}

// ReadProject reads and checks the Cargo project in dir whose Cargo.lock
// is lockData (toolchain.ReadLock's bytes). Every refusal wraps ErrProject
// or ErrLockfile and is safe to show the client.
func ReadProject(dir string, lockData []byte) (*Project, error) {
	if lockData == nil {
		return nil, fmt.Errorf("%w: cannot read Cargo.lock", ErrLockfile)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	lf, err := ParseLock(lockData)
	if err != nil {
		return nil, err
	}
	p := &Project{Lock: lf, LockData: lockData, Packages: map[string]*pkgInfo{}, manifests: map[string][]byte{}, stubs: map[string]bool{}}
	if p.Config, err = ReadConfig(root); err != nil {
		return nil, err
	}
	if err := p.readManifests(root); err != nil {
		return nil, err
	}
	if p.Vendored, err = p.checkVendored(root); err != nil {
		return nil, err
	}
	p.local = map[string]string{}
	for _, d := range sortedKeys(p.Packages) {
		if pk := p.Packages[d]; pk.Local && !pk.Own {
			h, err := TreeH1(root, d)
			if err != nil {
				return nil, refuse("path dependency %s cannot be hashed: %v", clip(d), err)
			}
			p.local[d] = h
		}
	}
	return p, nil
}

// manifest reads the Cargo.toml of directory d.
func (p *Project) manifest(root *os.Root, d string) (map[string]any, error) {
	rel := path.Join(d, "Cargo.toml")
	data, err := readFile(root, rel, maxManifestBytes)
	if err != nil {
		if d == "." {
			return nil, refuse("cannot read Cargo.toml")
		}
		return nil, refuse("%s cannot be read inside the project", rel)
	}
	var m map[string]any
	if err := toml.Unmarshal(data, &m); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return nil, refuse("%s: line %d column %d: %s", rel, row, col, clip(de.String()))
		}
		return nil, refuse("%s is not valid TOML", rel)
	}
	p.manifests[d] = data
	return m, nil
}

func table(v any) map[string]any {
	t, _ := v.(map[string]any)
	return t
}

func str(v any) (string, bool) {
	s, ok := v.(string)
	return s, ok
}

// depTables are the keys of a manifest (and of a [target.*] table) that
// hold dependencies; the underscore forms are accepted by cargo before
// edition 2024.
var depTables = []string{"dependencies", "dev-dependencies", "dev_dependencies", "build-dependencies", "build_dependencies"}

// readManifests walks the root manifest, the workspace members and every
// path dependency, [patch] and [replace] path, refusing any path that leaves
// the project.
func (p *Project) readManifests(root *os.Root) error {
	rootM, err := p.manifest(root, ".")
	if err != nil {
		return err
	}
	var wsVersion any
	ws := table(rootM["workspace"])
	if ws != nil {
		wsVersion = table(ws["package"])["version"]
	}
	type item struct {
		dir   string
		own   bool
		local bool
	}
	queue := []item{{dir: ".", own: true}}
	if ws != nil {
		// workspace.exclude removes glob matches at or below its paths.
		var exclude []string
		if list, ok := ws["exclude"].([]any); ok {
			for _, v := range list {
				if s, ok := str(v); ok {
					q, err := inside(root, ".", s, "workspace.exclude entry")
					if err != nil {
						return err
					}
					exclude = append(exclude, q)
				}
			}
		}
		excluded := func(d string) bool {
			for _, e := range exclude {
				if d == e || strings.HasPrefix(d, e+"/") || e == "." {
					return true
				}
			}
			return false
		}
		for _, key := range []string{"members", "default-members"} {
			list, _ := ws[key].([]any)
			for _, v := range list {
				pat, ok := str(v)
				if !ok {
					return refuse("workspace.%s must be a list of strings", key)
				}
				dirs, err := globInside(root, ".", pat, "workspace."+key+" entry")
				if err != nil {
					return err
				}
				for _, d := range dirs {
					if hasMeta(pat) && excluded(d) {
						continue
					}
					fi, err := root.Stat(path.Join(d, "Cargo.toml"))
					if err != nil && !errors.Is(err, fs.ErrNotExist) {
						// Never skipped: cargo would follow it out.
						return refuse("workspace.%s entry %q matches a Cargo.toml that cannot be read inside the project (a symlink leading out of it?)", key, clip(pat))
					}
					if err != nil || !fi.Mode().IsRegular() {
						if !hasMeta(pat) {
							return refuse("workspace member %q has no Cargo.toml", clip(pat))
						}
						continue // cargo ignores glob matches without a manifest
					}
					queue = append(queue, item{dir: d, own: true})
				}
			}
		}
	}
	for len(queue) > 0 {
		it := queue[0]
		queue = queue[1:]
		if pk := p.Packages[it.dir]; pk != nil {
			pk.Own = pk.Own || it.own
			pk.Local = pk.Local || it.local
			continue
		}
		if len(p.Packages) >= maxManifests {
			return refuse("more than %d manifests", maxManifests)
		}
		var m map[string]any
		if it.dir == "." {
			m = rootM
		} else if m, err = p.manifest(root, it.dir); err != nil {
			return err
		}
		pk := &pkgInfo{Dir: it.dir, Own: it.own, Local: it.local}
		p.Packages[it.dir] = pk
		mf := it.dir + "/Cargo.toml"
		if it.dir == "." {
			mf = "Cargo.toml"
		}
		if pkg := table(m["package"]); pkg != nil {
			pk.Name, _ = str(pkg["name"])
			switch v := pkg["version"].(type) {
			case string:
				pk.Version = v
			case nil:
				pk.Version = "0.0.0" // cargo's default
			default:
				pk.Version = "*"
				if s, ok := wsVersion.(string); ok {
					pk.Version = s
				}
			}
			if s, ok := str(pkg["workspace"]); ok {
				if _, err := inside(root, it.dir, s, mf+" package.workspace"); err != nil {
					return err
				}
			}
			if err := p.targets(root, it.dir, mf, m); err != nil {
				return err
			}
		} else if it.dir != "." {
			return refuse("%s has no [package]", mf)
		}
		var paths []string
		collect := func(where string, tbl map[string]any) error {
			names := make([]string, 0, len(tbl))
			for k := range tbl {
				names = append(names, k)
			}
			sort.Strings(names)
			for _, name := range names {
				spec := table(tbl[name])
				if spec == nil {
					continue
				}
				// A local registry index is a path outside the project. (A
				// git URL is pinned by its commit in Cargo.lock and fetched
				// in the sandbox, which sees only what kettle mounts.)
				if s, ok := str(spec["registry-index"]); ok && isFileURL(s) {
					return refuse("%s: %s.%s names a local registry index (%q): only network registries are allowed", mf, where, clip(name), clip(s))
				}
				s, ok := str(spec["path"])
				if !ok {
					if _, has := spec["path"]; has {
						return refuse("%s: %s.%s.path is not a string", mf, where, clip(name))
					}
					continue
				}
				q, err := inside(root, it.dir, s, fmt.Sprintf("%s: path of %s.%s", mf, where, clip(name)))
				if err != nil {
					return err
				}
				paths = append(paths, q)
			}
			return nil
		}
		for _, k := range depTables {
			if err := collect(k, table(m[k])); err != nil {
				return err
			}
		}
		for tname, t := range table(m["target"]) {
			for _, k := range depTables {
				if err := collect("target."+tname+"."+k, table(table(t)[k])); err != nil {
					return err
				}
			}
		}
		for src, t := range table(m["patch"]) {
			if err := collect("patch."+src, table(t)); err != nil {
				return err
			}
		}
		if err := collect("replace", table(m["replace"])); err != nil {
			return err
		}
		if it.dir == "." && ws != nil {
			if err := collect("workspace.dependencies", table(ws["dependencies"])); err != nil {
				return err
			}
		}
		sort.Strings(paths)
		for _, q := range paths {
			if fi, err := root.Stat(path.Join(q, "Cargo.toml")); err != nil || !fi.Mode().IsRegular() {
				return refuse("path dependency %s has no Cargo.toml inside the project", clip(q))
			}
			queue = append(queue, item{dir: q, local: true})
		}
	}
	return nil
}

// targets checks the target paths of a manifest and records the files
// cargo will look for when it loads it (for the fetch copy's stubs).
func (p *Project) targets(root *os.Root, dir, mf string, m map[string]any) error {
	add := func(rel string) { p.stubs[rel] = true }
	// file stubs rel when it is a regular file; one that leads out of the
	// project (cargo would follow it) is a refusal.
	file := func(rel string) (bool, error) {
		fi, err := root.Stat(rel)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
				return false, nil
			}
			return false, refuse("%s cannot be resolved inside the project (a symlink leading out of it?)", clip(rel))
		}
		if fi.Mode().IsRegular() {
			add(rel)
			return true, nil
		}
		return false, nil
	}
	pkg := table(m["package"])
	switch b := pkg["build"].(type) {
	case string:
		q, err := inside(root, dir, b, mf+" package.build")
		if err != nil {
			return err
		}
		add(q)
	case bool:
	default:
		if _, err := file(path.Join(dir, "build.rs")); err != nil {
			return err
		}
	}
	explicit := func(key string, t map[string]any) error {
		if s, ok := str(t["path"]); ok {
			q, err := inside(root, dir, s, mf+" "+key+".path")
			if err != nil {
				return err
			}
			add(q)
		}
		return nil
	}
	if lib := table(m["lib"]); lib != nil {
		if err := explicit("lib", lib); err != nil {
			return err
		}
	}
	for _, key := range []string{"bin", "example", "test", "bench"} {
		list, _ := m[key].([]any)
		for _, v := range list {
			if err := explicit(key, table(v)); err != nil {
				return err
			}
		}
	}
	// cargo's target auto-discovery.
	for _, f := range []string{"src/lib.rs", "src/main.rs"} {
		if _, err := file(path.Join(dir, f)); err != nil {
			return err
		}
	}
	for _, d := range []string{"src/bin", "examples", "tests", "benches"} {
		if _, err := file(path.Join(dir, d)); err != nil {
			return err
		}
		ents, err := readDir(root, path.Join(dir, d))
		if err != nil {
			continue
		}
		for _, e := range ents {
			n := path.Join(dir, d, e.Name())
			if strings.HasSuffix(e.Name(), ".rs") {
				if _, err := file(n); err != nil {
					return err
				}
			}
			if e.IsDir() || e.Type()&fs.ModeSymlink != 0 {
				if _, err := file(path.Join(n, "main.rs")); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func readDir(root *os.Root, dir string) ([]fs.DirEntry, error) {
	// O_DIRECTORY: a FIFO in a directory's place fails instead of blocking.
	f, err := root.OpenFile(dir, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.ReadDir(-1)
}

func hasMeta(s string) bool { return strings.ContainsAny(s, `*?[\`) }

// globInside expands a workspace member pattern (cargo's glob: *, ? and
// [...] within one path component) through root. The pattern is cleaned
// and checked like any path; a directory on the way that leads out of the
// project through a symlink is a refusal, not an empty match. Matches are
// never quoted in errors (they are names kettle read from disk).
func globInside(root *os.Root, base, pat, what string) ([]string, error) {
	q, err := inside(root, base, pat, what)
	if err != nil {
		return nil, err
	}
	if !hasMeta(q) {
		return []string{q}, nil
	}
	cur := []string{"."}
	for _, part := range strings.Split(q, "/") {
		if part == "**" {
			return nil, refuse("%s %q: ** patterns are not supported", what, clip(pat))
		}
		if _, err := path.Match(part, ""); err != nil {
			return nil, refuse("%s %q is not a valid pattern", what, clip(pat))
		}
		var next []string
		for _, d := range cur {
			if !hasMeta(part) {
				next = append(next, path.Join(d, part))
				continue
			}
			ents, err := readDir(root, d)
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) || errors.Is(err, os.ErrInvalid) || strings.Contains(err.Error(), "not a directory") {
					continue
				}
				return nil, refuse("%s %q cannot be expanded inside the project (a symlink leading out of it?)", what, clip(pat))
			}
			for _, e := range ents {
				if ok, _ := path.Match(part, e.Name()); ok {
					next = append(next, path.Join(d, e.Name()))
				}
			}
			if len(next) > maxGlobMatches {
				return nil, refuse("%s %q matches more than %d paths", what, clip(pat), maxGlobMatches)
			}
		}
		cur = next
	}
	var out []string
	for _, m := range cur {
		fi, err := root.Stat(m)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, refuse("%s %q matches a path that leads out of the project", what, clip(pat))
		}
		if fi.IsDir() {
			out = append(out, m)
		}
	}
	sort.Strings(out)
	return out, nil
}

// isFileURL reports a URL (or cargo source string) that names the local
// file system.
func isFileURL(s string) bool {
	s = strings.ToLower(s)
	for _, pre := range []string{"registry+", "sparse+"} {
		s = strings.TrimPrefix(s, pre)
	}
	return strings.HasPrefix(s, "file:")
}
