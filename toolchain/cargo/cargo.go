// Package cargo is the Cargo toolchain driver: Cargo.lock pins every
// dependency (registry checksum, git commit, or a clean git checkout for a
// path dependency outside the project); `cargo fetch --locked` downloads them
// with network, then `cargo build --locked --release --offline` runs in the
// sandbox, and every binary of target/release is an artifact.
package cargo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/provenance"
	"github.com/kettle-build/kettle/sandbox"
	"github.com/kettle-build/kettle/toolchain"
)

// Fixed names of the driver.
const (
	LockfileName = "Cargo.lock"
	// BuildCommand is what the provenance records (the peer's string).
	BuildCommand = "cargo build --locked --release"
)

// Paths that the build sees instead of the per-job directories, so the same
// commit gives the same binaries whatever directory a job builds in.
const (
	remapSource    = "/kettle/src"
	remapCargoHome = "/kettle/cargo"
)

// Driver builds Cargo projects. Use New; a Driver is for one build.
type Driver struct {
	cargo, rustc string                  // resolved binaries (set by Inputs)
	local        map[string]LocalPackage // path dependencies outside the project
}

// New returns a Cargo driver.
func New() toolchain.Driver { return &Driver{} }

func (d *Driver) Name() string         { return "cargo" }
func (d *Driver) Title() string        { return "Cargo" }
func (d *Driver) Lockfile() string     { return LockfileName }
func (d *Driver) BuildCommand() string { return BuildCommand }

// Inputs reads Cargo.lock and the manifests, and hashes cargo and rustc.
func (d *Driver) Inputs(ctx context.Context, w *toolchain.Workspace) (*toolchain.Inputs, error) {
	data, err := toolchain.ReadProjectFile(w.Dir, LockfileName)
	if err != nil {
		return nil, failure.Wrap(failure.InvalidSource, err, "cannot read Cargo.lock")
	}
	lockHash, err := toolchain.LockfileSHA256(w.Dir, LockfileName)
	if err != nil {
		return nil, failure.Wrap(failure.InvalidSource, err, "cannot read Cargo.lock")
	}
	lf, err := ParseLock(data)
	if err != nil {
		return nil, failure.Wrap(failure.InvalidSource, err, err.Error())
	}
	local, err := ReadManifests(w.Dir)
	if err != nil {
		return nil, failure.Wrap(failure.InvalidSource, err, clientMsg(err))
	}
	deps, err := lf.Dependencies(local)
	if err != nil {
		return nil, failure.Wrap(failure.InvalidSource, err, err.Error())
	}
	d.local = local

	cargo, cargoPath, err := toolchain.ResolveTool(ctx, w, "cargo")
	if err != nil {
		return nil, failure.Wrap(failure.InternalError, err, "cargo is not usable on this builder")
	}
	rustc, rustcPath, err := toolchain.ResolveTool(ctx, w, "rustc")
	if err != nil {
		return nil, failure.Wrap(failure.InternalError, err, "rustc is not usable on this builder")
	}
	d.cargo, d.rustc = cargoPath, rustcPath
	return &toolchain.Inputs{
		LockfileSHA256: lockHash,
		Toolchain:      provenance.Toolchain{cargo, rustc},
		Dependencies:   deps,
		MerkleLeaves: func(gitCommit, gitTree string) []string {
			return provenance.CargoMerkleLeaves(gitCommit, gitTree, rustc, cargo, lockHash, deps)
		},
	}, nil
}

// clientMsg keeps the part of an error kettle wrote itself (ErrLockfile
// messages name only project-relative paths).
func clientMsg(err error) string {
	if errors.Is(err, ErrLockfile) {
		return err.Error()
	}
	return "cannot read the Cargo manifests"
}

func (d *Driver) cargoHome(w *toolchain.Workspace) string {
	return filepath.Join(w.CacheDir, "cargo-home")
}

// env is the environment of both phases: cargo's home in the job's cache,
// the exact rustc that was hashed, no colour codes in the log.
func (d *Driver) env(w *toolchain.Workspace) []string {
	// Flags from the server's environment would replace the project's
	// build.rustflags and kettle's path remapping: cargo reads them first.
	env := toolchain.UnsetEnv(w.Env, "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER",
		"CARGO_BUILD_RUSTFLAGS", "RUSTDOCFLAGS", "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET")
	return toolchain.SetEnv(env,
		"CARGO_HOME="+d.cargoHome(w),
		"RUSTC="+d.rustc,
		"CARGO_TARGET_DIR="+filepath.Join(w.Dir, "target"),
		"CARGO_TERM_COLOR=never",
		"CARGO_TERM_PROGRESS_WHEN=never",
		"CARGO_INCREMENTAL=0",
	)
}

// readOnly lists what the commands read outside the project: the Rust
// toolchain and the path dependencies recorded in the provenance.
func (d *Driver) readOnly() []string {
	ro := []string{toolchainRoot(d.cargo)}
	if r := toolchainRoot(d.rustc); r != ro[0] {
		ro = append(ro, r)
	}
	var local []string
	for _, lp := range d.local {
		local = append(local, lp.Dir)
	}
	sort.Strings(local)
	return append(ro, local...)
}

// toolchainRoot is the directory holding bin/<tool> and its lib/.
func toolchainRoot(bin string) string {
	dir := filepath.Dir(bin)
	if filepath.Base(dir) == "bin" {
		return filepath.Dir(dir)
	}
	return dir
}

func (d *Driver) ready() error {
	if d.cargo == "" {
		return errors.New("cargo driver: Inputs must run first")
	}
	return nil
}

// Fetch runs `cargo fetch --locked` with network into the job's CARGO_HOME;
// cargo checks each crate against its Cargo.lock checksum.
func (d *Driver) Fetch(ctx context.Context, w *toolchain.Workspace) error {
	if err := d.ready(); err != nil {
		return err
	}
	if err := os.MkdirAll(d.cargoHome(w), 0o755); err != nil {
		return err
	}
	err := toolchain.Run(ctx, w, &sandbox.Cmd{
		Args:     []string{d.cargo, "fetch", "--locked"},
		Env:      d.env(w),
		Network:  true,
		Writable: []string{d.cargoHome(w)},
		ReadOnly: d.readOnly(),
		Limits:   w.Limits,
	})
	if err != nil {
		return toolchain.CommandFailed(ctx, failure.DependencyFetchFailed, "cargo fetch --locked", err)
	}
	return nil
}

// Build runs `cargo build --locked --release --offline` in the sandbox.
// Source paths are remapped (rustc --remap-path-prefix, added to the
// project's own build.rustflags through --config) so the binaries do not
// depend on the job's directory or cache location.
func (d *Driver) Build(ctx context.Context, w *toolchain.Workspace) error {
	if err := d.ready(); err != nil {
		return err
	}
	flags, _ := json.Marshal([]string{
		"--remap-path-prefix=" + w.Dir + "=" + remapSource,
		"--remap-path-prefix=" + d.cargoHome(w) + "=" + remapCargoHome,
	})
	err := toolchain.Run(ctx, w, &sandbox.Cmd{
		Args:     []string{d.cargo, "build", "--locked", "--release", "--offline", "--config", "build.rustflags=" + string(flags)},
		Env:      d.env(w),
		ReadOnly: append([]string{d.cargoHome(w)}, d.readOnly()...),
		Limits:   w.Limits,
	})
	if err != nil {
		return toolchain.CommandFailed(ctx, failure.BuildFailed, "cargo build", err)
	}
	return nil
}

// Artifacts copies every binary of target/release (regular files directly
// in it, not hidden, with no extension or .exe: the peer's rule).
func (d *Driver) Artifacts(ctx context.Context, w *toolchain.Workspace, dst string) ([]toolchain.Artifact, error) {
	dir := filepath.Join(w.Dir, "target", "release")
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("read target/release: %w", err)
	}
	var out []toolchain.Artifact
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || !e.Type().IsRegular() {
			continue
		}
		if ext := filepath.Ext(name); ext != "" && ext != ".exe" {
			continue
		}
		a, err := toolchain.CopyArtifact(filepath.Join(dir, name), dst)
		if err != nil {
			return nil, fmt.Errorf("copy artifact: %w", err)
		}
		out = append(out, a)
	}
	return out, nil
}
