// Package toolchain detects a project's build system and drives it: one
// Driver per toolchain (cargo, nix, pnpm, gomod). A build is always two
// phases: Fetch (network, only what the lockfile pins, digests checked) and
// Build (in the sandbox, offline).
package toolchain

import (
	"context"

	"github.com/kettle-build/kettle/buildcfg"
	"github.com/kettle-build/kettle/depcache"
	"github.com/kettle-build/kettle/egress"
	"github.com/kettle-build/kettle/provenance"
	"github.com/kettle-build/kettle/sandbox"
)

// Workspace is what a driver works on.
type Workspace struct {
	Dir      string         // project directory (absolute); writable during Build
	CacheDir string         // per-build dependency cache: written by Fetch, read-only in Build
	Runner   sandbox.Runner // runs every toolchain command
	Limits   sandbox.Limits // limits for the build phase
	// Log receives each output line of the toolchain, in order.
	Log func(line string)
	// LogPiece, when set, receives the output instead of Log, with lines
	// longer than MaxLineBytes as pieces marked cont after the first.
	LogPiece func(piece string, cont bool)
	// Env is the base environment (PATH, HOME, LANG…) for commands; drivers
	// add their own variables (CARGO_HOME, GOFLAGS…).
	Env []string
	// Contacted receives every destination a fetch-phase command asked the
	// egress proxy for (Run passes it on as sandbox.Cmd.Contacted).
	Contacted func(egress.Contact)
	// DepCache, when set, is the dependency cache shared between jobs
	// (package depcache): Fetch takes what the lockfile pins from it
	// (checked) and fills it with what it verified; DepLease holds the
	// entries this job uses until the pipeline releases it. nil: the job
	// fetches everything itself.
	DepCache *depcache.Cache
	DepLease *depcache.Lease
}

// Inputs is the driver's plan of the build: everything it knows about what
// goes into it, made from the Lock read once.
type Inputs struct {
	Lock         *Lock                // the lockfile the plan was made from
	Toolchain    provenance.Toolchain // without kettle's own entry
	Dependencies []provenance.Dependency
	Evaluation   *provenance.Evaluation  // nix only
	FlakeInputs  []provenance.FlakeInput // nix only
	// MerkleLeaves are the leaf strings of the input Merkle root in the
	// peer's order for this toolchain, given the source commit and tree.
	MerkleLeaves func(gitCommit, gitTree string) []string
}

// Artifact is one built file copied into the output directory.
type Artifact struct {
	Name   string // file name under artifacts/
	SHA256 string
	Size   int64 // bytes copied
}

// Driver is one toolchain.
type Driver interface {
	Name() string         // "cargo", "nix", "pnpm", "go": buildType and metrics
	Title() string        // "Cargo", "Nix", "Pnpm", "Go": the detect event
	Lockfile() string     // lockfile name in the project root
	BuildCommand() string // recorded as externalParameters.buildCommand
	// Inputs plans the build from lock (ReadLock's, never read again):
	// it parses the lockfile, checks the project and hashes the toolchain
	// binaries. Fetch and Build use what it found.
	Inputs(ctx context.Context, w *Workspace, lock *Lock) (*Inputs, error)
	// Fetch downloads what the lockfile pins into w.CacheDir, with network.
	Fetch(ctx context.Context, w *Workspace) error
	// Build runs the build phase offline in the sandbox.
	Build(ctx context.Context, w *Workspace) error
	// Artifacts copies the outputs into dst and hashes them.
	Artifacts(ctx context.Context, w *Workspace, dst string) ([]Artifact, error)
}

// Cleaner is implemented by drivers that keep per-job state outside the
// project and the cache's plain files (the Nix driver's store, whose
// directories are read-only). The pipeline calls Cleanup once the job is
// over, whatever its outcome.
type Cleaner interface {
	Cleanup(w *Workspace) error
}

// ArtifactRuler is implemented by drivers that collect by a rule worth
// naming when nothing matched it (cargo: binaries of target/release).
type ArtifactRuler interface {
	ArtifactRule() string
}

// ArtifactRule is what the NoArtifacts message says d looked for.
func ArtifactRule(d Driver) string {
	if r, ok := d.(ArtifactRuler); ok {
		return r.ArtifactRule()
	}
	return "nothing to collect"
}

// OptionalLockfile is implemented by drivers whose lockfile may be absent
// (a flake without inputs has no flake.lock). Without one, Inputs returns
// a Lock without Data and the provenance records no lockfile hash.
type OptionalLockfile interface {
	LockfileOptional() bool
}

// LockfileOptional reports whether d builds without its lockfile.
func LockfileOptional(d Driver) bool {
	o, ok := d.(OptionalLockfile)
	return ok && o.LockfileOptional()
}

// Configurable is implemented by drivers that take a build configuration
// (kettle.toml, package buildcfg). The pipeline calls Configure once,
// before Inputs, when the project has one; BuildCommand reflects it after.
// stamp is the source's version and commit for Go's -X flags.
type Configurable interface {
	Configure(c *buildcfg.Config, stamp buildcfg.Stamp) error
}
