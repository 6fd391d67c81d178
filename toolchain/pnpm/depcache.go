package pnpm

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/kettle-build/kettle/depcache"
	"github.com/kettle-build/kettle/toolchain"
)

// KindTarball is the shared dependency cache's kind for a registry
// package's tarball (package depcache). Its digest is the lockfile's
// integrity ("sha512-…"); the entry is a directory holding one file,
// TarballFile, whose bytes have that integrity.
const KindTarball = "pnpm-integrity"

// KindPlan is the kind of a fetch plan: which registry packages of one
// pnpm-lock.yaml a successful `pnpm fetch` of it (same pnpm, node and
// platform) did not ask for, such as optional packages of other
// platforms. Its digest is planDigest's. A plan only lets a later fetch
// run without network when everything else is cached; a wrong one can at
// worst make that fetch fail, never change what is installed (pnpm and
// kettle check every tarball's integrity).
const KindPlan = "pnpm-plan"

// planDigest keys the plan of one lockfile fetched by one pnpm and node
// on this platform.
func planDigest(pnpmSHA, nodeSHA, lockSHA string) string {
	h := sha256.Sum256([]byte(strings.Join([]string{pnpmSHA, nodeSHA, lockSHA, runtime.GOOS, runtime.GOARCH}, "\x00")))
	return hex.EncodeToString(h[:])
}

// TarballFile is the name of the tarball in an entry.
const TarballFile = "package.tgz"

// MaxTarballBytes bounds a tarball kettle copies into the shared cache (and
// the mirror downloads); the largest npm packages are a few hundred MiB.
const MaxTarballBytes = 1 << 30

// DefaultRegistry is where registry packages come from unless the server's
// environment names another (npm_config_registry).
const DefaultRegistry = "https://registry.npmjs.org/"

//go:embed mirror.js
var mirrorJS []byte

// npm package names and versions as they may appear in a tarball URL: the
// mirror is only used when every registry package's name and version are
// plain (nothing to escape, no "..", no "/" but the scope's).
var (
	pkgName    = regexp.MustCompile(`^(@[a-z0-9~-][a-z0-9._~-]*/)?[A-Za-z0-9~-][A-Za-z0-9._~-]*$`)
	pkgVersion = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z.+-]*$`)
)

// mirrorable reports whether the mirror can serve p at tarballPath: a
// plain npm name and version, nothing to escape, no "..".
func mirrorable(p RegistryPackage) bool {
	return pkgName.MatchString(p.Name) && pkgVersion.MatchString(p.Version) && !strings.Contains(p.Name, "..") && !strings.Contains(p.Version, "..")
}

// cacheUse is what the shared cache gave one fetch.
type cacheUse struct {
	dir      string // the mirror's directory in the job's cache
	plan     mirrorPlan
	misses   []miss          // registry packages the mirror downloads
	hits     int             // registry packages served from the cache
	unneeded map[string]bool // integrities the last fetch of this lockfile did not ask for (the plan)
	complete bool            // every remote package pnpm will ask for is cached: no network
}

type miss struct {
	pkg RegistryPackage
	out string // where the mirror writes the download
}

// mirrorPlan is mirror.js's input: URL path → where its bytes are.
type mirrorPlan struct {
	Max  int64                 `json:"max"`
	Pkgs map[string]mirrorItem `json:"pkgs"`
}

type mirrorItem struct {
	ID       string `json:"id"`
	File     string `json:"file,omitempty"`     // an entry's tarball (read-only in the sandbox)
	Upstream string `json:"upstream,omitempty"` // else downloaded from here…
	Out      string `json:"out,omitempty"`      // …into this file of the job
}

// tarballPath is where pnpm asks a registry for a package's tarball:
// <registry><name>/-/<name without scope>-<version>.tgz.
func tarballPath(name, version string) string {
	base := name
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		base = name[i+1:]
	}
	return name + "/-/" + base + "-" + version + ".tgz"
}

// registryURL is the upstream registry of this server's jobs, with a
// trailing slash.
func registryURL(env []string) string {
	reg := DefaultRegistry
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		if strings.EqualFold(k, "npm_config_registry") && v != "" {
			reg = v
		}
	}
	if !strings.HasSuffix(reg, "/") {
		reg += "/"
	}
	return reg
}

// cacheable reports whether an integrity can key the shared cache: one
// SRI hash of sha256 or longer (a sha1 integrity is fetched, never shared:
// SHA-1 collisions can be made).
func cacheable(integrity string) bool {
	algo, _, _ := strings.Cut(integrity, "-")
	return (algo == "sha512" || algo == "sha384" || algo == "sha256") && checkIntegrity(integrity) == nil
}

// fromCache prepares the mirror of this fetch: every registry package
// of the lockfile gets a path, served from its checked cache entry when
// the cache has it, else downloaded upstream by the mirror. It returns
// nil when the mirror cannot serve this lockfile (a name or version that
// would need escaping): the fetch then goes to the registry directly.
func (d *Driver) fromCache(w *toolchain.Workspace) (*cacheUse, error) {
	for _, p := range d.registry {
		if !mirrorable(p) {
			logf(w, "kettle: %s@%s cannot be served from the shared dependency cache: fetching every package from the registry", clip(p.Name), clip(p.Version))
			return nil, nil
		}
	}
	u := &cacheUse{dir: filepath.Join(w.CacheDir, "pnpm-mirror"), plan: mirrorPlan{Max: MaxTarballBytes, Pkgs: map[string]mirrorItem{}}}
	if err := os.MkdirAll(filepath.Join(u.dir, "tarballs"), 0o755); err != nil {
		return nil, err
	}
	upstream := registryURL(w.Env)
	for i, p := range d.registry {
		path := tarballPath(p.Name, p.Version)
		item := mirrorItem{ID: p.Name + "@" + p.Version}
		if cacheable(p.Integrity) {
			if entry, ok := w.DepCache.Get(depcache.Key{Kind: KindTarball, Digest: p.Integrity}, w.DepLease); ok {
				item.File = filepath.Join(entry, TarballFile)
				u.plan.Pkgs["/"+path] = item
				u.hits++
				continue
			}
		}
		item.Upstream = upstream + path
		item.Out = filepath.Join(u.dir, "tarballs", fmt.Sprintf("%d.tgz", i))
		u.plan.Pkgs["/"+path] = item
		u.misses = append(u.misses, miss{pkg: p, out: item.Out})
	}
	u.unneeded = d.readPlan(w)
	u.complete = d.otherRemote == 0
	for _, m := range u.misses {
		if !u.unneeded[m.pkg.Integrity] {
			u.complete = false
		}
	}
	data, err := json.Marshal(&u.plan)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(u.dir, "plan.json"), data, 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(u.dir, "mirror.js"), mirrorJS, 0o644); err != nil {
		return nil, err
	}
	return u, nil
}

// readPlan reads the plan of this lockfile, if the cache has one.
func (d *Driver) readPlan(w *toolchain.Workspace) map[string]bool {
	out := map[string]bool{}
	if d.planDigest == "" {
		return out
	}
	dir, ok := w.DepCache.Get(depcache.Key{Kind: KindPlan, Digest: d.planDigest}, w.DepLease)
	if !ok {
		return out
	}
	f, err := os.Open(filepath.Join(dir, "unneeded"))
	if err != nil {
		return out
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxLockfileSize))
	if err != nil {
		return out
	}
	for _, l := range strings.Split(string(data), "\n") {
		if l != "" {
			out[l] = true
		}
	}
	return out
}

// downloaded counts the misses the mirror downloaded.
func (u *cacheUse) downloaded() (n int) {
	for _, m := range u.misses {
		if fi, err := os.Lstat(m.out); err == nil && fi.Mode().IsRegular() {
			n++
		}
	}
	return n
}

// writePlan records which registry packages this successful fetch did not
// ask the mirror for (misses it did not download), unless the cache has
// this plan already.
func (d *Driver) writePlan(w *toolchain.Workspace, u *cacheUse) {
	k := depcache.Key{Kind: KindPlan, Digest: d.planDigest}
	if d.planDigest == "" || w.DepCache.Has(k) {
		return
	}
	var b strings.Builder
	for _, m := range u.misses {
		if _, err := os.Lstat(m.out); err != nil {
			b.WriteString(m.pkg.Integrity + "\n")
		}
	}
	st, err := w.DepCache.Stage()
	if err != nil {
		return
	}
	if err := os.WriteFile(filepath.Join(st, "unneeded"), []byte(b.String()), 0o644); err != nil {
		os.RemoveAll(st)
		return
	}
	_ = w.DepCache.Put(k, st, func(string) error { return nil })
}

// fill copies into the shared cache each tarball the mirror downloaded
// for this (successful) fetch: the trusted process's own copy, hashed
// against the lockfile's integrity before it is renamed into the cache.
// The download is the fetch sandbox's file: nothing about it is trusted
// but what the hash proves. Errors only cost a later job a download.
func (d *Driver) fill(ctx context.Context, w *toolchain.Workspace, u *cacheUse) (filled int) {
	for _, m := range u.misses {
		if ctx.Err() != nil {
			break
		}
		k := depcache.Key{Kind: KindTarball, Digest: m.pkg.Integrity}
		if !cacheable(m.pkg.Integrity) || w.DepCache.Has(k) {
			continue
		}
		err := fillOne(w.DepCache, k, m.out)
		switch {
		case err == nil:
			filled++
		case errors.Is(err, os.ErrNotExist), errors.Is(err, depcache.ErrTooLarge):
			// not downloaded (pnpm skipped it), or larger than the cache
		default:
			logf(w, "kettle: %s@%s not added to the shared dependency cache: %s", clip(m.pkg.Name), clip(m.pkg.Version), clip(scrub(err.Error(), w)))
		}
	}
	return filled
}

func fillOne(c *depcache.Cache, k depcache.Key, src string) error {
	st, err := c.Stage()
	if err != nil {
		return err
	}
	if err := copyCapped(src, filepath.Join(st, TarballFile), MaxTarballBytes); err != nil {
		os.RemoveAll(st)
		return err
	}
	return c.Put(k, st, func(dir string) error {
		return VerifyIntegrity(filepath.Join(dir, TarballFile), k.Digest)
	})
}

// copyCapped copies the regular file src (not followed if a symlink, never
// blocking on a FIFO) to the new file dst, at most max bytes.
func copyCapped(src, dst string, max int64) error {
	in, err := os.OpenFile(src, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return errors.New("the download is not a regular file")
	}
	if fi.Size() > max {
		return depcache.ErrTooLarge
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o644)
	if err != nil {
		return err
	}
	n, err := io.Copy(out, io.LimitReader(in, max+1))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil && n > max {
		err = depcache.ErrTooLarge
	}
	return err
}

// ErrIntegrity is a tarball whose bytes do not have the lockfile's
// integrity.
var ErrIntegrity = errors.New("tarball does not match its integrity in pnpm-lock.yaml")

// VerifyIntegrity hashes the regular file p (not followed, at most
// MaxTarballBytes) with integrity's algorithm and compares.
func VerifyIntegrity(p, integrity string) error {
	algo, want, ok := strings.Cut(integrity, "-")
	if !ok {
		return fmt.Errorf("integrity %q: no algorithm", clip(integrity))
	}
	// SHA-1 collisions can be made: never a key of the shared cache.
	h := sriHash(algo)
	if h == nil || algo == "sha1" {
		return fmt.Errorf("integrity algorithm %q is not accepted for the shared cache", clip(algo))
	}
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return errors.New("not a regular file")
	}
	n, err := io.Copy(h, io.LimitReader(f, MaxTarballBytes+1))
	if err != nil {
		return err
	}
	if n > MaxTarballBytes {
		return depcache.ErrTooLarge
	}
	if base64.StdEncoding.EncodeToString(h.Sum(nil)) != want {
		return ErrIntegrity
	}
	return nil
}

// scrub removes the job's and the cache's paths from a message for the
// build log.
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
