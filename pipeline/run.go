package pipeline

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kettle-build/kettle/attest"
	"github.com/kettle-build/kettle/egress"
	"github.com/kettle-build/kettle/events"
	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/internal/rmtree"
	"github.com/kettle-build/kettle/provenance"
	"github.com/kettle-build/kettle/sandbox"
	"github.com/kettle-build/kettle/source/gitid"
	"github.com/kettle-build/kettle/toolchain"
)

// Defaults of this project's own URIs (docs/provenance.md: not the peer's).
const (
	DefaultBuilderID     = "https://kettle.build/builder/v1"
	DefaultBuildTypeBase = "https://kettle.build/buildtypes/"
	// OutDirName is the result directory inside the project by default.
	OutDirName = "kettle-build"
)

// KettleVersion is recorded as the kettle tool's version in provenance;
// cmd/kettle sets it to the binary's version.
var KettleVersion = "0.0.0-dev"

// InsecureWarning is logged (attest event) when the evidence comes from the
// insecure attester.
const InsecureWarning = "WARNING: no TEE on this machine: evidence.json carries no hardware evidence " +
	"(platform insecure); verifiers reject it unless --allow-insecure is given"

// DefaultEnv is the base environment of toolchain commands when
// Options.Env is empty: this process's PATH, HOME and rustup variables, a
// UTF-8 C locale and UTC. Nothing else leaks from the server's environment;
// not TMPDIR either: the server's names a host directory that the sandbox
// does not have (tools there use its private /tmp).
func DefaultEnv() []string {
	env := []string{"LANG=C.UTF-8", "LC_ALL=C.UTF-8", "TZ=UTC", "TERM=dumb"}
	for _, k := range []string{"PATH", "HOME", "USER", "RUSTUP_HOME", "RUSTUP_TOOLCHAIN", "NIX_PATH", "NIX_REMOTE"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	if toolchain.Getenv(env, "PATH") == "" {
		env = append(env, "PATH=/usr/local/bin:/usr/bin:/bin")
	}
	return env
}

type run struct {
	fetched  hostSet // destinations of the fetch phase's egress proxy
	opts     Options
	identify bool // RunDir: compute the source identity of opts.Dir
	emit     func(events.Event)
	partial  *Result // what is known so far, returned with an error
}

func newRun(opts Options) (*run, error) {
	if opts.Dir == "" {
		return nil, failure.New(failure.InternalError, "no project directory")
	}
	if opts.Runner == nil {
		return nil, failure.New(failure.InternalError, "no sandbox runner configured")
	}
	if len(opts.Nonce) > 16 {
		return nil, failure.New(failure.InvalidSource, "nonce must be 1-16 bytes")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err == nil {
		dir, err = filepath.EvalSymlinks(dir)
	}
	if err != nil {
		return nil, failure.Wrap(failure.InvalidSource, err, "project directory not found")
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nil, failure.New(failure.InvalidSource, "project directory not found")
	}
	opts.Dir = dir
	if opts.OutDir == "" {
		opts.OutDir = filepath.Join(dir, OutDirName)
	} else if opts.OutDir, err = filepath.Abs(opts.OutDir); err != nil {
		return nil, failure.Wrap(failure.InternalError, err, "bad output directory")
	}
	// OutDir is deleted first: it must not hold the project.
	if out := filepath.Clean(opts.OutDir); out == dir || strings.HasPrefix(dir, out+string(filepath.Separator)) || out == "/" {
		return nil, failure.New(failure.InternalError, "the output directory must not contain the project")
	}
	if opts.BuilderID == "" {
		opts.BuilderID = DefaultBuilderID
	}
	if opts.BuildTypeBase == "" {
		opts.BuildTypeBase = DefaultBuildTypeBase
	}
	if len(opts.Env) == 0 {
		opts.Env = DefaultEnv()
	}
	sink := opts.Events
	if sink == nil {
		sink = events.Discard
	}
	var mu sync.Mutex // toolchain output may arrive from another goroutine
	return &run{opts: opts, emit: func(e events.Event) {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range events.SplitEvent(e, 0) { // no event too large to arrive whole
			sink.Emit(p)
		}
	}}, nil
}

func (r *run) msg(t events.Type, format string, args ...any) {
	r.emit(events.Msgf(t, format, args...))
}

// phase emits the end of a phase begun at start (events.Phase).
func (r *run) phase(t events.Type, name string, start time.Time) {
	r.emit(events.PhaseEvent(t, name, start))
}

func (r *run) run(ctx context.Context) (*Result, error) {
	o := r.opts
	t0 := time.Now()
	cfg, projDir, err := loadConfig(o.Dir)
	if err != nil {
		return nil, err
	}
	drv, err := Detect(projDir)
	if err != nil {
		return nil, err
	}
	r.partial = &Result{OutDir: o.OutDir, Toolchain: drv.Name(), Lockfile: drv.Lockfile()}
	r.emit(events.Detected(drv.Name(), drv.Title()))

	if err := recreate(o.OutDir); err != nil {
		return nil, failure.Wrap(failure.InternalError, err, "cannot create the output directory")
	}
	src, err := sourceIdentity(ctx, o, r.identify)
	if err != nil {
		return nil, err
	}
	if src.Dirty {
		r.msg(events.Init, "Warning: the working tree has uncommitted changes: it differs from commit %s, so the provenance records no commit, only the git tree of what was built", src.HeadCommit)
	}
	if cfg != nil {
		if err := r.configure(drv, cfg, src); err != nil {
			return nil, err
		}
	}
	// The one read of the lockfile: the driver plans from these bytes and
	// the result records them. Data stays nil for a driver that builds
	// without its lockfile (a Nix flake without inputs): no lockfileHash,
	// no build-config/.
	lock, err := toolchain.ReadLock(projDir, drv)
	if err != nil {
		return nil, err
	}
	r.phase(events.Detect, events.PhaseDetect, t0)

	cacheDir := o.CacheDir
	if cacheDir == "" {
		if cacheDir, err = os.MkdirTemp("", "kettle-cache-"); err != nil {
			return nil, failure.Wrap(failure.InternalError, err, "cannot create the dependency cache")
		}
		defer rmtree.RemoveAll(cacheDir)
	} else if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, failure.Wrap(failure.InternalError, err, "cannot create the dependency cache")
	}
	// Toolchains print absolute paths; the log shows them relative to the
	// project (and the cache) so no server path reaches a client. The
	// cache comes first: at one position the earlier pattern wins, and the
	// cache may sit beside or inside the project.
	hide := strings.NewReplacer(cacheDir, "$KETTLE_CACHE", o.Dir+"/", "./", o.Dir, ".")
	lines := &lineOut{emit: func(l string, cont bool) {
		r.emit(events.Event{Type: events.Build, Msg: hide.Replace(l), Cont: cont})
	}}
	w := &toolchain.Workspace{
		Dir:       projDir,
		CacheDir:  cacheDir,
		Runner:    o.Runner,
		Limits:    o.Limits,
		Log:       lines.log,
		LogPiece:  lines.piece,
		Env:       o.Env,
		Contacted: r.fetched.add,
	}
	if o.DepCache != nil {
		w.DepCache, w.DepLease = o.DepCache, o.DepCache.NewLease()
		defer w.DepLease.Release()
	}
	if c, ok := drv.(toolchain.Cleaner); ok {
		defer c.Cleanup(w)
	}
	t0 = time.Now()
	in, err := drv.Inputs(ctx, w, lock)
	if err != nil {
		return nil, err
	}
	r.phase(events.Detect, events.PhaseEvaluate, t0)
	self, err := kettleTool()
	if err != nil {
		return nil, failure.Wrap(failure.InternalError, err, "cannot hash the kettle binary")
	}

	start := time.Now()
	meta := provenance.Metadata{InvocationID: invocationID(start), StartedOn: timestamp(start)}

	r.msg(events.Build, "Fetching dependencies pinned by %s", drv.Lockfile())
	t0 = time.Now()
	err = drv.Fetch(ctx, w)
	if hs := r.fetched.list(); len(hs) > 0 {
		r.msg(events.Build, "Fetch contacted: %s", fetchHostsLine(hs))
	} else if err == nil && o.DepCache != nil {
		r.msg(events.Build, "Fetch contacted: no host")
	}
	if err != nil {
		return nil, classifyAs(ctx, failure.DependencyFetchFailed, "dependency fetch failed", err)
	}
	r.phase(events.Build, events.PhaseFetch, t0)
	r.msg(events.Build, "Running `%s`", drv.BuildCommand())
	t0 = time.Now()
	err = drv.Build(ctx, w)
	if err != nil {
		return nil, classifyAs(ctx, failure.BuildFailed, "build failed", err)
	}
	r.phase(events.Build, events.PhaseBuild, t0)
	r.msg(events.Build, "Build command finished")
	t0 = time.Now()
	// The build could write the output directory when it lies inside the
	// project (kettle build DIR): a planted symlink there would make this
	// process write provenance.json or artifacts through it. Nothing of the
	// build runs any more, so a fresh directory is one it never saw.
	if err := recreate(o.OutDir); err != nil {
		return nil, failure.Wrap(failure.InternalError, err, "cannot create the output directory")
	}

	artDir := filepath.Join(o.OutDir, "artifacts")
	if err := os.MkdirAll(artDir, 0o755); err != nil {
		return nil, failure.Wrap(failure.InternalError, err, "cannot create the artifacts directory")
	}
	arts, err := drv.Artifacts(ctx, w, artDir)
	if err != nil {
		return nil, classifyAs(ctx, failure.BuildFailed, "cannot collect the artifacts", err)
	}
	if len(arts) == 0 {
		return nil, failure.New(failure.NoArtifacts, "the build produced no artifacts (%s)", toolchain.ArtifactRule(drv))
	}
	sort.Slice(arts, func(i, j int) bool { return arts[i].Name < arts[j].Name })
	r.phase(events.Build, events.PhaseCollect, t0)
	t0 = time.Now()
	finished := timestamp(time.Now())
	meta.FinishedOn = &finished

	root, err := provenance.MerkleRoot(in.MerkleLeaves(src.Commit, src.Tree))
	if err != nil {
		return nil, failure.Wrap(failure.InternalError, err, "cannot compute the input Merkle root")
	}
	st := r.statement(drv, in, src, self, arts, root, meta)
	if cfg != nil {
		st.Predicate.BuildDefinition.InternalParameters.BuildConfig, _ = json.Marshal(cfg)
	}
	provBytes, err := provenance.Marshal(st)
	if err != nil {
		return nil, failure.Wrap(failure.InternalError, err, "cannot write provenance.json")
	}
	if err := writeFile(filepath.Join(o.OutDir, "provenance.json"), provBytes); err != nil {
		return nil, err
	}
	if lock.Data != nil {
		if err := writeFile(filepath.Join(o.OutDir, "build-config", filepath.Base(lock.Name)), lock.Data); err != nil {
			return nil, err
		}
	}
	manifest, err := provenance.MarshalManifest(provenance.NewManifest(st))
	if err != nil {
		return nil, failure.Wrap(failure.InternalError, err, "cannot write manifest.json")
	}
	if err := writeFile(filepath.Join(o.OutDir, "manifest.json"), manifest); err != nil {
		return nil, err
	}
	r.phase(events.Provenance, events.PhaseProvenance, t0)
	r.msg(events.Provenance, "Wrote provenance.json (input Merkle root %s)", root)

	res := &Result{
		OutDir:     o.OutDir,
		Toolchain:  drv.Name(),
		Lockfile:   drv.Lockfile(),
		Statement:  st,
		Provenance: provBytes,
		Artifacts:  arts,
	}
	if o.Attester != nil {
		t0 = time.Now()
		ev, err := r.attest(ctx, provBytes)
		if err != nil {
			return nil, err
		}
		if err := writeFile(filepath.Join(o.OutDir, "evidence.json"), ev); err != nil {
			return nil, err
		}
		r.phase(events.Attest, events.PhaseAttest, t0)
		r.msg(events.Attest, "Attestation complete! evidence.json written")
		res.Evidence = ev
	}
	return res, nil
}

// attest runs only after the build phase ended, in this process: nothing
// the build ran can reach the attester.
func (r *run) attest(ctx context.Context, prov []byte) ([]byte, error) {
	a := r.opts.Attester
	platform := a.Platform()
	r.msg(events.Attest, "Running on platform: %s", platform)
	if platform == "insecure" {
		r.msg(events.Attest, "%s", InsecureWarning)
	} else if w := attest.WarningOf(a); w != "" {
		r.msg(events.Attest, "WARNING: %s", w)
	}
	rd := attest.ReportData(prov, r.opts.Nonce)
	r.msg(events.Attest, "Attesting provenance.json (checksum %s)", hex.EncodeToString(rd[:32]))
	ev, err := a.Attest(ctx, rd)
	if err != nil {
		return nil, classifyAs(ctx, failure.AttestationFailed, "attestation failed", err)
	}
	return ev, nil
}

func (r *run) statement(drv toolchain.Driver, in *toolchain.Inputs, src *gitid.Identity, self provenance.Tool,
	arts []toolchain.Artifact, root string, meta provenance.Metadata) *provenance.Statement {
	o := r.opts
	digest := provenance.Digest{"gitCommit": src.Commit, "gitTree": src.Tree}
	if o.ArchiveSHA256 != "" {
		digest["sha256"] = o.ArchiveSHA256
	}
	tools := append(append(provenance.Toolchain{}, in.Toolchain...), self)
	deps := in.Dependencies
	if deps == nil {
		deps = []provenance.Dependency{}
	}
	subjects := make([]provenance.Subject, 0, len(arts))
	for _, a := range arts {
		subjects = append(subjects, provenance.Subject{Digest: provenance.Digest{"sha256": a.SHA256}, Name: a.Name})
	}
	ip := provenance.InternalParameters{
		Evaluation:  in.Evaluation,
		FlakeInputs: in.FlakeInputs,
		Toolchain:   tools,
	}
	if in.Lock != nil && in.Lock.SHA256 != "" {
		ip.LockfileHash = provenance.Digest{"sha256": in.Lock.SHA256}
	}
	if !sandbox.Isolated(o.Runner) {
		ip.Sandbox = o.Runner.Name() // "none"
	}
	ip.FetchHosts = r.fetched.list()
	return &provenance.Statement{
		Type: provenance.StatementType,
		Predicate: provenance.Predicate{
			BuildDefinition: provenance.BuildDefinition{
				BuildType: o.BuildTypeBase + drv.Name() + "@v1",
				ExternalParameters: provenance.ExternalParameters{
					BuildCommand: drv.BuildCommand(),
					Source:       provenance.Source{Digest: digest, URI: src.URI},
				},
				InternalParameters:   ip,
				ResolvedDependencies: deps,
			},
			RunDetails: provenance.RunDetails{
				Builder:    provenance.Builder{ID: o.BuilderID},
				Byproducts: []provenance.Byproduct{{Digest: provenance.Digest{"sha256": root}, Name: provenance.MerkleRootName}},
				Metadata:   meta,
			},
		},
		PredicateType: provenance.PredicateType,
		Subject:       subjects,
	}
}

var kettleSelf = sync.OnceValues(func() (provenance.Tool, error) {
	exe, err := os.Executable()
	if err != nil {
		return provenance.Tool{}, err
	}
	sum, err := toolchain.SHA256File(exe)
	if err != nil {
		return provenance.Tool{}, err
	}
	return provenance.Tool{Name: "kettle", SHA256: sum}, nil
})

func kettleTool() (provenance.Tool, error) {
	t, err := kettleSelf()
	t.Version = KettleVersion
	return t, err
}

// invocationID is the peer's build-YYYYMMDD-HHMMSS-<8 hex>.
func invocationID(t time.Time) string {
	var b [4]byte
	rand.Read(b[:])
	return "build-" + t.UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}

// timestamp is RFC 3339 UTC with microseconds and "+00:00", as the peer.
func timestamp(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000000") + "+00:00"
}

// lineOut emits toolchain output lines as `build` events. A line too long
// for one event (events.Split) goes out as several, the later ones marked
// as continuations, together. It caps nothing: the log's one cap is the
// consumer's events.Budget (the job log's, or `kettle build`'s).
type lineOut struct {
	mu   sync.Mutex
	emit func(msg string, cont bool)
}

func (c *lineOut) log(line string) { c.piece(line, false) }

func (c *lineOut) piece(s string, cont bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, p := range events.Split(s, 0) {
		c.emit(p, cont || i > 0)
	}
}

func recreate(dir string) error {
	if err := rmtree.RemoveAll(dir); err != nil {
		return err
	}
	return os.MkdirAll(dir, 0o755)
}

func writeFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return failure.Wrap(failure.InternalError, err, "cannot write "+filepath.Base(path))
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return failure.Wrap(failure.InternalError, err, "cannot write "+filepath.Base(path))
	}
	return nil
}

// classifyAs keeps an error's classification, maps context expiry to
// Timeout/Canceled, and otherwise classifies it as kind with msg.
func classifyAs(ctx context.Context, kind failure.Kind, msg string, err error) error {
	if e := failure.Expired(ctx, err, "build timed out", "build canceled"); e != nil {
		return e
	}
	var fe *failure.Error
	if errors.As(err, &fe) {
		return err
	}
	return failure.Wrap(kind, err, msg)
}

// classify makes sure every error leaving Run is a *failure.Error.
func classify(ctx context.Context, err error) error {
	return classifyAs(ctx, failure.InternalError, "internal error", err)
}

// hostSet collects the destinations the fetch phase asked the egress proxy
// for; a destination refused once is reported as refused.
type hostSet struct {
	mu    sync.Mutex
	hosts map[string]bool // address → refused
}

func (h *hostSet) add(c egress.Contact) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.hosts == nil {
		h.hosts = map[string]bool{}
	}
	if _, ok := h.hosts[c.Addr]; !ok && len(h.hosts) >= maxFetchHosts {
		return
	}
	h.hosts[c.Addr] = h.hosts[c.Addr] || c.Refused
}

// maxFetchHosts bounds what a hostile fetch can make the provenance list.
const maxFetchHosts = 1000

func (h *hostSet) list() []provenance.FetchHost {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]provenance.FetchHost, 0, len(h.hosts))
	for a, refused := range h.hosts {
		out = append(out, provenance.FetchHost{Address: a, Refused: refused})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Address < out[j].Address })
	return out
}

func fetchHostsLine(hs []provenance.FetchHost) string {
	parts := make([]string, len(hs))
	for i, h := range hs {
		parts[i] = h.Address
		if h.Refused {
			parts[i] += " (refused)"
		}
	}
	return strings.Join(parts, ", ")
}
