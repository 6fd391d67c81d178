package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/kettle-build/kettle/attest"
	"github.com/kettle-build/kettle/depcache"
	"github.com/kettle-build/kettle/jobs"
	"github.com/kettle-build/kettle/sandbox"
	"github.com/kettle-build/kettle/source"
	"github.com/kettle-build/kettle/worker"
)

// Defaults of flags that serve and worker share and no package owns.
const (
	defaultBuildTimeout    = 60 * time.Minute
	defaultShutdownTimeout = 5 * time.Minute
)

// builderFlags configure the builds a process runs. `kettle serve` (its
// in-process workers) and `kettle worker` register the same flags and build
// through newBuilder, so the two cannot drift.
type builderFlags struct {
	attester, sandboxMode, builderID string
	sandboxUID                       int
	buildTimeout                     time.Duration
	allowLocal, allowPrivate         bool
}

func (f *builderFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.attester, "attester", "auto", "evidence platform: auto, az-snp, az-tdx, snp, tdx, sim-snp, insecure")
	fs.StringVar(&f.sandboxMode, "sandbox", "auto", "build sandbox: auto, bwrap, none")
	fs.IntVar(&f.sandboxUID, "sandbox-uid", sandbox.DefaultHostUID, "host uid and gid builds run as when kettle runs as root (0: as root, not recommended)")
	fs.DurationVar(&f.buildTimeout, "build-timeout", defaultBuildTimeout, "wall-clock limit of one build")
	fs.StringVar(&f.builderID, "builder-id", "", "builder.id URI recorded in provenance")
	fs.BoolVar(&f.allowLocal, "allow-local-repos", false, "allow http://, git://, file:// and local-path repo URLs")
	fs.BoolVar(&f.allowPrivate, "allow-private-networks", false, "allow repo hosts on loopback/private/link-local addresses")
}

// policy is the repo_url policy of these flags: the api checks it at
// submission, the worker again when it clones. deny are kettle's own
// listeners (ownListeners), never reachable by a clone either.
func (f *builderFlags) policy(deny ...string) source.Policy {
	return source.Policy{AllowLocal: f.allowLocal, AllowPrivateNetworks: f.allowPrivate, Deny: deny}
}

// buildHost is what differs between the processes that build.
type buildHost struct {
	workDir string // job work trees
	workers int    // builds at once: the sandbox's default limits are shared among them
	// hidden are paths no build may see (the store, the upload spool).
	hidden []string
	// kettle's own listeners, unreachable from builds: the HTTP
	// --listen, --nats-listen, the servers of --nats.
	listen, natsListen, natsURL string
	attest                      []attest.Option
	metrics                     *worker.Metrics
	// depCache is the dependency cache shared by this process's jobs
	// (nil: none).
	depCache *depcache.Cache
}

// builder is the jobs.Builder of this process, with the runner and
// attester it was made of (for the startup log).
type builder struct {
	jobs.Builder
	runner sandbox.Runner
	att    attest.Attester
}

// newBuilder makes the sandbox runner (with the egress proxy), the
// attester and the worker that builds this process's jobs, observed in
// h.metrics.
func newBuilder(ctx context.Context, logger *slog.Logger, f builderFlags, h buildHost) (*builder, error) {
	deny := ownListeners(h.listen, h.natsListen, h.natsURL)
	eg, err := egressOption(logger, f.allowPrivate, deny)
	if err != nil {
		return nil, err
	}
	opts := []sandbox.Option{sandbox.WithLogger(logger), eg, sandbox.WithSandboxUser(f.sandboxUID, f.sandboxUID)}
	if h.workers > 0 {
		opts = append(opts, sandbox.WithWorkers(h.workers))
	}
	if len(h.hidden) > 0 {
		opts = append(opts, sandbox.WithHiddenPaths(h.hidden...))
	}
	runner, err := sandbox.New(f.sandboxMode, opts...)
	if err != nil {
		return nil, fmt.Errorf("--sandbox %s: %w", f.sandboxMode, err)
	}
	att, err := attest.New(ctx, f.attester, h.attest...)
	if err != nil {
		return nil, fmt.Errorf("--attester %s: %w", f.attester, err)
	}
	if att.Platform() == "insecure" {
		logger.Warn("!!! INSECURE ATTESTER: no TEE in use; evidence is NOT hardware-backed and `kettle verify` rejects it without --allow-insecure !!!",
			"attester", f.attester, "detection", strings.Join(attest.Detect().Reasons, "; "))
	}
	b := worker.Observe(worker.New(worker.Config{
		WorkDir:      h.workDir,
		SourcePolicy: f.policy(deny...),
		Runner:       runner,
		Attester:     att,
		BuilderID:    f.builderID,
		BuildTimeout: f.buildTimeout,
		Logger:       logger,
		DepCache:     h.depCache,
	}), h.metrics)
	return &builder{Builder: b, runner: runner, att: att}, nil
}
