// Package pnpm is the pnpm toolchain driver. pnpm-lock.yaml pins every
// package by integrity; `pnpm fetch --frozen-lockfile` downloads them into a
// per-build store with network (pnpm checks each tarball against its
// integrity), then `pnpm install --offline --frozen-lockfile` and
// `pnpm build` run in the sandbox with the store read-only, and dist/ is
// packed into one deterministic artifact, dist.tar.gz.
package pnpm

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
	"regexp"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/provenance"
	"github.com/kettle-build/kettle/sandbox"
	"github.com/kettle-build/kettle/toolchain"
)

// Names the driver uses.
const (
	LockfileName = "pnpm-lock.yaml"
	// BuildCommand is recorded as externalParameters.buildCommand.
	BuildCommand = "pnpm install --offline --frozen-lockfile && pnpm build"
	// DistDir is what the build must produce; ArtifactName is its tarball.
	DistDir      = "dist"
	ArtifactName = "dist.tar.gz"
	// ScratchDir is the build's home directory inside the project (so
	// the disk limit covers it); removed after the build.
	ScratchDir = ".kettle-pnpm"
)

// Driver builds pnpm projects. A Driver is for one build.
type Driver struct {
	pnpm, node  string     // resolved binaries (set by Inputs)
	local       []LocalRef // local inputs, checked by Inputs
	lock        []byte     // pnpm-lock.yaml as planned (toolchain.Lock), for the fetch copy
	registry    []RegistryPackage
	otherRemote int
	planDigest  string // key of the fetch plan in the shared cache (depcache.go)
	script      string // kettle.toml [pnpm] script ("": build)
	pack        bool   // kettle.toml [pnpm] output = "pack"
}

// New returns a pnpm driver.
func New() toolchain.Driver { return &Driver{} }

func (d *Driver) Name() string     { return "pnpm" }
func (d *Driver) Title() string    { return "Pnpm" }
func (d *Driver) Lockfile() string { return LockfileName }

// Inputs parses pnpm-lock.yaml and hashes pnpm and node.
func (d *Driver) Inputs(ctx context.Context, w *toolchain.Workspace, planned *toolchain.Lock) (*toolchain.Inputs, error) {
	lock, err := ParseLock(planned.Data)
	if err != nil {
		return nil, failure.Wrap(failure.InvalidSource, err, err.Error())
	}
	lockHash := planned.SHA256

	// `pnpm --version` and `node --version` run in this trusted process:
	// in a private empty directory with kettle's environment, so that no
	// package.json (packageManager), .npmrc or .pnpmfile.cjs of the
	// project is anywhere near them.
	tmp, err := os.MkdirTemp("", "kettle-pnpm-version-")
	if err != nil {
		return nil, failure.Wrap(failure.InternalError, err, "cannot create a temporary directory")
	}
	defer os.RemoveAll(tmp)
	hw := *w
	hw.Dir, hw.Env = tmp, d.env(w, tmp)
	pnpm, pnpmPath, err := toolchain.ResolveTool(ctx, &hw, "pnpm")
	if err != nil {
		return nil, toolMissing("pnpm", err)
	}
	node, nodePath, err := toolchain.ResolveTool(ctx, &hw, "node")
	if err != nil {
		return nil, toolMissing("node", err)
	}
	d.pnpm, d.node, d.lock = pnpmPath, nodePath, planned.Data
	d.registry, d.otherRemote = lock.Registry, lock.OtherRemote
	d.planDigest = planDigest(pnpm.SHA256, node.SHA256, lockHash)
	deps, err := d.localInputs(w, lock)
	if err != nil {
		return nil, err
	}
	return &toolchain.Inputs{
		Lock:         planned,
		Toolchain:    provenance.Toolchain{pnpm, node},
		Dependencies: deps,
		MerkleLeaves: func(gitCommit, gitTree string) []string {
			return MerkleLeaves(gitCommit, gitTree, node, pnpm, lockHash, deps)
		},
	}, nil
}

// localInputs adds to the lockfile's registry packages its local inputs
// (file:/link: packages, workspace members, local tarballs, patch files),
// each resolved inside the project and recorded as local code with its
// digest; sorted by uri.
func (d *Driver) localInputs(w *toolchain.Workspace, lock *Lock) ([]provenance.Dependency, error) {
	if ws, err := toolchain.ReadProjectFile(w.Dir, WorkspaceFile); err == nil {
		if _, err := WorkspacePackages(ws); err != nil {
			return nil, failure.Wrap(failure.InvalidSource, err, err.Error())
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, failure.Wrap(failure.InvalidSource, err, "cannot read "+WorkspaceFile+" (it must be a regular file in the project root)")
	}
	refs := append([]LocalRef(nil), lock.Local...)
	if pj, err := toolchain.ReadProjectFile(w.Dir, "package.json"); err == nil {
		more, err := PatchFiles(pj)
		if err != nil {
			return nil, failure.Wrap(failure.InvalidSource, err, err.Error())
		}
		refs = append(refs, more...)
	}
	root, err := os.OpenRoot(w.Dir)
	if err != nil {
		return nil, failure.Wrap(failure.InternalError, err, "cannot open the project")
	}
	defer root.Close()
	refs = dedupLocal(refs)
	local, err := localDependencies(root, refs)
	if err != nil {
		return nil, err
	}
	d.local = refs
	for _, l := range local {
		logf(w, "kettle: %s (%s) is local code: recorded with its digest", l.URI, l.Name)
	}
	deps := append(append([]provenance.Dependency{}, lock.Dependencies...), local...)
	sort.SliceStable(deps, func(i, j int) bool { return deps[i].URI < deps[j].URI })
	return deps, nil
}

// logf writes one line of kettle's own to the build log.
func logf(w *toolchain.Workspace, format string, args ...any) {
	if w.Log != nil {
		w.Log(fmt.Sprintf(format, args...))
	}
}

func toolMissing(name string, err error) error {
	if errors.Is(err, toolchain.ErrToolNotFound) {
		return failure.Wrap(failure.UnsupportedToolchain, err, name+" is not installed on this builder")
	}
	return failure.Wrap(failure.InternalError, err, name+" is not usable on this builder")
}

// MerkleLeaves are the peer's pnpm leaves (reference §D.1): gitCommit,
// gitTree, node's sha256 and version, pnpm's sha256 and version, the
// lockfile's sha256, then every dependency uri in order.
func MerkleLeaves(gitCommit, gitTree string, node, pnpm provenance.Tool, lockfileSHA256 string, deps []provenance.Dependency) []string {
	l := []string{gitCommit, gitTree, node.SHA256, node.Version, pnpm.SHA256, pnpm.Version, lockfileSHA256}
	for _, d := range deps {
		l = append(l, d.URI)
	}
	return l
}

func (d *Driver) ready(ctx context.Context, w *toolchain.Workspace) error {
	if d.pnpm != "" {
		return nil
	}
	_, err := toolchain.Plan(ctx, d, w)
	return err
}

func (d *Driver) store(w *toolchain.Workspace) string { return filepath.Join(w.CacheDir, "pnpm-store") }

// env is the environment of pnpm's commands: home and caches in a directory
// of the job, no update check, and pnpm itself never switching to another
// pnpm version named by package.json's packageManager field (the recorded
// binary is the one that runs). The side-effects cache would write into
// the store, which is read-only during the build. The server's own npm and
// node settings are dropped (npm_config_* but the registry an operator
// chose, NODE_OPTIONS, NODE_PATH…): they could name programs or files.
func (d *Driver) env(w *toolchain.Workspace, home string) []string {
	base := make([]string, 0, len(w.Env))
	for _, kv := range w.Env {
		k, _, _ := strings.Cut(kv, "=")
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "npm_config_") && lk != "npm_config_registry" ||
			strings.HasPrefix(k, "NODE_") || strings.HasPrefix(k, "PNPM_") || k == "COREPACK_HOME" {
			continue
		}
		base = append(base, kv)
	}
	tmp := filepath.Join(home, ".tmp")
	_ = os.MkdirAll(tmp, 0o755)
	return toolchain.SetEnv(base,
		"HOME="+home,
		// The server's TMPDIR does not exist in the sandbox (pnpm dies
		// resolving it): a directory of the job instead.
		"TMPDIR="+tmp,
		"XDG_CONFIG_HOME="+filepath.Join(home, ".config"),
		"XDG_CACHE_HOME="+filepath.Join(home, ".cache"),
		"XDG_DATA_HOME="+filepath.Join(home, ".local", "share"),
		"XDG_STATE_HOME="+filepath.Join(home, ".local", "state"),
		"npm_config_update_notifier=false",
		"npm_config_manage_package_manager_versions=false",
		"npm_config_side_effects_cache=false",
		// pnpm's default back-off (10 s, then 60 s) would hold a build
		// for over a minute on a bad download.
		"npm_config_fetch_retry_mintimeout=2000",
		"npm_config_fetch_retry_maxtimeout=10000",
		"COREPACK_ENABLE_STRICT=0",
	)
}

// readOnly lists the installations of pnpm and node for the sandbox.
func (d *Driver) readOnly() []string {
	var ro []string
	for _, p := range []string{d.pnpm, d.node} {
		dir := filepath.Dir(p)
		if b := filepath.Base(dir); b == "bin" {
			dir = filepath.Dir(dir)
		}
		if len(ro) == 0 || ro[0] != dir {
			ro = append(ro, dir)
		}
	}
	return ro
}

// errCode finds pnpm's error code (ERR_PNPM_…) in its output: the client
// sees the code, while the whole output (which may name paths) stays in
// the build log.
var errCode = regexp.MustCompile(`\bERR_PNPM_[A-Z0-9_]+\b`)

type codeLog struct {
	w     *toolchain.Workspace
	codes []string
}

func (c *codeLog) workspace() *toolchain.Workspace {
	cw := *c.w
	log, piece := c.w.Log, c.w.LogPiece
	cw.Log = func(line string) {
		if log != nil {
			log(line)
		}
		c.see(line)
	}
	if piece != nil {
		// toolchain.Run sends output to LogPiece when it is set: watch
		// it there too.
		cw.LogPiece = func(p string, cont bool) {
			piece(p, cont)
			c.see(p)
		}
	}
	return &cw
}

// see keeps the first error codes of pnpm's output.
func (c *codeLog) see(line string) {
	if m := errCode.FindString(line); m != "" && len(c.codes) < 3 {
		for _, have := range c.codes {
			if have == m {
				return
			}
		}
		c.codes = append(c.codes, m)
	}
}

func (c *codeLog) fail(ctx context.Context, kind failure.Kind, what string, err error) error {
	err = toolchain.CommandFailed(ctx, kind, what, err)
	var fe *failure.Error
	if len(c.codes) > 0 && errors.As(err, &fe) && fe.Kind == kind {
		return &failure.Error{Kind: kind, Msg: fe.Msg + ": " + strings.Join(c.codes, ", "), Err: fe.Err}
	}
	return err
}

// Fetch runs `pnpm fetch --frozen-lockfile` with network into the job's
// store, in a directory of the job's cache holding only a copy of the
// project's pnpm-lock.yaml and, for a workspace, a pnpm-workspace.yaml
// that kettle writes with the `packages` globs alone. The project is not
// touched, so its node_modules is created by the offline install, which
// runs the dependencies' lifecycle scripts and the pnpmfile in the
// sandbox. No code from the project or its dependencies runs while the
// network is on, and no project setting reaches the fetch:
//   - .pnpmfile.cjs is not copied and --ignore-pnpmfile is given;
//   - lifecycle scripts are off (--ignore-scripts; pnpm fetch would run an
//     install script such as esbuild's postinstall);
//   - the project's .npmrc is not copied: its keys can redirect registries
//     (registry, @scope:registry), name programs (git, script-shell,
//     shell-emulator, node-options) or change what may build
//     (onlyBuiltDependencies); settings pnpm 10 reads from
//     pnpm-workspace.yaml are dropped with it.
//
// With the shared dependency cache (w.DepCache), pnpm fetches the registry
// packages from kettle's mirror instead (depcache.go, mirror.js): verified
// tarballs from the cache, the rest downloaded and, after the fetch, hashed
// by kettle and added; when the cache has everything the fetch runs
// without network. The store stays the job's own.
func (d *Driver) Fetch(ctx context.Context, w *toolchain.Workspace) error {
	if err := d.ready(ctx, w); err != nil {
		return err
	}
	home := filepath.Join(w.CacheDir, "pnpm-home")
	proj := filepath.Join(w.CacheDir, "pnpm-fetch")
	for _, dir := range []string{d.store(w), home, proj} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(proj, LockfileName), d.lock, 0o644); err != nil {
		return err
	}
	ws, err := toolchain.ReadProjectFile(w.Dir, WorkspaceFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return failure.Wrap(failure.InvalidSource, err, "cannot read "+WorkspaceFile+" (it must be a regular file in the project root)")
	default:
		clean, err := WorkspacePackages(ws)
		if err != nil {
			return failure.Wrap(failure.InvalidSource, err, err.Error())
		}
		if err := os.WriteFile(filepath.Join(proj, WorkspaceFile), clean, 0o644); err != nil {
			return err
		}
	}
	if err := d.copyLocal(w, proj); err != nil {
		return failure.Wrap(failure.InvalidSource, err, "cannot copy the project's local packages for the fetch")
	}
	args := []string{d.pnpm, "fetch", "--frozen-lockfile", "--ignore-pnpmfile", "--ignore-scripts",
		"--store-dir", d.store(w), "--reporter=append-only"}
	ro := d.readOnly()
	network := true
	var cached *cacheUse
	if w.DepCache != nil {
		// With the shared cache, pnpm fetches every registry package from
		// kettle's mirror (depcache.go), which serves verified cache
		// entries and downloads the rest; when it has everything, the
		// fetch runs without network.
		if cached, err = d.fromCache(w); err != nil {
			return failure.Wrap(failure.InternalError, err, "cannot use the shared dependency cache")
		}
		if cached != nil {
			// --use-openssl-ca: the system's CA store, which the
			// registry's certificate is checked against as pnpm does
			// with the system npmrc's cafile.
			args = append([]string{d.node, "--use-openssl-ca", filepath.Join(cached.dir, "mirror.js"), filepath.Join(cached.dir, "plan.json")}, args...)
			ro = append(ro, w.DepCache.EntriesDir()) // what the plan's files name
			if cached.complete {
				network = false
				logf(w, "kettle: Fetch: %d package(s) from the shared dependency cache, 0 downloaded", cached.hits)
			}
		}
	}
	cl := &codeLog{w: w}
	err = toolchain.Run(ctx, cl.workspace(), &sandbox.Cmd{
		Args:     args,
		Dir:      proj,
		Env:      d.env(w, home),
		Network:  network,
		Writable: []string{w.CacheDir},
		ReadOnly: ro,
		Limits:   w.Limits,
	})
	if err != nil {
		return cl.fail(ctx, failure.DependencyFetchFailed, "pnpm fetch --frozen-lockfile", err)
	}
	if cached != nil && !cached.complete {
		added := d.fill(ctx, w, cached)
		d.writePlan(w, cached)
		logf(w, "kettle: Fetch: %d package(s) from the shared dependency cache, %d downloaded; %d entries added to the cache", cached.hits, cached.downloaded(), added)
	}
	return nil
}

// copyLocal puts the local inputs Inputs checked into the fetch directory.
func (d *Driver) copyLocal(w *toolchain.Workspace, proj string) error {
	if len(d.local) == 0 {
		return nil
	}
	root, err := os.OpenRoot(w.Dir)
	if err != nil {
		return err
	}
	defer root.Close()
	return copyLocal(root, d.local, proj)
}

// WorkspaceFile lists a pnpm workspace's packages.
const WorkspaceFile = "pnpm-workspace.yaml"

// WorkspacePackages rewrites pnpm-workspace.yaml for the fetch: only its
// `packages` globs, each inside the project (by its text; a glob cannot
// climb out with ".." or start at "/").
func WorkspacePackages(data []byte) ([]byte, error) {
	var ws struct {
		Packages []string `yaml:"packages"`
	}
	if err := yaml.Unmarshal(data, &ws); err != nil {
		return nil, fmt.Errorf("%s: %s", WorkspaceFile, yamlMsg(err))
	}
	for _, g := range ws.Packages {
		if _, err := insidePath(strings.TrimPrefix(g, "!")); err != nil {
			return nil, fmt.Errorf("%s: package glob %s: %v", WorkspaceFile, quotePath(g), err)
		}
	}
	out, err := yaml.Marshal(&ws)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Build runs `pnpm install --offline --frozen-lockfile` and `pnpm build`
// in the sandbox, with the store read-only.
func (d *Driver) Build(ctx context.Context, w *toolchain.Workspace) error {
	if err := d.ready(ctx, w); err != nil {
		return err
	}
	scratch := filepath.Join(w.Dir, ScratchDir)
	if err := os.RemoveAll(scratch); err != nil { // a planted symlink goes, not its target
		return err
	}
	if err := os.Mkdir(scratch, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	env := d.env(w, scratch)
	after, err := d.steps(w)
	if err != nil {
		return err
	}
	for _, step := range append([]buildStep{
		{"pnpm install --offline --frozen-lockfile", []string{"install", "--offline", "--frozen-lockfile",
			"--store-dir", d.store(w), "--reporter=append-only"}, nil},
	}, after...) {
		if step.before != nil {
			if err := step.before(); err != nil {
				return err
			}
		}
		cl := &codeLog{w: w}
		err := toolchain.Run(ctx, cl.workspace(), &sandbox.Cmd{
			Args:     append([]string{d.pnpm}, step.args...),
			Env:      env,
			ReadOnly: append([]string{d.store(w)}, d.readOnly()...),
			Limits:   w.Limits,
		})
		if err != nil {
			return cl.fail(ctx, failure.BuildFailed, step.what, err)
		}
	}
	return nil
}

// Artifacts packs dist/ into dst/dist.tar.gz (see PackDir), the single
// artifact of a pnpm build. The build owned the project, so dist/ is read
// through toolchain.Outputs: dist/ itself a symlink, a symlink at any
// component, a file hard-linked to one outside dist/ or more than the
// size budget is refused (BuildFailed).
func (d *Driver) Artifacts(ctx context.Context, w *toolchain.Workspace, dst string) ([]toolchain.Artifact, error) {
	o, err := toolchain.OpenOutputs(w.Dir, 0)
	if err != nil {
		return nil, failure.Wrap(failure.InternalError, err, "cannot open the project")
	}
	defer o.Close()
	if d.pack {
		return packArtifact(ctx, o, dst)
	}
	fi, err := o.Lstat(DistDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, failure.New(failure.NoArtifacts, "dist/ directory not found: the build script must write its output to dist/")
	case err != nil:
		return nil, failure.Wrap(failure.BuildFailed, err, clip(err.Error()))
	case fi.Mode()&fs.ModeSymlink != 0:
		return nil, failure.New(failure.BuildFailed, "dist/ is a symlink: the build must write its output to a dist/ directory")
	case !fi.IsDir():
		return nil, failure.New(failure.NoArtifacts, "dist/ directory not found: the build script must write its output to dist/")
	}
	out := filepath.Join(dst, ArtifactName)
	if err := os.Remove(out); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	size := &countWriter{}
	err = PackDir(o, w.Dir, DistDir, io.MultiWriter(f, h, size))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(out)
		if errors.Is(err, ErrUnsafeEntry) || errors.Is(err, toolchain.ErrUnsafeOutput) {
			return nil, failure.Wrap(failure.BuildFailed, err, clip(err.Error()))
		}
		return nil, failure.Wrap(failure.InternalError, err, "cannot pack dist/")
	}
	return []toolchain.Artifact{{Name: ArtifactName, SHA256: hex.EncodeToString(h.Sum(nil)), Size: size.n}}, nil
}

// countWriter counts the bytes written through it.
type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }
