// Package worker is the build a `kettle serve` or `kettle worker` process
// runs for one job: materialise the source (git clone or archive), run the
// pipeline (sandboxed build, provenance, evidence), pack the result tarball.
// It implements jobs.Builder; the job store feeds it jobs and stores what it
// returns.
package worker

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/kettle-build/kettle/attest"
	"github.com/kettle-build/kettle/bundle"
	"github.com/kettle-build/kettle/depcache"
	"github.com/kettle-build/kettle/events"
	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/jobs"
	"github.com/kettle-build/kettle/pipeline"
	"github.com/kettle-build/kettle/sandbox"
	"github.com/kettle-build/kettle/source"
)

// DefaultTop names the result's top directory when the source gives none.
const DefaultTop = "kettle-build"

// Config configures a Builder.
type Config struct {
	// WorkDir holds one directory per running job (source, dependency
	// cache, outputs), removed when the job ends. Default os.TempDir().
	WorkDir       string
	SourcePolicy  source.Policy
	ExtractLimits source.Limits
	Runner        sandbox.Runner
	Limits        sandbox.Limits
	// Attester makes evidence.json; nil builds without evidence.
	Attester      attest.Attester
	BuilderID     string
	BuildTypeBase string
	// BuildTimeout bounds one job from clone to tarball (0: none).
	BuildTimeout time.Duration
	Logger       *slog.Logger
	// Env is the base environment of toolchain commands (default
	// pipeline.DefaultEnv).
	Env []string
	// DepCache is the dependency cache shared by this process's jobs
	// (nil: every job fetches everything).
	DepCache *depcache.Cache
}

// Builder is the real jobs.Builder.
type Builder struct {
	cfg     Config
	log     *slog.Logger
	clone   func(ctx context.Context, url, ref, workDir string, p source.Policy) (*source.Tree, error)
	extract func(ctx context.Context, archivePath, workDir string, lim source.Limits) (*source.Tree, error)
	run     func(ctx context.Context, opts pipeline.Options) (*pipeline.Result, error)
}

var _ jobs.Builder = (*Builder)(nil)

// New returns a Builder for cfg.
func New(cfg Config) *Builder {
	if cfg.WorkDir == "" {
		cfg.WorkDir = os.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Builder{cfg: cfg, log: cfg.Logger, clone: source.Clone, extract: source.Extract, run: pipeline.Run}
}

// Build implements jobs.Builder.
func (b *Builder) Build(ctx context.Context, job *jobs.Job, sink events.Sink) (*jobs.Outcome, error) {
	log := b.log.With("job", job.ID)
	if b.cfg.BuildTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.cfg.BuildTimeout)
		defer cancel()
	}
	nonce, err := hex.DecodeString(job.Nonce)
	if err != nil || len(nonce) > 16 {
		return nil, failure.New(failure.InvalidSource, "nonce must be 1-16 bytes of hex")
	}
	if err := os.MkdirAll(b.cfg.WorkDir, 0o700); err != nil {
		return nil, failure.Wrap(failure.InternalError, err, "internal error")
	}
	// One directory per job; a leftover of an earlier attempt goes first.
	jobDir := filepath.Join(b.cfg.WorkDir, "job-"+job.ID)
	if err := os.RemoveAll(jobDir); err != nil {
		return nil, failure.Wrap(failure.InternalError, err, "internal error")
	}
	if err := os.Mkdir(jobDir, 0o700); err != nil {
		return nil, failure.Wrap(failure.InternalError, err, "internal error")
	}
	defer func() {
		if err := os.RemoveAll(jobDir); err != nil {
			log.Warn("removing job directory failed", "err", err)
		}
	}()
	srcDir := filepath.Join(jobDir, "src")
	if err := os.Mkdir(srcDir, 0o700); err != nil {
		return nil, failure.Wrap(failure.InternalError, err, "internal error")
	}

	src := job.Source
	var tree *source.Tree
	t0 := time.Now()
	if src.URL != "" {
		tree, err = b.clone(ctx, src.URL, src.Ref, srcDir, b.cfg.SourcePolicy)
		if err != nil {
			return nil, classify(ctx, err, b.cfg.BuildTimeout)
		}
		sink.Emit(events.PhaseEvent(events.Init, events.PhaseClone, t0))
		sink.Emit(events.Msgf(events.Init, "Cloned %s at %s", redactURL(src.URL), tree.Commit))
	} else {
		tree, err = b.extract(ctx, src.ArchivePath, srcDir, b.cfg.ExtractLimits)
		if err != nil {
			return nil, classify(ctx, err, b.cfg.BuildTimeout)
		}
		sink.Emit(events.PhaseEvent(events.Init, events.PhaseExtract, t0))
		sink.Emit(events.Msgf(events.Init, "Extracted %d files", tree.Files))
	}
	log.Info("source ready", "top", tree.Top, "commit", tree.Commit, "files", tree.Files)

	outDir := filepath.Join(jobDir, "out")
	res, err := b.run(ctx, pipeline.Options{
		Dir:           tree.Dir,
		OutDir:        outDir,
		CacheDir:      filepath.Join(jobDir, "cache"),
		DepCache:      b.cfg.DepCache,
		Runner:        b.cfg.Runner,
		Limits:        b.cfg.Limits,
		Events:        sink,
		Attester:      b.cfg.Attester,
		Nonce:         nonce,
		BuilderID:     b.cfg.BuilderID,
		BuildTypeBase: b.cfg.BuildTypeBase,
		Source:        tree.Identity,
		SourceURI:     src.URL,
		ArchiveSHA256: src.ArchiveSHA256,
		Env:           b.cfg.Env, // the job store caps the log (events.Budget)
	})
	var toolchain string
	if res != nil {
		toolchain = res.Toolchain
	}
	if err != nil {
		return &jobs.Outcome{Toolchain: toolchain}, classify(ctx, err, b.cfg.BuildTimeout)
	}
	if res.OutDir != "" {
		outDir = res.OutDir
	}

	top := TopName(tree.Top, src.ArchiveName)
	// The tarball lives beside the job directory: the store takes it over
	// (and removes it) after Build returns, when jobDir is already gone.
	tarPath := filepath.Join(b.cfg.WorkDir, "result-"+job.ID+".tar.gz")
	t0 = time.Now()
	size, err := writeBundle(tarPath, top, outDir, packProgress(sink, t0))
	if err != nil {
		os.Remove(tarPath)
		return &jobs.Outcome{Toolchain: toolchain}, failure.Wrap(failure.InternalError, err, "packing the result failed")
	}
	sink.Emit(events.PhaseEvent(events.VM, events.PhasePack, t0))
	if d := time.Since(t0); d >= time.Second {
		// Only a result slow to pack gets a line; a small one keeps the
		// log as it was (its time is in the phases).
		sink.Emit(events.Msgf(events.VM, "Packed the result: a %s tarball in %.2f s", mib(size), d.Seconds()))
	}
	arts := make([]jobs.Artifact, len(res.Artifacts))
	for i, a := range res.Artifacts {
		arts[i] = jobs.Artifact{Name: a.Name, SHA256: a.SHA256, Size: a.Size}
	}
	return &jobs.Outcome{ResultPath: tarPath, ResultName: top, Toolchain: toolchain, Artifacts: arts}, nil
}

// writeBundle packs dir into p and returns the tarball's size.
func writeBundle(p, top, dir string, progress func(done, total int64)) (int64, error) {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, err
	}
	if err := bundle.WriteWith(f, top, dir, bundle.Options{Progress: progress}); err != nil {
		f.Close()
		return 0, err
	}
	fi, err := f.Stat()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// packProgressEvery is how often packing a large result says how far it
// got; a result packed in less says nothing (its time is in the phases).
var packProgressEvery = 500 * time.Millisecond

// packProgress emits a progress event every packProgressEvery while a
// large result is packed.
func packProgress(sink events.Sink, start time.Time) func(done, total int64) {
	last := start
	return func(done, total int64) {
		if now := time.Now(); now.Sub(last) >= packProgressEvery && done < total {
			last = now
			sink.Emit(events.Msgf(events.VM, "Packing the result: %s of %s", mib(done), mib(total)))
		}
	}
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// classify makes sure a failure has a kind and a client-safe message; a
// context deadline of the build timeout becomes Timeout.
func classify(ctx context.Context, err error, timeout time.Duration) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) && timeout > 0 {
		return failure.Expired(ctx, err, fmt.Sprintf("build timed out after %s", timeout), "build canceled")
	}
	return err
}

// archiveSuffixes are stripped from source_name, first match wins (the
// peer's rule).
var archiveSuffixes = []string{".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tbz2", ".txz", ".tar", ".zip"}

// TopName is the result's top directory (docs/api.md#the-result-tarball): the source's single
// top-level directory, else source_name without its directories and archive
// suffix, else DefaultTop. Names unusable as one path element fall through.
func TopName(treeTop, sourceName string) string {
	if ok(treeTop) {
		return treeTop
	}
	n := sourceName
	if i := strings.LastIndexAny(n, `/\`); i >= 0 {
		n = n[i+1:]
	}
	for _, suf := range archiveSuffixes {
		if strings.HasSuffix(n, suf) {
			n = strings.TrimSuffix(n, suf)
			break
		}
	}
	if ok(n) {
		return n
	}
	return DefaultTop
}

func ok(name string) bool {
	// A result top named .git would land as repository metadata where a
	// client unpacks it.
	if name == "" || name == "." || name == ".." || len(name) > 255 || path.Base(name) != name || strings.EqualFold(name, ".git") {
		return false
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || r == '/' || r == '\\' {
			return false
		}
	}
	return true
}

// redactURL drops credentials from a repository URL before it reaches a
// log event.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	u.User = nil
	return u.String()
}
