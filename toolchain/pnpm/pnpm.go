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
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

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
	pnpm, node string // resolved binaries (set by Inputs)
}

// New returns a pnpm driver.
func New() toolchain.Driver { return &Driver{} }

func (d *Driver) Name() string         { return "pnpm" }
func (d *Driver) Title() string        { return "Pnpm" }
func (d *Driver) Lockfile() string     { return LockfileName }
func (d *Driver) BuildCommand() string { return BuildCommand }

// Inputs parses pnpm-lock.yaml and hashes pnpm and node.
func (d *Driver) Inputs(ctx context.Context, w *toolchain.Workspace) (*toolchain.Inputs, error) {
	data, err := toolchain.ReadProjectFile(w.Dir, LockfileName)
	if err != nil {
		return nil, failure.Wrap(failure.InvalidSource, err, "cannot read pnpm-lock.yaml (it must be a regular file in the project root)")
	}
	lock, err := ParseLock(data)
	if err != nil {
		return nil, failure.Wrap(failure.InvalidSource, err, err.Error())
	}
	sum := sha256.Sum256(data)
	lockHash := hex.EncodeToString(sum[:])

	pnpm, pnpmPath, err := toolchain.ResolveTool(ctx, w, "pnpm")
	if err != nil {
		return nil, toolMissing("pnpm", err)
	}
	node, nodePath, err := toolchain.ResolveTool(ctx, w, "node")
	if err != nil {
		return nil, toolMissing("node", err)
	}
	d.pnpm, d.node = pnpmPath, nodePath
	deps := lock.Dependencies
	return &toolchain.Inputs{
		LockfileSHA256: lockHash,
		Toolchain:      provenance.Toolchain{pnpm, node},
		Dependencies:   deps,
		MerkleLeaves: func(gitCommit, gitTree string) []string {
			return MerkleLeaves(gitCommit, gitTree, node, pnpm, lockHash, deps)
		},
	}, nil
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
	_, err := d.Inputs(ctx, w)
	return err
}

func (d *Driver) store(w *toolchain.Workspace) string { return filepath.Join(w.CacheDir, "pnpm-store") }

// env is the environment of pnpm's commands: home and caches in a directory
// of the job, no update check, and pnpm itself never switching to another
// pnpm version named by package.json's packageManager field (the recorded
// binary is the one that runs). The side-effects cache would write into
// the store, which is read-only during the build.
func (d *Driver) env(w *toolchain.Workspace, home string) []string {
	return toolchain.SetEnv(w.Env,
		"HOME="+home,
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
	log := c.w.Log
	cw.Log = func(line string) {
		if log != nil {
			log(line)
		}
		if m := errCode.FindString(line); m != "" && len(c.codes) < 3 {
			for _, have := range c.codes {
				if have == m {
					return
				}
			}
			c.codes = append(c.codes, m)
		}
	}
	return &cw
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
// store, in a directory of the job's cache holding only the project's
// pnpm-lock.yaml (and pnpm-workspace.yaml and .npmrc when present): the
// project is not touched, so its node_modules is created by the offline
// install, which runs the dependencies' lifecycle scripts in the sandbox.
// No code from the project or its dependencies runs while the network is
// on: .pnpmfile.cjs and lifecycle scripts (pnpm fetch would run an install
// script such as esbuild's postinstall) are ignored.
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
	for _, name := range fetchFiles {
		data, err := toolchain.ReadProjectFile(w.Dir, name)
		if errors.Is(err, fs.ErrNotExist) && name != LockfileName {
			continue
		}
		if err != nil {
			return failure.Wrap(failure.InvalidSource, err, "cannot read "+name+" (it must be a regular file in the project root)")
		}
		if err := os.WriteFile(filepath.Join(proj, name), data, 0o644); err != nil {
			return err
		}
	}
	cl := &codeLog{w: w}
	err := toolchain.Run(ctx, cl.workspace(), &sandbox.Cmd{
		Args: []string{d.pnpm, "fetch", "--frozen-lockfile", "--ignore-pnpmfile", "--ignore-scripts",
			"--store-dir", d.store(w), "--reporter=append-only"},
		Dir:      proj,
		Env:      d.env(w, home),
		Network:  true,
		Writable: []string{w.CacheDir},
		ReadOnly: d.readOnly(),
		Limits:   w.Limits,
	})
	if err != nil {
		return cl.fail(ctx, failure.DependencyFetchFailed, "pnpm fetch --frozen-lockfile", err)
	}
	return nil
}

// fetchFiles are the project files pnpm fetch reads.
var fetchFiles = []string{LockfileName, "pnpm-workspace.yaml", ".npmrc"}

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
	for _, step := range []struct {
		what string
		args []string
	}{
		{"pnpm install --offline --frozen-lockfile", []string{"install", "--offline", "--frozen-lockfile",
			"--store-dir", d.store(w), "--reporter=append-only"}},
		{"pnpm build", []string{"build"}},
	} {
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
// artifact of a pnpm build.
func (d *Driver) Artifacts(ctx context.Context, w *toolchain.Workspace, dst string) ([]toolchain.Artifact, error) {
	root, err := os.OpenRoot(w.Dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	fi, err := root.Lstat(DistDir)
	if err != nil || !fi.IsDir() {
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
	err = PackDir(root, DistDir, io.MultiWriter(f, h))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(out)
		if errors.Is(err, ErrUnsafeEntry) {
			return nil, failure.Wrap(failure.BuildFailed, err, err.Error())
		}
		return nil, failure.Wrap(failure.InternalError, err, "cannot pack dist/")
	}
	return []toolchain.Artifact{{Name: ArtifactName, SHA256: hex.EncodeToString(h.Sum(nil))}}, nil
}
