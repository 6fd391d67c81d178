// Package pipeline turns a project directory into a result directory:
// detect → inputs → fetch → build (sandboxed) → artifacts → provenance →
// manifest → (attest). `kettle build`, `kettle attest` and the service's
// workers all run this one function.
package pipeline

import (
	"context"

	"github.com/kettle-build/kettle/attest"
	"github.com/kettle-build/kettle/depcache"
	"github.com/kettle-build/kettle/events"
	"github.com/kettle-build/kettle/provenance"
	"github.com/kettle-build/kettle/sandbox"
	"github.com/kettle-build/kettle/source/gitid"
	"github.com/kettle-build/kettle/toolchain"
)

// Options configure one build.
type Options struct {
	Dir    string // project directory
	OutDir string // default Dir/kettle-build; recreated
	// CacheDir holds fetched dependencies; default a fresh directory that
	// is removed afterwards.
	CacheDir string
	// DepCache is the dependency cache shared between jobs (nil: none):
	// drivers take what the lockfile pins from it and fill it.
	DepCache *depcache.Cache
	Runner   sandbox.Runner
	Limits   sandbox.Limits
	Events   events.Sink // may be nil
	// Attester, when set, writes evidence.json binding the provenance and
	// Nonce; nil means build only (`kettle build`).
	Attester attest.Attester
	Nonce    []byte
	// BuilderID and BuildTypeBase are this deployment's URIs; the buildType
	// is BuildTypeBase + "<toolchain>@v1".
	BuilderID     string
	BuildTypeBase string
	// Source is the source's identity (commit, tree, dirty), computed once
	// where the source was materialised (source.Tree.Identity); Run
	// requires it. RunDir, for a local directory, computes it over Dir
	// (SourceIdentity: Go code, output directory excluded; git never runs
	// on the project).
	Source *gitid.Identity
	// SourceURI, when set, is the source uri recorded (e.g. the repo_url
	// the service cloned from); else Source.URI (for RunDir, the
	// checkout's remote.origin.url read from .git/config).
	SourceURI string
	// ArchiveSHA256 names the uploaded archive of a non-git source.
	ArchiveSHA256 string
	// Env is the base environment of toolchain commands (PATH, HOME, …);
	// default DefaultEnv().
	Env []string
}

// Result describes a finished build.
type Result struct {
	OutDir     string
	Toolchain  string // driver name
	Lockfile   string
	Statement  *provenance.Statement
	Provenance []byte // exact provenance.json bytes
	Artifacts  []toolchain.Artifact
	Evidence   []byte // evidence.json, nil without an attester
}

// Run builds opts.Dir: detect the toolchain, read its inputs, fetch, build
// in the sandbox, collect artifacts, write provenance.json, build-config/
// and manifest.json, then (with an Attester) evidence.json. Events go to
// opts.Events in docs/api.md order; Run does not emit `complete` (its caller
// does, from the returned error). Every error is a *failure.Error whose
// message names no server path; a failure after detection also returns a
// partial Result naming the Toolchain and Lockfile (for job status and
// metrics).
func Run(ctx context.Context, opts Options) (*Result, error) {
	return run1(ctx, opts, false)
}

// RunDir is Run for a local directory whose identity nothing computed yet
// (`kettle build DIR`): with a nil opts.Source it computes the identity
// once, at the step where Run would use it.
func RunDir(ctx context.Context, opts Options) (*Result, error) {
	return run1(ctx, opts, opts.Source == nil)
}

func run1(ctx context.Context, opts Options, identify bool) (*Result, error) {
	r, err := newRun(opts)
	if err != nil {
		return nil, err
	}
	r.identify = identify
	res, err := r.run(ctx)
	if err != nil {
		return r.partial, classify(ctx, err)
	}
	return res, nil
}
