package cargo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/kettle-build/kettle/depcache"
	"github.com/kettle-build/kettle/internal/lazyre"
	"github.com/kettle-build/kettle/toolchain"
)

// Kinds of the shared dependency cache's entries for Cargo (package
// depcache):
//   - KindCrate: a registry crate: "crate", the .crate itself, and "pkg/",
//     its extracted tree (the files under "<name>-<version>/" of the
//     .crate) plus the .cargo-checksum.json a directory source needs;
//     digest: Cargo.lock's checksum (sha256 of the .crate), which the
//     trusted process checked on its own copy before extracting it, and
//     which Put's verify checks again on the staged "crate";
//   - KindSrcDir: the directory name cargo gives a registry under
//     CARGO_HOME/registry/{cache,src} ("index.crates.io-1949cf8c6b5b557f");
//     digest: sha256 of the cargo binary, the Cargo.lock source and the
//     registry it is read from. It is what makes a warm build's source
//     paths (embedded by rustc, remapped) the cold build's.
const (
	KindCrate  = "cargo-sha256"
	KindSrcDir = "cargo-srcdir"
)

// Bounds of what a fill reads and extracts (the attacker owns the .crate;
// its checksum only pins it). A crate over them is not cached: the job
// fetched and built it anyway.
const (
	maxCrateBytes    = 64 << 20
	maxUnpackedBytes = 512 << 20
	maxCrateEntries  = 100000
)

// cacheDirName is the shape of a registry directory name cargo makes
// ("<host>-<16 hex>"); anything else read back is refused.
var cacheDirName = lazyre.New(`^[A-Za-z0-9_.-]{1,200}$`)

// crateGroup is the registry packages of Cargo.lock from one source.
type crateGroup struct {
	source string       // Cargo.lock's source string
	table  string       // the [source.<table>] whose replace-with kettle sets
	key    depcache.Key // KindSrcDir key
	pkgs   []Package
	dir    string // CARGO_HOME/registry/src/<dir> (when cached)
	cached bool   // every package came from the shared cache
	seeded int    // else: its crates put in cargo's download cache from the shared one
}

// cacheUse is what the shared cache gave one job.
type cacheUse struct {
	groups []*crateGroup
	other  int               // remote packages the cache cannot serve (git, local registries, other registries)
	crates int               // crates from the cache
	links  map[string]string // link under CARGO_HOME → entry it names
}

// complete says nothing is left to fetch.
func (u *cacheUse) complete() bool {
	if u.other > 0 {
		return false
	}
	for _, g := range u.groups {
		if !g.cached {
			return false
		}
	}
	return true
}

// config is the --config arguments that make cargo read each cached
// source from its directory under CARGO_HOME (a directory source: cargo
// keeps the original package ids and checks each package's checksum in
// .cargo-checksum.json against Cargo.lock).
func (u *cacheUse) config(home string) []string {
	var out []string
	for i, g := range u.groups {
		if !g.cached {
			continue
		}
		name := fmt.Sprintf("kettle-cache-%d", i)
		out = append(out,
			"--config", "source."+tomlString(g.table)+".replace-with="+tomlString(name),
			"--config", "source."+tomlString(name)+".directory="+tomlString(filepath.Join(home, "registry", "src", g.dir)))
	}
	return out
}

// groups sorts Cargo.lock's remote packages: registry crates the shared
// cache can serve, by source, and the count of the others.
func (d *Driver) groups(w *toolchain.Workspace) (groups []*crateGroup, other int) {
	by := map[string]*crateGroup{}
	tables := map[string]bool{}
	for _, pk := range d.proj.Lock.Package {
		if pk.Source == "" || d.proj.Vendored[lockKey(pk)] != nil {
			continue // the project's own code
		}
		g := by[pk.Source]
		if g == nil {
			table, effective, ok := d.proj.Config.cacheable(pk.Source)
			if !ok || tables[table] {
				// Two sources behind one table (crates.io's git and sparse
				// ids) cannot both be replaced: the second is fetched.
				other++
				continue
			}
			tables[table] = true
			h := sha256.New()
			fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s", d.cargoSHA, pk.Source, effective, toolchain.Getenv(w.Env, "CARGO_REGISTRIES_CRATES_IO_PROTOCOL"))
			g = &crateGroup{source: pk.Source, table: table, key: depcache.Key{Kind: KindSrcDir, Digest: hex.EncodeToString(h.Sum(nil))}}
			by[pk.Source] = g
			groups = append(groups, g)
		}
		if !hex64.MatchString(pk.Checksum) {
			other++
			continue
		}
		g.pkgs = append(g.pkgs, pk)
	}
	return groups, other
}

// cacheable reports whether packages of the Cargo.lock source src come
// from a network registry (after the project's source replacements), and
// names the [source] table whose replacement kettle overrides and the
// registry actually read. Git sources, directories and local registries
// are not cached (they are fetched as before, or are the project's).
func (c *Config) cacheable(src string) (table, effective string, ok bool) {
	if !strings.HasPrefix(src, "registry+") && !strings.HasPrefix(src, "sparse+") {
		return "", "", false
	}
	table = c.sourceName(src)
	if table == "" {
		if src != cratesIOGit && src != cratesIOSparse {
			return "", "", false // an alternative registry without a [source] table
		}
		table = "crates-io"
	}
	s, err := c.resolve(table)
	switch {
	case err != nil:
		return "", "", false
	case s == nil:
		return table, src, true
	case s.Registry != "":
		return table, s.Registry, true
	}
	return "", "", false
}

// fromCache lays out, for each source all of whose crates the shared cache
// has (checked against their records), CARGO_HOME/registry/src/<dir>/ with
// a symlink <name>-<version> → the read-only entry: the very path cargo
// extracts that crate to, so rustc sees (and remaps) the same source paths
// as in a cold build.
func (d *Driver) fromCache(w *toolchain.Workspace) (*cacheUse, error) {
	c, l := w.DepCache, w.DepLease
	home := d.cargoHome(w)
	u := &cacheUse{links: map[string]string{}}
	u.groups, u.other = d.groups(w)
	for _, g := range u.groups {
		if len(g.pkgs) == 0 {
			continue
		}
		dirEntry, ok := c.Get(g.key, l)
		if !ok {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dirEntry, "dir"))
		name := strings.TrimSpace(string(b))
		if err != nil || !cacheDirName.MatchString(name) || name == "." || name == ".." {
			continue
		}
		entries := make([]string, len(g.pkgs))
		all := true
		for i, pk := range g.pkgs {
			if e, ok := c.Get(depcache.Key{Kind: KindCrate, Digest: pk.Checksum}, l); ok {
				entries[i] = e
			} else {
				all = false
			}
		}
		if !all {
			// The registry must serve the rest, so cargo reads this
			// source itself: seed its download cache with the crates the
			// cache has (a link to the entry's verified .crate, which
			// cargo takes without downloading and extracts itself).
			if err := mkdirReal(home, filepath.Join("registry", "cache", name)); err != nil {
				return nil, err
			}
			for i, pk := range g.pkgs {
				if entries[i] == "" {
					continue
				}
				link := filepath.Join(home, "registry", "cache", name, pk.Name+"-"+pk.Version+".crate")
				if err := os.Remove(link); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return nil, err
				}
				if err := os.Symlink(filepath.Join(entries[i], "crate"), link); err != nil {
					return nil, err
				}
				g.seeded++
				u.crates++
			}
			continue
		}
		src := filepath.Join(home, "registry", "src", name)
		// A directory source reads every package in its directory: start
		// from an empty one (RemoveAll removes links, not what they name).
		if err := os.RemoveAll(src); err != nil {
			return nil, err
		}
		if err := mkdirReal(home, filepath.Join("registry", "src", name)); err != nil {
			return nil, err
		}
		for i, pk := range g.pkgs {
			link := filepath.Join(src, pk.Name+"-"+pk.Version)
			target := filepath.Join(entries[i], "pkg")
			if err := os.Symlink(target, link); err != nil {
				return nil, err
			}
			u.links[link] = target
		}
		g.dir, g.cached = name, true
		u.crates += len(g.pkgs)
	}
	return u, nil
}

// mkdirReal makes rel under base, refusing a component that is not a
// real directory (a symlink a fetch left in a reused cache directory).
func mkdirReal(base, rel string) error {
	p := base
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		p = filepath.Join(p, part)
		fi, err := os.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := os.Mkdir(p, 0o755); err != nil {
				return err
			}
		case err != nil:
			return err
		case !fi.IsDir():
			return fmt.Errorf("%s is not a directory", part)
		}
	}
	return nil
}

// checkLinks makes sure the fetch (whose sandbox can write CARGO_HOME)
// left each cached source's directory as fromCache made it: real
// directories down to it, and in it exactly the links to the entries.
func checkLinks(home string, u *cacheUse) error {
	for _, g := range u.groups {
		if !g.cached {
			continue
		}
		rel := filepath.Join("registry", "src", g.dir)
		p := home
		for _, part := range strings.Split(rel, string(filepath.Separator)) {
			p = filepath.Join(p, part)
			if fi, err := os.Lstat(p); err != nil || !fi.IsDir() {
				return errors.New("CARGO_HOME: a cached source's directory was replaced during the fetch")
			}
		}
		ents, err := os.ReadDir(p)
		if err != nil || len(ents) != len(g.pkgs) {
			return errors.New("CARGO_HOME: a cached source's directory was changed during the fetch")
		}
		for _, e := range ents {
			link := filepath.Join(p, e.Name())
			want, ok := u.links[link]
			if t, err := os.Readlink(link); !ok || err != nil || t != want {
				return errors.New("CARGO_HOME: a cached crate was replaced during the fetch")
			}
		}
	}
	return nil
}

// fill adds to the shared cache the crates of each source this job fetched
// from its registry: for each, the trusted process reads its own copy of
// the .crate cargo downloaded (into memory, never linking the file the
// sandbox wrote), checks its sha256 against Cargo.lock, extracts it safely
// (extractCrate) into a staged directory and Puts it; then the source's
// directory name. Errors only cost a later job a download: they are
// logged, not returned.
func (d *Driver) fill(ctx context.Context, w *toolchain.Workspace, u *cacheUse) (filled int) {
	c := w.DepCache
	home := d.cargoHome(w)
	root, err := os.OpenRoot(home)
	if err != nil {
		return 0
	}
	defer root.Close()
	var dirs []string
	if f, err := root.Open("registry/cache"); err == nil {
		ents, _ := f.ReadDir(-1)
		f.Close()
		for _, e := range ents {
			if e.IsDir() && cacheDirName.MatchString(e.Name()) {
				dirs = append(dirs, e.Name())
			}
		}
	}
	sort.Strings(dirs)
	for _, g := range u.groups {
		if g.cached || len(g.pkgs) == 0 {
			continue
		}
		found := map[string]int{} // registry directory → packages of g found there
		for _, pk := range g.pkgs {
			if ctx.Err() != nil {
				return filled
			}
			k := depcache.Key{Kind: KindCrate, Digest: pk.Checksum}
			for _, dir := range dirs {
				data, err := readCrate(root, "registry/cache/"+dir+"/"+pk.Name+"-"+pk.Version+".crate", pk.Checksum)
				if err != nil {
					continue
				}
				found[dir]++
				if c.Has(k) {
					break // another job added it meanwhile
				}
				if err := putCrate(c, k, pk, data); err != nil {
					if !errors.Is(err, depcache.ErrTooLarge) {
						logf(w, "kettle: %s %s not added to the shared dependency cache: %s", pk.Name, pk.Version, clip(scrub(err.Error(), w)))
					}
				} else {
					filled++
				}
				break
			}
		}
		// The source's directory: the one holding all its crates (and
		// only one such, or the layout is not known for sure).
		var dir string
		for name, n := range found {
			if n == len(g.pkgs) {
				if dir != "" {
					dir = ""
					break
				}
				dir = name
			}
		}
		if dir == "" || c.Has(g.key) {
			continue
		}
		if st, err := c.Stage(); err == nil {
			if err := os.WriteFile(filepath.Join(st, "dir"), []byte(dir+"\n"), 0o644); err != nil {
				os.RemoveAll(st)
				continue
			}
			_ = c.Put(g.key, st, func(string) error { return nil })
		}
	}
	return filled
}

// readCrate reads rel (through root, nothing followed at its last
// component, a regular file within maxCrateBytes) into memory and checks
// its sha256 against sum.
func readCrate(root *os.Root, rel, sum string) ([]byte, error) {
	// os.Root resolves a symlink inside the root itself: refuse one first,
	// then require the opened file to be the one looked at.
	li, err := root.Lstat(rel)
	if err != nil {
		return nil, err
	}
	if !li.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	f, err := root.OpenFile(rel, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !os.SameFile(li, fi) || !fi.Mode().IsRegular() || fi.Size() > maxCrateBytes {
		return nil, errors.New("not a regular file within the size bound")
	}
	data, err := io.ReadAll(io.LimitReader(f, maxCrateBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxCrateBytes {
		return nil, errors.New("crate too large")
	}
	h := sha256.Sum256(data)
	if hex.EncodeToString(h[:]) != sum {
		return nil, errors.New("checksum mismatch")
	}
	return data, nil
}

// putCrate stages data (already checked against k.Digest) as "crate",
// extracts it into "pkg/" with the .cargo-checksum.json of a directory
// source, and Puts it; the verify step hashes the sealed "crate" again.
func putCrate(c *depcache.Cache, k depcache.Key, pk Package, data []byte) error {
	st, err := c.Stage()
	if err != nil {
		return err
	}
	fail := func(err error) error {
		os.RemoveAll(st)
		return err
	}
	if err := os.WriteFile(filepath.Join(st, "crate"), data, 0o644); err != nil {
		return fail(err)
	}
	pkg := filepath.Join(st, "pkg")
	if err := os.Mkdir(pkg, 0o755); err != nil {
		return fail(err)
	}
	if err := extractCrate(data, pk.Name, pk.Version, pkg); err != nil {
		return fail(err)
	}
	sumFile := checksumJSON(pk.Checksum)
	if err := os.WriteFile(filepath.Join(pkg, ".cargo-checksum.json"), sumFile, 0o644); err != nil {
		return fail(err)
	}
	return c.Put(k, st, func(dir string) error {
		got, err := os.ReadFile(filepath.Join(dir, "pkg", ".cargo-checksum.json"))
		if err != nil || !bytes.Equal(got, sumFile) {
			return errors.New(".cargo-checksum.json is not kettle's")
		}
		b, err := os.ReadFile(filepath.Join(dir, "crate"))
		if err != nil {
			return err
		}
		if h := sha256.Sum256(b); hex.EncodeToString(h[:]) != k.Digest {
			return errors.New("the .crate does not match Cargo.lock's checksum")
		}
		return nil
	})
}

// checksumJSON is a directory source's .cargo-checksum.json for a crate:
// cargo checks "package" against Cargo.lock; "files" is empty because the
// entry's files are checked by its fingerprint record on every use.
func checksumJSON(sum string) []byte {
	return []byte(`{"files":{},"package":"` + sum + `"}`)
}

func logf(w *toolchain.Workspace, format string, args ...any) {
	if w.Log != nil {
		w.Log(fmt.Sprintf(format, args...))
	}
}

// scrub takes the job's and the cache's directories out of a message.
func scrub(s string, w *toolchain.Workspace) string {
	for _, p := range []string{w.CacheDir, w.Dir} {
		if p != "" {
			s = strings.ReplaceAll(s, p, "…")
		}
	}
	if w.DepCache != nil {
		s = strings.ReplaceAll(s, w.DepCache.Dir(), "…")
	}
	return s
}
