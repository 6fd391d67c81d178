package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/kettle-build/kettle/attest"
	"github.com/kettle-build/kettle/events"
	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/jobs"
	"github.com/kettle-build/kettle/pipeline"
	"github.com/kettle-build/kettle/sandbox"
)

func init() {
	// Every subcommand that runs the pipeline (build, attest, serve,
	// worker) records this binary's version in provenance.
	pipeline.KettleVersion = Version
	register("build", "build a local checkout into DIR/kettle-build (artifacts, provenance, manifest)", func(ctx context.Context, args []string) int {
		return runBuild(ctx, "build", args, os.Stdout, os.Stderr)
	})
}

// buildFlags are the flags `kettle build` and `kettle attest` share.
type buildFlags struct {
	sandbox      string
	builderID    string
	buildType    string
	buildTimeout time.Duration
	outDir       string
	sourceURI    string
	// attest only
	nonce       string
	attester    string
	simRootsOut string
	simMeas     simMeasurementFlag
}

func (b *buildFlags) register(fs *flag.FlagSet, withAttest bool) {
	fs.StringVar(&b.sandbox, "sandbox", "auto", "build-phase sandbox: auto, bwrap or none")
	fs.StringVar(&b.builderID, "builder-id", pipeline.DefaultBuilderID, "runDetails.builder.id recorded in provenance")
	fs.StringVar(&b.buildType, "build-type", pipeline.DefaultBuildTypeBase, "buildType prefix (the toolchain and @v1 are appended)")
	fs.DurationVar(&b.buildTimeout, "build-timeout", defaultBuildTimeout, "time limit of the whole build (0: none)")
	fs.StringVar(&b.outDir, "out", "", "result directory (default DIR/kettle-build)")
	fs.StringVar(&b.sourceURI, "source-uri", "", "source uri recorded in provenance (default: remote.origin.url of DIR/.git/config)")
	if withAttest {
		fs.StringVar(&b.nonce, "nonce", "", "nonce to bind into the evidence (hex, at most 16 bytes; dashes are ignored, so a UUID works)")
		fs.StringVar(&b.attester, "attester", "auto", "evidence source: auto, az-snp, az-tdx, snp, tdx, sim-snp or insecure")
		fs.StringVar(&b.simRootsOut, "sim-roots-out", "", "with --attester sim-snp: write the test-only AMD roots (PEM) to this `file`, for kettle verify --trust-roots")
		fs.Var(&b.simMeas, "sim-measurement", simMeasurementUsage)
	}
}

// parseInterspersed parses flags given before and after the positional
// arguments (`kettle build DIR --sandbox none`).
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if rest[0] == "--" {
			return append(pos, rest[1:]...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// parseNonce reads --nonce: hex, dashes ignored, at most 16 bytes.
func parseNonce(s string) ([]byte, error) {
	s = strings.ReplaceAll(strings.TrimSpace(s), "-", "")
	if s == "" {
		return nil, nil
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("invalid nonce hex: %v", err)
	}
	if len(b) > 16 {
		return nil, errors.New("nonce must be 1-16 bytes")
	}
	return b, nil
}

// lineSink prints each event as one plain line: `[type] message`.
type lineSink struct{ w io.Writer }

func (l lineSink) Emit(e events.Event) {
	if e.PhaseOnly() {
		fmt.Fprintf(l.w, "[phase] %s %.3fs\n", e.Phase.Name, e.Phase.Duration.Seconds())
		return
	}
	switch e.Type {
	case events.Build:
		fmt.Fprintf(l.w, "[build] %s\n", e.Msg)
	default:
		fmt.Fprintf(l.w, "[%s] %s\n", e.Type, e.Msg)
	}
}

func runBuild(ctx context.Context, name string, args []string, stdout, stderr io.Writer) int {
	withAttest := name == "attest"
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f buildFlags
	f.register(fs, withAttest)
	fs.Usage = func() {
		if withAttest {
			fmt.Fprintln(stderr, "usage: kettle attest [flags] DIR\n\nBuilds DIR like `kettle build`, then writes DIR/kettle-build/evidence.json:\nthis machine's TEE evidence binding sha256(provenance.json) and the nonce.\n\nflags:")
		} else {
			fmt.Fprintln(stderr, "usage: kettle build [flags] DIR\n\nBuilds the Cargo, Nix, pnpm or Go project in DIR and writes DIR/kettle-build/:\nartifacts/, build-config/<lockfile>, provenance.json, manifest.json.\nProgress goes to stderr, the result summary to stdout.\n\nflags:")
		}
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintln(stderr, "kettle:", err)
		return exitBadArgs
	}
	if len(pos) != 1 {
		fs.Usage()
		return exitBadArgs
	}
	dir := pos[0]
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		fmt.Fprintf(stderr, "kettle %s: %s is not a directory\n", name, dir)
		return exitBadArgs
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	runner, err := sandbox.New(f.sandbox, sandbox.WithLogger(logger))
	if err != nil {
		fmt.Fprintf(stderr, "kettle %s: --sandbox %s: %v\n", name, f.sandbox, err)
		return exitBadArgs
	}
	// The job log's cap and default, so a build prints what a served one
	// would keep.
	out := &events.Capped{Next: lineSink{stderr}, Budget: events.Budget{MaxLines: jobs.DefaultMaxEvents}}
	opts := pipeline.Options{
		Dir:           dir,
		OutDir:        f.outDir,
		Runner:        runner,
		Events:        out,
		BuilderID:     f.builderID,
		BuildTypeBase: f.buildType,
		SourceURI:     f.sourceURI,
	}
	if withAttest {
		if opts.Nonce, err = parseNonce(f.nonce); err != nil {
			fmt.Fprintf(stderr, "kettle attest: %v\n", err)
			return exitBadArgs
		}
		simOpts, err := f.simMeas.options(f.attester)
		if err != nil {
			fmt.Fprintf(stderr, "kettle attest: %v\n", err)
			return exitBadArgs
		}
		if opts.Attester, err = attest.New(ctx, f.attester, append(simOpts, attest.WithLogger(logger))...); err != nil {
			fmt.Fprintf(stderr, "kettle attest: --attester %s: %v\n", f.attester, err)
			return exitFailed
		}
		if f.simRootsOut != "" {
			if err := writeSimRoots(f.simRootsOut); err != nil {
				fmt.Fprintf(stderr, "kettle attest: --sim-roots-out: %v\n", err)
				return exitBadArgs
			}
		}
	}
	if f.buildTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.buildTimeout)
		defer cancel()
	}
	// RunDir computes the source identity (commit, tree, dirty) once, by
	// kettle's Go code over DIR: no git runs on the project.
	res, err := pipeline.RunDir(ctx, opts)
	out.Close()
	if err != nil {
		fmt.Fprintf(stderr, "kettle %s: %s failed: %s\n", name, failure.KindOf(err), failure.Message(err))
		return exitFailed
	}
	fmt.Fprintf(stdout, "%s build of %s written to %s\n", res.Toolchain, dir, res.OutDir)
	for _, a := range res.Artifacts {
		fmt.Fprintf(stdout, "  %s  artifacts/%s\n", a.SHA256, a.Name)
	}
	if res.Evidence != nil {
		fmt.Fprintf(stdout, "  evidence.json (platform %s)\n", opts.Attester.Platform())
	}
	return exitOK
}

// writeSimRoots writes the test-only AMD roots that sign sim-snp evidence.
func writeSimRoots(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := attest.WriteSimRoots(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
