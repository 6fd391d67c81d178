package gomod

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/mod/module"
	"golang.org/x/sys/unix"

	"github.com/kettle-build/kettle/depcache"
	"github.com/kettle-build/kettle/toolchain"
)

// Kinds of the shared dependency cache's entries for Go (package
// depcache). The digest of each is go.sum's h1 (base64, without "h1:"):
//   - KindModule: a module's extracted tree, exactly the files of its zip
//     (what the build compiles), dirhash-verified against the h1 of its
//     "<module> <version>" line;
//   - KindGoMod: a directory holding one file go.mod, verified against the
//     h1 of a "<module> <version>/go.mod" line;
//   - KindPlan: what `go mod download` needed for one go binary, go.mod and
//     go.sum (digest: sha256 of the three): the file plan names the go.sum
//     lines ("zip <module> <version>", "mod <module> <version>"), and the
//     tree download/ is the module cache's cache/download for them: each
//     go.mod file, verified against its line, and each module's .ziphash,
//     written by kettle from its line. A job of the same three links its
//     cache/download there and each module directory to its KindModule
//     entry, and runs no fetch command: for cli/cli's 338 modules and
//     1,869 go.mod files that is two syscalls a file fewer than copying
//     (docs/benchmarks.md).
const (
	KindModule = "go-h1"
	KindGoMod  = "go-mod-h1"
	KindPlan   = "go-plan-2"
)

// maxPlanBytes bounds a plan file read back (one line per go.sum line).
const maxPlanBytes = 16 << 20

// cacheUse is what the shared cache gave one fetch.
type cacheUse struct {
	links    map[string]string // module directory in the job's cache → entry it links to
	modules  int               // modules linked
	goMods   int               // go.mod files copied or linked
	complete bool              // the plan is known and every line of it came from the cache
	plan     depcache.Key
}

func (u *cacheUse) has(dir string) bool { _, ok := u.links[dir]; return ok }

// downloadDir is the module cache's download tree (relative to GOMODCACHE).
var downloadDir = filepath.Join("cache", "download")

// moduleDirs names a module's places in a module cache: its extracted
// directory (relative to GOMODCACHE) and its download files without
// extension (<path>/@v/<version>, relative to downloadDir).
func moduleDirs(path, version string) (dir, download string, err error) {
	ep, err1 := module.EscapePath(path)
	ev, err2 := module.EscapeVersion(version)
	if err1 != nil || err2 != nil {
		return "", "", fmt.Errorf("cannot escape %s@%s", path, version)
	}
	return ep + "@" + ev, filepath.Join(ep, "@v", ev), nil
}

// planKey is the plan entry's key for this build's go binary and module.
func (d *Driver) planKey(w *toolchain.Workspace) (depcache.Key, error) {
	modData, err := toolchain.ReadProjectFile(w.Dir, ModFile)
	if err != nil {
		return depcache.Key{}, err
	}
	sumData, err := toolchain.ReadProjectFile(w.Dir, SumFile)
	if err != nil {
		return depcache.Key{}, err
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%d\x00", d.goDigest, len(modData))
	h.Write(modData)
	h.Write([]byte{0})
	h.Write(sumData)
	return depcache.Key{Kind: KindPlan, Digest: hex.EncodeToString(h.Sum(nil))}, nil
}

// planLine is one line of a plan: a go.sum line the fetch needed.
type planLine struct {
	h     Hash
	isMod bool
}

func (p planLine) String() string {
	kind := "zip"
	if p.isMod {
		kind = "mod"
	}
	return kind + " " + p.h.Path + " " + p.h.Version
}

// readPlan parses a plan entry's file, each line looked up in go.sum: a
// line go.sum does not pin makes the plan unusable.
func (d *Driver) readPlan(dir string) ([]planLine, bool) {
	f, err := os.OpenFile(filepath.Join(dir, "plan"), os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPlanBytes+1))
	if err != nil || len(data) > maxPlanBytes {
		return nil, false
	}
	var lines []planLine
	for _, l := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		if l == "" {
			continue
		}
		f := strings.Fields(l)
		if len(f) != 3 || (f[0] != "zip" && f[0] != "mod") {
			return nil, false
		}
		isMod := f[0] == "mod"
		h1, ok := d.sum.Lookup(f[1], f[2], isMod)
		if !ok {
			return nil, false
		}
		lines = append(lines, planLine{h: Hash{Path: f[1], Version: f[2], H1: h1}, isMod: isMod})
	}
	return lines, true
}

// fromCache puts into the job's module cache what the shared cache has of
// what go.sum pins. When an earlier fetch of this very go binary, go.mod
// and go.sum left its plan and every module of it is cached, the job's
// cache/download becomes a link to the plan's tree and each module
// directory a link to its entry: complete, nothing needs downloading.
// Otherwise each cached module's directory becomes a link to its
// (read-only) entry with its .ziphash written, and each cached go.mod file
// is copied and hashed again; the fetch downloads the rest.
func (d *Driver) fromCache(w *toolchain.Workspace) (*cacheUse, error) {
	c, l := w.DepCache, w.DepLease
	u := &cacheUse{links: map[string]string{}}
	var err error
	if u.plan, err = d.planKey(w); err != nil {
		return nil, err
	}
	mc := d.modCache(w)
	if planDir, ok := c.Get(u.plan, l); ok {
		if lines, ok := d.readPlan(planDir); ok {
			if done, err := d.fromPlan(w, u, planDir, lines); err != nil || done {
				return u, err
			}
		}
	}
	mkdir := dirMaker()
	for _, h := range d.sum.Zips {
		entry, ok := c.Get(depcache.Key{Kind: KindModule, Digest: h.H1}, l)
		if !ok {
			continue
		}
		dir, dl, err := moduleDirs(h.Path, h.Version)
		if err != nil {
			return nil, err
		}
		if err := mkdir(filepath.Join(mc, downloadDir, filepath.Dir(dl))); err != nil {
			return nil, err
		}
		if err := link(mc, dir, entry, mkdir); err != nil {
			return nil, err
		}
		// go takes an extracted directory with a .ziphash as complete, and
		// checks the hash in it against go.sum.
		if err := os.WriteFile(filepath.Join(mc, downloadDir, dl+".ziphash"), []byte("h1:"+h.H1), 0o644); err != nil {
			return nil, err
		}
		u.links[dir] = entry
		u.modules++
	}
	for _, h := range d.sum.GoMods {
		entry, ok := c.Get(depcache.Key{Kind: KindGoMod, Digest: h.H1}, l)
		if !ok {
			continue
		}
		_, dl, err := moduleDirs(h.Path, h.Version)
		if err != nil {
			return nil, err
		}
		dst := filepath.Join(mc, downloadDir, dl+".mod")
		if err := mkdir(filepath.Dir(dst)); err != nil {
			return nil, err
		}
		if _, err := depcache.CopyFile(filepath.Join(entry, "go.mod"), dst); err != nil {
			return nil, err
		}
		// The copy is this job's own: hash it once more (cheap).
		if got, err := HashGoMod(dst); err != nil || got != h.H1 {
			os.Remove(dst)
			continue
		}
		u.goMods++
	}
	return u, nil
}

// fromPlan links the job's module cache to the plan's download tree and
// to each module's entry, if every module of the plan is cached (looked up
// two at a time: each lookup checks the entry's fingerprint, a stat per
// file). It reports whether it did.
func (d *Driver) fromPlan(w *toolchain.Workspace, u *cacheUse, planDir string, lines []planLine) (bool, error) {
	var zips []Hash
	for _, p := range lines {
		if p.isMod {
			u.goMods++
		} else {
			zips = append(zips, p.h)
		}
	}
	entries := make([]string, len(zips))
	var missing atomic.Bool
	inParallel(len(zips), missing.Load, func(i int) {
		e, ok := w.DepCache.Get(depcache.Key{Kind: KindModule, Digest: zips[i].H1}, w.DepLease)
		if !ok {
			missing.Store(true)
		}
		entries[i] = e
	})
	if missing.Load() {
		u.goMods = 0
		return false, nil
	}
	mc := d.modCache(w)
	mkdir := dirMaker()
	if err := link(mc, downloadDir, filepath.Join(planDir, "download"), mkdir); err != nil {
		return false, err
	}
	for i, h := range zips {
		dir, _, err := moduleDirs(h.Path, h.Version)
		if err != nil {
			return false, err
		}
		if err := link(mc, dir, entries[i], mkdir); err != nil {
			return false, err
		}
		u.links[dir] = entries[i]
	}
	u.modules, u.complete = len(zips), true
	return true, nil
}

// inParallel calls fn(i) for each i < n on two goroutines (the work is
// syscalls and hashing, and kettle's machines have few cores), handing out
// no more once stop reports true.
func inParallel(n int, stop func() bool, fn func(i int)) {
	next := make(chan int)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for i := range next {
				fn(i)
			}
		})
	}
	for i := 0; i < n && !stop(); i++ {
		next <- i
	}
	close(next)
	wg.Wait()
}

// dirMaker is os.MkdirAll remembering what it made: thousands of go.mod
// files share a few hundred directories.
func dirMaker() func(string) error {
	made := map[string]bool{}
	return func(dir string) error {
		if made[dir] {
			return nil
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		made[dir] = true
		return nil
	}
}

// link makes mc/rel a symlink to target.
func link(mc, rel, target string, mkdir func(string) error) error {
	if err := mkdir(filepath.Join(mc, filepath.Dir(rel))); err != nil {
		return err
	}
	return os.Symlink(target, filepath.Join(mc, rel))
}

// checkLinks makes sure the fetch left the links fromCache made as they
// were: the fetch sandbox could write the job's cache, and a module
// directory replaced there would be built without being hashed.
func checkLinks(mc string, u *cacheUse) error {
	for dir, entry := range u.links {
		fi, err := os.Lstat(filepath.Join(mc, dir))
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			return fmt.Errorf("module cache: %s was replaced during the fetch", dir)
		}
		if t, err := os.Readlink(filepath.Join(mc, dir)); err != nil || t != entry {
			return fmt.Errorf("module cache: %s was replaced during the fetch", dir)
		}
	}
	return nil
}

// fill copies into the shared cache what this fetch downloaded and
// VerifyCache checked: each module directory and go.mod file go.sum pins
// that did not come from the cache. Each is the trusted process's own copy,
// hashed again against go.sum before it is renamed into the cache. Then the
// plan (which lines the fetch needed, with their download tree) is
// recorded. Errors only cost a later job a download: they are logged, not
// returned.
func (d *Driver) fill(ctx context.Context, w *toolchain.Workspace, u *cacheUse) (filled int) {
	c := w.DepCache
	mc := d.modCache(w)
	var plan []planLine
	type job struct {
		h     Hash
		dir   string
		isMod bool
	}
	var todo []job
	for _, h := range d.sum.Zips {
		dir, _, err := moduleDirs(h.Path, h.Version)
		if err != nil {
			continue
		}
		if _, err := os.Lstat(filepath.Join(mc, dir)); err != nil {
			continue // not needed by this build
		}
		plan = append(plan, planLine{h: h})
		if !u.has(dir) {
			todo = append(todo, job{h: h, dir: dir})
		}
	}
	for _, h := range d.sum.GoMods {
		_, dl, err := moduleDirs(h.Path, h.Version)
		if err != nil {
			continue
		}
		if _, err := os.Lstat(filepath.Join(mc, downloadDir, dl+".mod")); err != nil {
			continue
		}
		plan = append(plan, planLine{h: h, isMod: true})
		todo = append(todo, job{h: h, dir: filepath.Join(downloadDir, dl+".mod"), isMod: true})
	}
	var mu sync.Mutex
	inParallel(len(todo), func() bool { return ctx.Err() != nil }, func(i int) {
		j := todo[i]
		kind := KindModule
		if j.isMod {
			kind = KindGoMod
		}
		if c.Has(depcache.Key{Kind: kind, Digest: j.h.H1}) {
			return // came from the cache, or another job added it meanwhile
		}
		err := d.fillOne(c, mc, j.h, j.dir, j.isMod)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err == nil:
			filled++
		case !errors.Is(err, depcache.ErrTooLarge):
			logf(w, "kettle: %s@%s not added to the shared dependency cache: %s", j.h.Path, j.h.Version, clip(scrubPaths(err.Error(), w)))
		}
	})
	if ctx.Err() != nil {
		return filled
	}
	if err := d.fillPlan(c, mc, u.plan, plan); err != nil && !errors.Is(err, depcache.ErrTooLarge) {
		logf(w, "kettle: the fetch plan was not added to the shared dependency cache: %s", clip(scrubPaths(err.Error(), w)))
	}
	return filled
}

// fillPlan stages the plan entry: the plan file, a copy of each go.mod
// file the fetch needed and a .ziphash kettle writes for each module, laid
// out as cache/download; each go.mod copy is hashed against go.sum.
func (d *Driver) fillPlan(c *depcache.Cache, mc string, key depcache.Key, plan []planLine) error {
	st, err := c.Stage()
	if err != nil {
		return err
	}
	var text strings.Builder
	mkdir := dirMaker()
	for _, p := range plan {
		fmt.Fprintln(&text, p)
		_, dl, err := moduleDirs(p.h.Path, p.h.Version)
		dst := filepath.Join(st, "download", dl)
		if err == nil {
			err = mkdir(filepath.Dir(dst))
		}
		if err != nil {
			os.RemoveAll(st)
			return err
		}
		if p.isMod {
			_, err = depcache.CopyFile(filepath.Join(mc, downloadDir, dl+".mod"), dst+".mod")
		} else {
			err = os.WriteFile(dst+".ziphash", []byte("h1:"+p.h.H1), 0o644)
		}
		if err != nil {
			os.RemoveAll(st)
			return err
		}
	}
	if err := mkdir(filepath.Join(st, "download")); err != nil {
		os.RemoveAll(st)
		return err
	}
	if err := os.WriteFile(filepath.Join(st, "plan"), []byte(text.String()), 0o644); err != nil {
		os.RemoveAll(st)
		return err
	}
	return c.Put(key, st, func(dir string) error {
		for _, p := range plan {
			if !p.isMod {
				continue
			}
			_, dl, _ := moduleDirs(p.h.Path, p.h.Version)
			got, err := HashGoMod(filepath.Join(dir, "download", dl+".mod"))
			if err != nil {
				return err
			}
			if got != p.h.H1 {
				return fmt.Errorf("%s@%s/go.mod: %w", p.h.Path, p.h.Version, ErrMismatch)
			}
		}
		return nil
	})
}

func (d *Driver) fillOne(c *depcache.Cache, mc string, h Hash, rel string, isMod bool) error {
	st, err := c.Stage()
	if err != nil {
		return err
	}
	if isMod {
		if _, err := depcache.CopyFile(filepath.Join(mc, rel), filepath.Join(st, "go.mod")); err != nil {
			os.RemoveAll(st)
			return err
		}
		return c.Put(depcache.Key{Kind: KindGoMod, Digest: h.H1}, st, func(dir string) error {
			got, err := HashGoMod(filepath.Join(dir, "go.mod"))
			if err != nil {
				return err
			}
			if got != h.H1 {
				return fmt.Errorf("%s@%s/go.mod: %w", h.Path, h.Version, ErrMismatch)
			}
			return nil
		})
	}
	if err := depcache.CopyTree(filepath.Join(mc, rel), st, toolchain.MaxTreeFiles); err != nil {
		os.RemoveAll(st)
		return err
	}
	return c.Put(depcache.Key{Kind: KindModule, Digest: h.H1}, st, func(dir string) error {
		root, err := os.OpenRoot(dir)
		if err != nil {
			return err
		}
		defer root.Close()
		got, err := toolchain.HashTree(root, ".", h.Path+"@"+h.Version, false)
		if err != nil {
			return err
		}
		if got != h.H1 {
			return fmt.Errorf("%s@%s: %w", h.Path, h.Version, ErrMismatch)
		}
		return nil
	})
}
