// Package nix is the Nix flake driver. Inputs evaluates the flake's default
// package (`nix derivation show --recursive`; `nix show-derivation -r` on
// Nix before 2.15): its fixed-output derivations are the fetched inputs, the
// flake.lock root inputs are recorded with their narHash. Fetch realises the
// fixed-output derivations with network (Nix checks each against its
// hash); Build runs `nix build` offline; the executables in bin/ of the
// default package's outputs are the artifacts.
package nix

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/provenance"
	"github.com/kettle-build/kettle/sandbox"
	"github.com/kettle-build/kettle/toolchain"
)

// Fixed names of the driver.
const (
	LockfileName = "flake.lock"
	// BuildCommand is recorded in the provenance: the peer's command with
	// --json, which every Nix version has, instead of --print-out-paths.
	BuildCommand = "nix build --no-link --json --extra-experimental-features nix-command --extra-experimental-features flakes"
)

// commonFlags go on every nix command: flakes on, the lockfile is never
// written or updated (like cargo --locked), no import-from-derivation during
// evaluation (that would build during evaluation, outside the build phase),
// and no binary cache (this builder builds everything it attests).
var commonFlags = []string{
	"--extra-experimental-features", "nix-command",
	"--extra-experimental-features", "flakes",
	"--no-write-lock-file", "--no-update-lock-file",
	"--option", "allow-import-from-derivation", "false",
	"--option", "substituters", "",
}

// Driver builds Nix flakes. Use New; a Driver is for one build.
type Driver struct {
	nix      string   // resolved nix binary
	newCLI   bool     // `nix derivation show` (Nix ≥ 2.15)
	outPaths []string // outputs of the default package, from evaluation
	fetches  []Fetch
}

// New returns a Nix driver.
func New() toolchain.Driver { return &Driver{} }

func (d *Driver) Name() string         { return "nix" }
func (d *Driver) Title() string        { return "Nix" }
func (d *Driver) Lockfile() string     { return LockfileName }
func (d *Driver) BuildCommand() string { return BuildCommand }

var versionRe = regexp.MustCompile(`(\d+)\.(\d+)`)

// newCLI reports whether `nix derivation show` exists (Nix 2.15+).
func hasDerivationShow(version string) bool {
	m := versionRe.FindStringSubmatch(version)
	if m == nil {
		return true
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	return major > 2 || major == 2 && minor >= 15
}

// Inputs reads flake.lock and evaluates the default package.
func (d *Driver) Inputs(ctx context.Context, w *toolchain.Workspace) (*toolchain.Inputs, error) {
	lock, err := toolchain.ReadProjectFile(w.Dir, LockfileName)
	if err != nil {
		return nil, failure.Wrap(failure.InvalidSource, err, "cannot read flake.lock")
	}
	lockHash, err := toolchain.LockfileSHA256(w.Dir, LockfileName)
	if err != nil {
		return nil, failure.Wrap(failure.InvalidSource, err, "cannot read flake.lock")
	}
	flakeInputs, err := FlakeInputs(lock)
	if err != nil {
		return nil, failure.Wrap(failure.InvalidSource, err, err.Error())
	}
	tool, path, err := toolchain.ResolveTool(ctx, w, "nix")
	if err != nil {
		return nil, failure.Wrap(failure.InternalError, err, "nix is not usable on this builder")
	}
	d.nix, d.newCLI = path, hasDerivationShow(tool.Version)

	// The default package alone gives the output paths; recursively, every
	// derivation it needs.
	top, err := d.show(ctx, w, false)
	if err != nil {
		return nil, err
	}
	all, err := d.show(ctx, w, true)
	if err != nil {
		return nil, err
	}
	d.outPaths = nil
	for _, drv := range top.Derivations {
		for _, o := range drv.Outputs {
			if o.Path != "" {
				d.outPaths = append(d.outPaths, o.Path)
			}
		}
	}
	sort.Strings(d.outPaths)
	if len(d.outPaths) == 0 {
		return nil, failure.New(failure.BuildFailed, "the flake's default package has no output paths known before the build")
	}
	fetches, err := all.Fetches()
	if err != nil {
		return nil, failure.Wrap(failure.InvalidSource, err, err.Error())
	}
	d.fetches = fetches
	deps := make([]provenance.Dependency, 0, len(fetches))
	for _, f := range fetches {
		deps = append(deps, f.Dependency())
	}
	return &toolchain.Inputs{
		LockfileSHA256: lockHash,
		Toolchain:      provenance.Toolchain{tool},
		Dependencies:   deps,
		Evaluation:     &provenance.Evaluation{DerivationCount: len(all.Derivations), FetchCount: len(fetches)},
		FlakeInputs:    flakeInputs,
		MerkleLeaves: func(gitCommit, gitTree string) []string {
			return MerkleLeaves(gitCommit, gitTree, lockHash, fetches, tool)
		},
	}, nil
}

// show evaluates the flake's default package in this process. Evaluation
// is pure (flakes) and may fetch the inputs flake.lock pins by narHash; it
// cannot build (no import-from-derivation).
func (d *Driver) show(ctx context.Context, w *toolchain.Workspace, recursive bool) (*Graph, error) {
	args := []string{"show-derivation"}
	if d.newCLI {
		args = []string{"derivation", "show"}
	}
	if recursive {
		args = append(args, "--recursive")
	}
	args = append(append(args, commonFlags...), ".")
	cmd := exec.CommandContext(ctx, d.nix, args...)
	cmd.Dir, cmd.Env = w.Dir, d.env(w)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, toolchain.CommandFailed(ctx, failure.BuildFailed, "nix evaluation", err)
		}
		for _, l := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
			w.Log(l)
		}
		return nil, failure.Wrap(failure.BuildFailed, err, "nix evaluation of the flake failed (see the build log)")
	}
	g, err := ParseGraph(stdout.Bytes())
	if err != nil {
		return nil, failure.Wrap(failure.InternalError, err, "cannot read nix's derivation output")
	}
	return g, nil
}

// home is the per-job directory for Nix's caches and state (~/.cache/nix
// and friends): the real home is not writable in the sandbox, and jobs must
// not share caches.
func (d *Driver) home(w *toolchain.Workspace) string { return filepath.Join(w.CacheDir, "nix-home") }

func (d *Driver) env(w *toolchain.Workspace) []string {
	h := d.home(w)
	os.MkdirAll(h, 0o755)
	return toolchain.SetEnv(w.Env, "XDG_CACHE_HOME="+h+"/cache", "XDG_STATE_HOME="+h+"/state",
		"XDG_DATA_HOME="+h+"/data", "XDG_CONFIG_HOME="+h+"/config")
}

func (d *Driver) ready() error {
	if d.nix == "" {
		return errors.New("nix driver: Inputs must run first")
	}
	return nil
}

// Fetch realises the fixed-output derivations with network; Nix checks
// every output against the hash recorded in the provenance.
func (d *Driver) Fetch(ctx context.Context, w *toolchain.Workspace) error {
	if err := d.ready(); err != nil {
		return err
	}
	if len(d.fetches) == 0 {
		return nil
	}
	args := []string{d.nix, "build", "--no-link"}
	args = append(args, commonFlags...)
	for _, f := range d.fetches {
		args = append(args, d.installable(f.DrvPath))
	}
	err := toolchain.Run(ctx, w, &sandbox.Cmd{
		Args:     args,
		Env:      d.env(w),
		Writable: []string{d.home(w)},
		Network:  true,
		Nix:      true,
		Limits:   w.Limits,
	})
	if err != nil {
		return toolchain.CommandFailed(ctx, failure.DependencyFetchFailed, "nix fetch of fixed-output derivations", err)
	}
	return nil
}

// installable names a .drv's outputs on the command line.
func (d *Driver) installable(drvPath string) string {
	if d.newCLI {
		return drvPath + "^*"
	}
	return drvPath
}

// Build runs `nix build` offline. Nix writes the outputs to /nix/store
// (directly as root, or through the daemon), so the command asks the
// sandbox for the machine's Nix store (sandbox.Cmd.Nix).
func (d *Driver) Build(ctx context.Context, w *toolchain.Workspace) error {
	if err := d.ready(); err != nil {
		return err
	}
	args := []string{d.nix, "build", "--no-link", "--json", "--offline", "--print-build-logs"}
	args = append(append(args, commonFlags...), ".")
	err := toolchain.Run(ctx, w, &sandbox.Cmd{
		Args:     args,
		Env:      d.env(w),
		Writable: []string{d.home(w)},
		Nix:      true,
		Limits:   w.Limits,
	})
	if err != nil {
		return toolchain.CommandFailed(ctx, failure.BuildFailed, "nix build", err)
	}
	return nil
}

// Artifacts copies the executables in bin/ of the default package's outputs
// (the paths evaluation predicted, not anything the build printed). A
// symlink is followed only when it stays in the Nix store.
func (d *Driver) Artifacts(ctx context.Context, w *toolchain.Workspace, dst string) ([]toolchain.Artifact, error) {
	byName := map[string]toolchain.Artifact{}
	for _, out := range d.outPaths {
		bin := filepath.Join(out, "bin")
		entries, err := os.ReadDir(bin)
		if errors.Is(err, os.ErrNotExist) {
			if _, err := os.Stat(out); err != nil {
				return nil, fmt.Errorf("output %s missing after the build: %w", filepath.Base(out), err)
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			p := filepath.Join(bin, e.Name())
			real, err := filepath.EvalSymlinks(p)
			if err != nil || !strings.HasPrefix(real, StoreDir+"/") {
				continue
			}
			fi, err := os.Stat(real)
			if err != nil || !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
				continue
			}
			a, err := toolchain.CopyArtifactAs(real, dst, e.Name())
			if err != nil {
				return nil, fmt.Errorf("copy artifact: %w", err)
			}
			byName[a.Name] = a
		}
	}
	out := make([]toolchain.Artifact, 0, len(byName))
	for _, a := range byName {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
