// Package cargo is the Cargo toolchain driver. Inputs reads Cargo.lock, the
// manifests and the project's cargo configuration with kettle's own Go code
// (through os.Root: nothing outside the project is read, nothing of it is
// run) and refuses anything that leaves the project. `cargo fetch --locked`
// then downloads what Cargo.lock pins, with network, in a copy of the project
// holding only the manifests and the lockfile (so no project configuration
// can name a program for it); `cargo build --locked --release --offline`
// runs in the sandbox with every configuration key that names a compiler
// overridden; and every binary of target/release is collected without
// following a symlink. See docs/security/cargo.md.
package cargo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

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
	cargo, rustc, rustdoc string // resolved binaries (set by Inputs)
	proj                  *Project
	selection             []string  // kettle.toml [cargo]: --bin=, --package=, feature flags
	cargoSHA              string    // sha256 of the cargo binary (keys the registry layout in the shared cache)
	cached                *cacheUse // what the shared dependency cache gave this job (nil: none)
}

// New returns a Cargo driver.
func New() toolchain.Driver { return &Driver{} }

func (d *Driver) Name() string     { return "cargo" }
func (d *Driver) Title() string    { return "Cargo" }
func (d *Driver) Lockfile() string { return LockfileName }

// ArtifactRule names what Artifacts collects, for the NoArtifacts message.
func (d *Driver) ArtifactRule() string { return "no binary in target/release" }

// Inputs reads Cargo.lock, the manifests and .cargo/config.toml, checks
// vendored crates, and hashes cargo and rustc.
func (d *Driver) Inputs(ctx context.Context, w *toolchain.Workspace, lock *toolchain.Lock) (*toolchain.Inputs, error) {
	proj, err := ReadProject(w.Dir, lock.Data)
	if err != nil {
		return nil, failure.Wrap(failure.InvalidSource, err, clientMsg(err))
	}
	lockHash := lock.SHA256
	deps, err := proj.Lock.Dependencies(proj)
	if err != nil {
		return nil, failure.Wrap(failure.InvalidSource, err, clientMsg(err))
	}
	d.proj = proj

	// `cargo --version` reads .cargo/config.toml of its working directory
	// (and what it includes): the trusted process must not run it in the
	// project.
	neutral := *w
	neutral.Dir = "/"
	cargo, cargoPath, err := resolveTool(ctx, &neutral, "cargo")
	if err != nil {
		return nil, failure.Wrap(failure.InternalError, err, "cargo is not usable on this builder")
	}
	rustc, rustcPath, err := resolveTool(ctx, &neutral, "rustc")
	if err != nil {
		return nil, failure.Wrap(failure.InternalError, err, "rustc is not usable on this builder")
	}
	d.cargo, d.rustc = cargoPath, rustcPath
	d.cargoSHA = cargo.SHA256
	if rd := filepath.Join(filepath.Dir(rustcPath), "rustdoc"); isFile(rd) {
		d.rustdoc = rd
	}
	return &toolchain.Inputs{
		Lock:         lock,
		Toolchain:    provenance.Toolchain{cargo, rustc},
		Dependencies: deps,
		MerkleLeaves: func(gitCommit, gitTree string) []string {
			return MerkleLeaves(gitCommit, gitTree, rustc, cargo, lockHash, deps)
		},
	}, nil
}

// MerkleLeaves are the peer's Cargo leaves (reference §D.1): gitCommit,
// gitTree, rustc hash and version, cargo hash and version, lockfile hash,
// then every dependency uri in order.
func MerkleLeaves(gitCommit, gitTree string, rustc, cargo provenance.Tool, lockfileSHA256 string, deps []provenance.Dependency) []string {
	l := []string{gitCommit, gitTree, rustc.SHA256, rustc.Version, cargo.SHA256, cargo.Version, lockfileSHA256}
	for _, d := range deps {
		l = append(l, d.URI)
	}
	return l
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// clientMsg keeps the part of an error kettle wrote itself (ErrLockfile and
// ErrProject messages name only project-relative paths and the client's
// own strings).
func clientMsg(err error) string {
	if errors.Is(err, ErrLockfile) || errors.Is(err, ErrProject) {
		return err.Error()
	}
	return "cannot read the Cargo project"
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
		"CARGO_BUILD_RUSTFLAGS", "RUSTDOCFLAGS", "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET", "RUSTUP_TOOLCHAIN", "RUSTDOC",
		"CARGO_BUILD_RUSTC", "CARGO_BUILD_RUSTC_WRAPPER", "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER", "CARGO_BUILD_RUSTDOC")
	return toolchain.SetEnv(env,
		"CARGO_HOME="+d.cargoHome(w),
		"RUSTC="+d.rustc,
		"CARGO_TARGET_DIR="+filepath.Join(w.Dir, "target"),
		"CARGO_TERM_COLOR=never",
		"CARGO_TERM_PROGRESS_WHEN=never",
		"CARGO_INCREMENTAL=0",
	)
}

// overrides are the --config arguments of both phases that take every
// configuration key naming a program of the compile away from the project:
// --config beats the environment and every config file. (The fetch reads no
// project config at all; these are for the build, and for the fetch in case
// a config file reaches it anyway.)
func (d *Driver) overrides(ctx context.Context) []string {
	kv := []string{
		"build.rustc=" + tomlString(d.rustc),
		`build.rustc-wrapper=""`,
		`build.rustc-workspace-wrapper=""`,
		"net.git-fetch-with-cli=false",
	}
	if d.rustdoc != "" {
		kv = append(kv, "build.rustdoc="+tomlString(d.rustdoc))
	}
	if d.proj != nil {
		for _, r := range d.proj.Config.CredentialRegistries {
			kv = append(kv, "registries."+r+`.credential-provider="cargo:token"`)
		}
		if d.proj.Config.Linker {
			// A [target.<triple>] key beats a [target.'cfg(..)'] one;
			// "cc" is rustc's own default on Linux.
			if host := hostTriple(ctx, d.rustc); host != "" {
				kv = append(kv, "target."+host+`.linker="cc"`)
			}
		}
	}
	out := make([]string, 0, 2*len(kv))
	for _, s := range kv {
		out = append(out, "--config", s)
	}
	return out
}

// readOnly lists what the commands read outside their working directory:
// the Rust toolchain.
func (d *Driver) readOnly() []string {
	ro := []string{toolchainRoot(d.cargo)}
	if r := toolchainRoot(d.rustc); r != ro[0] {
		ro = append(ro, r)
	}
	return ro
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
	if d.cargo == "" || d.proj == nil {
		return errors.New("cargo driver: Inputs must run first")
	}
	return nil
}

// kettleConfig is CARGO_HOME/config.toml: kettle's, written before the
// fetch and checked before the build.
const kettleConfig = "# kettle's cargo configuration: intentionally empty (see docs/security/cargo.md)\n"

// Fetch runs `cargo fetch --locked` with network into the job's CARGO_HOME,
// in a copy of the project holding only its manifests and Cargo.lock (see
// writeFetchCopy); cargo checks each crate against its Cargo.lock checksum.
// With a shared dependency cache (w.DepCache), sources whose crates are all
// cached are read from it as directory sources and no command runs when
// nothing else is left to fetch; what the fetch downloaded is verified
// again by kettle and added to the cache (depcache.go).
func (d *Driver) Fetch(ctx context.Context, w *toolchain.Workspace) error {
	if err := d.ready(); err != nil {
		return err
	}
	home := d.cargoHome(w)
	if err := os.MkdirAll(home, 0o755); err != nil {
		return err
	}
	if err := writeKettleConfig(home); err != nil {
		return err
	}
	ro := d.readOnly()
	var cacheArgs []string
	if w.DepCache != nil {
		u, err := d.fromCache(w)
		if err != nil {
			return failure.Wrap(failure.InternalError, err, "cannot use the shared dependency cache")
		}
		d.cached = u
		if u.complete() {
			logf(w, "kettle: Fetch: %d crate(s) from the shared dependency cache, 0 downloaded", u.crates)
			return nil
		}
		cacheArgs = u.config(home)
		ro = append(ro, w.DepCache.EntriesDir()) // what the links name
	}
	copyDir := filepath.Join(w.CacheDir, "fetch-src")
	// cargo reads .cargo/config.toml of its working directory's parents:
	// none of them may be the project's.
	if within(copyDir, w.Dir) {
		return failure.New(failure.InternalError, "the dependency cache must not be inside the project")
	}
	if err := os.RemoveAll(copyDir); err != nil {
		return err
	}
	defer os.RemoveAll(copyDir)
	if err := d.proj.writeFetchCopy(copyDir); err != nil {
		return err
	}
	for _, dir := range d.proj.Config.dirs() {
		ro = append(ro, filepath.Join(w.Dir, filepath.FromSlash(dir)))
	}
	args := append([]string{d.cargo, "fetch", "--locked"}, d.overrides(ctx)...)
	args = append(args, d.proj.Config.fetchConfig(w.Dir)...)
	args = append(args, cacheArgs...) // after the project's: a later --config wins
	err := toolchain.Run(ctx, w, &sandbox.Cmd{
		Args:     args,
		Dir:      copyDir,
		Env:      d.env(w),
		Network:  true,
		Writable: []string{home},
		ReadOnly: ro,
		Limits:   w.Limits,
	})
	if err != nil {
		return toolchain.CommandFailed(ctx, failure.DependencyFetchFailed, "cargo fetch --locked", err)
	}
	if err := checkKettleConfig(home); err != nil {
		return err
	}
	if u := d.cached; u != nil {
		if err := checkLinks(home, u); err != nil {
			return failure.Wrap(failure.DependencyFetchFailed, err, "cargo fetch changed the crates kettle took from the shared dependency cache")
		}
		fetched := 0
		for _, g := range u.groups {
			if !g.cached {
				fetched += len(g.pkgs) - g.seeded
			}
		}
		added := d.fill(ctx, w, u)
		logf(w, "kettle: Fetch: %d crate(s) from the shared dependency cache, %d downloaded; %d entries added to the cache", u.crates, fetched, added)
	}
	return nil
}

func writeKettleConfig(home string) error {
	for _, name := range []string{"config", "credentials", "credentials.toml"} {
		if err := os.Remove(filepath.Join(home, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	p := filepath.Join(home, "config.toml")
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return os.WriteFile(p, []byte(kettleConfig), 0o644)
}

// checkKettleConfig refuses a CARGO_HOME whose configuration is not
// kettle's any more (nothing in the fetch should write it).
func checkKettleConfig(home string) error {
	b, err := os.ReadFile(filepath.Join(home, "config.toml"))
	if err != nil || string(b) != kettleConfig {
		return failure.New(failure.DependencyFetchFailed, "cargo fetch changed kettle's cargo configuration")
	}
	for _, name := range []string{"config", "credentials", "credentials.toml"} {
		if _, err := os.Lstat(filepath.Join(home, name)); err == nil {
			return failure.New(failure.DependencyFetchFailed, "cargo fetch changed kettle's cargo configuration")
		}
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
	if err := checkKettleConfig(d.cargoHome(w)); err != nil {
		return err
	}
	flags, _ := json.Marshal([]string{
		"--remap-path-prefix=" + w.Dir + "=" + remapSource,
		"--remap-path-prefix=" + d.cargoHome(w) + "=" + remapCargoHome,
	})
	args := []string{d.cargo, "build", "--locked", "--release", "--offline", "--config", "build.rustflags=" + string(flags)}
	args = append(args, d.selection...)
	args = append(args, d.overrides(ctx)...)
	ro := append([]string{d.cargoHome(w)}, d.readOnly()...)
	if d.cached != nil && w.DepCache != nil {
		args = append(args, d.cached.config(d.cargoHome(w))...)
		ro = append(ro, w.DepCache.EntriesDir()) // the crate links of fromCache name entries there
	}
	err := toolchain.Run(ctx, w, &sandbox.Cmd{
		Args:     args,
		Env:      d.env(w),
		ReadOnly: ro,
		Limits:   w.Limits,
	})
	if err != nil {
		return toolchain.CommandFailed(ctx, failure.BuildFailed, "cargo build", err)
	}
	return nil
}

// Artifacts copies every binary of target/release (regular files directly
// in it, not hidden, with no extension or .exe: the peer's rule), through
// toolchain.Outputs: no symlink is followed at any component (target,
// target/release, the file), only regular files, no hard link to a file
// outside target/release, and a total size budget.
func (d *Driver) Artifacts(ctx context.Context, w *toolchain.Workspace, dst string) ([]toolchain.Artifact, error) {
	const dir = "target/release"
	o, err := toolchain.OpenOutputs(w.Dir, 0)
	if err != nil {
		return nil, fmt.Errorf("open the project: %w", err)
	}
	defer o.Close()
	entries, err := o.ReadDir(dir)
	if err != nil {
		if errors.Is(err, toolchain.ErrUnsafeOutput) {
			return nil, failure.Wrap(failure.BuildFailed, err, "target or target/release is a symlink (or a mount point): artifacts are collected only from the build's own directories")
		}
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, failure.Wrap(failure.BuildFailed, err, "target/release cannot be read")
	}
	if err := o.ScanLinks(dir); err != nil {
		return nil, failure.Wrap(failure.BuildFailed, err, "target/release cannot be read")
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
		a, err := o.Copy(dir+"/"+name, dst, name)
		if err != nil {
			if errors.Is(err, toolchain.ErrUnsafeOutput) {
				// Its message names only the project-relative path.
				msg := strings.TrimPrefix(err.Error(), toolchain.ErrUnsafeOutput.Error()+": ")
				return nil, failure.Wrap(failure.BuildFailed, err, "artifact refused: "+msg)
			}
			return nil, fmt.Errorf("copy artifact: %w", err)
		}
		out = append(out, a)
	}
	return out, nil
}

// hostTriple is rustc's host target ("x86_64-unknown-linux-gnu"), from
// `rustc -vV` of kettle's own toolchain; "" when it cannot be run.
func hostTriple(ctx context.Context, rustc string) string {
	hostCache.Lock()
	defer hostCache.Unlock()
	if h, ok := hostCache.m[rustc]; ok {
		return h
	}
	out, err := exec.CommandContext(ctx, rustc, "-vV").Output()
	if err != nil {
		return ""
	}
	h := ""
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "host: "); ok {
			h = strings.TrimSpace(v)
		}
	}
	if !nameRE.MatchString(strings.ReplaceAll(h, ".", "_")) {
		return ""
	}
	hostCache.m[rustc] = h
	return h
}

var hostCache = struct {
	sync.Mutex
	m map[string]string
}{m: map[string]string{}}
