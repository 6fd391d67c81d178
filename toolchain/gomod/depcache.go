package gomod

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/mod/module"

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
//   - KindPlan: which of go.sum's lines `go mod download` needed, for one
//     go binary, go.mod and go.sum (digest: sha256 of the three); it only
//     names lines of that go.sum, whose hashes are checked as above.
const (
	KindModule = "go-h1"
	KindGoMod  = "go-mod-h1"
	KindPlan   = "go-plan"
)

// cacheUse is what the shared cache gave one fetch.
type cacheUse struct {
	links    map[string]string // module directory in the job's cache → entry it links to
	modules  int               // modules linked
	goMods   int               // go.mod files copied
	complete bool              // the plan is known and every line of it came from the cache
	plan     depcache.Key
}

func (u *cacheUse) has(dir string) bool { _, ok := u.links[dir]; return ok }

// moduleDirs names a module's places in a module cache: its extracted
// directory (relative to GOMODCACHE) and its download directory's files
// without extension (cache/download/<path>/@v/<version>).
func moduleDirs(path, version string) (dir, download string, err error) {
	ep, err1 := module.EscapePath(path)
	ev, err2 := module.EscapeVersion(version)
	if err1 != nil || err2 != nil {
		return "", "", fmt.Errorf("cannot escape %s@%s", path, version)
	}
	return ep + "@" + ev, filepath.Join("cache", "download", ep, "@v", ev), nil
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

// fromCache puts into the job's module cache every module and go.mod file
// go.sum pins that the shared cache has: a module's directory becomes a
// symlink to the (read-only) entry and its .ziphash is written, a go.mod
// file is copied and hashed again. complete says the plan of an earlier
// fetch of this very go.mod and go.sum is known and fully covered: then
// nothing needs downloading.
func (d *Driver) fromCache(w *toolchain.Workspace) (*cacheUse, error) {
	c, l := w.DepCache, w.DepLease
	u := &cacheUse{links: map[string]string{}}
	var err error
	if u.plan, err = d.planKey(w); err != nil {
		return nil, err
	}
	mc := d.modCache(w)
	haveZip := map[string]bool{}
	haveMod := map[string]bool{}
	for _, h := range d.sum.Zips {
		entry, ok := c.Get(depcache.Key{Kind: KindModule, Digest: h.H1}, l)
		if !ok {
			continue
		}
		dir, dl, err := moduleDirs(h.Path, h.Version)
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Join(mc, filepath.Dir(dir)), 0o755); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Join(mc, filepath.Dir(dl)), 0o755); err != nil {
			return nil, err
		}
		if err := os.Symlink(entry, filepath.Join(mc, dir)); err != nil {
			return nil, err
		}
		// go takes an extracted directory with a .ziphash as complete, and
		// checks the hash in it against go.sum.
		if err := os.WriteFile(filepath.Join(mc, dl+".ziphash"), []byte("h1:"+h.H1), 0o644); err != nil {
			return nil, err
		}
		u.links[dir] = entry
		u.modules++
		haveZip[h.Path+" "+h.Version] = true
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
		dst := filepath.Join(mc, dl+".mod")
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
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
		haveMod[h.Path+" "+h.Version] = true
	}
	planDir, ok := c.Get(u.plan, l)
	if !ok {
		return u, nil
	}
	plan, err := os.ReadFile(filepath.Join(planDir, "plan"))
	if err != nil {
		return u, nil
	}
	u.complete = true
	sc := bufio.NewScanner(bytes.NewReader(plan))
	for sc.Scan() {
		kind, mv, _ := strings.Cut(sc.Text(), " ")
		switch {
		case kind == "zip" && haveZip[mv], kind == "mod" && haveMod[mv]:
		default:
			u.complete = false
		}
	}
	return u, nil
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
// plan (which lines the fetch needed) is recorded. Errors only cost a
// later job a download: they are logged, not returned.
func (d *Driver) fill(ctx context.Context, w *toolchain.Workspace, u *cacheUse) (filled int) {
	c := w.DepCache
	mc := d.modCache(w)
	var plan bytes.Buffer
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
		fmt.Fprintf(&plan, "zip %s %s\n", h.Path, h.Version)
		if !u.has(dir) {
			todo = append(todo, job{h: h, dir: dir})
		}
	}
	for _, h := range d.sum.GoMods {
		_, dl, err := moduleDirs(h.Path, h.Version)
		if err != nil {
			continue
		}
		if _, err := os.Lstat(filepath.Join(mc, dl+".mod")); err != nil {
			continue
		}
		fmt.Fprintf(&plan, "mod %s %s\n", h.Path, h.Version)
		todo = append(todo, job{h: h, dir: dl + ".mod", isMod: true})
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	next := make(chan job)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range next {
				err := d.fillOne(c, mc, j.h, j.dir, j.isMod)
				mu.Lock()
				switch {
				case err == nil:
					filled++
				case !errors.Is(err, depcache.ErrTooLarge):
					logf(w, "kettle: %s@%s not added to the shared dependency cache: %s", j.h.Path, j.h.Version, clip(scrubPaths(err.Error(), w)))
				}
				mu.Unlock()
			}
		}()
	}
	for _, j := range todo {
		if ctx.Err() != nil {
			break
		}
		kind := KindModule
		if j.isMod {
			kind = KindGoMod
		}
		if c.Has(depcache.Key{Kind: kind, Digest: j.h.H1}) {
			continue // came from the cache, or another job added it meanwhile
		}
		next <- j
	}
	close(next)
	wg.Wait()
	if ctx.Err() != nil {
		return filled
	}
	st, err := c.Stage()
	if err != nil {
		return filled
	}
	if err := os.WriteFile(filepath.Join(st, "plan"), plan.Bytes(), 0o644); err != nil {
		os.RemoveAll(st)
		return filled
	}
	_ = c.Put(u.plan, st, func(string) error { return nil })
	return filled
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
