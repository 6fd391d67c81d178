package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/kettle-build/kettle/attest"
	"github.com/kettle-build/kettle/verify"
)

func init() {
	register("verify", "verify a result directory: evidence, provenance, artifacts, policy", func(ctx context.Context, args []string) int {
		return runVerify(ctx, args, os.Stdout, os.Stderr)
	})
}

// listFlag collects a repeatable, comma-separable flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// pcrFlag collects N=HEX.
type pcrFlag map[int]string

func (p pcrFlag) String() string {
	var s []string
	for k, v := range p {
		s = append(s, fmt.Sprintf("%d=%s", k, v))
	}
	return strings.Join(s, ",")
}

func (p pcrFlag) Set(v string) error {
	for _, kv := range strings.Split(v, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(kv), "=")
		n, err := strconv.Atoi(k)
		if !ok || err != nil {
			return fmt.Errorf("want N=HEX, got %q", kv)
		}
		p[n] = strings.ToLower(val)
	}
	return nil
}

func parseAt(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("--at %q: want RFC 3339 (2026-04-01T00:00:00Z) or a date (2026-04-01)", s)
}

func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: kettle verify [flags] DIR\n\nVerifies a result directory (provenance.json, evidence.json, artifacts/).\nSay what you expect (--nonce, --source-sha256, --git-commit, --git-tree, ...);\nwithout any expectation it warns that the result may be anyone's build.\nFlags are read from the command line only, never from KETTLE_* variables.\nExit status: 0 passed, 1 a check failed, 2 bad usage or unreadable input.\n\nflags:")
		fs.PrintDefaults()
	}
	nonceHex := fs.String("nonce", "", "the nonce (hex of 1-16 bytes, or a UUID) the evidence must bind")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	var policy policyFlags
	policy.register(fs)
	pos, err := parseCommandLine(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitBadArgs
	}
	if len(pos) != 1 {
		fs.Usage()
		return exitBadArgs
	}
	dir := pos[0]
	bad := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "kettle verify: "+format+"\n", a...)
		return exitBadArgs
	}

	opts, expects, err := policy.options()
	if err != nil {
		return bad("%v", err)
	}
	if *nonceHex != "" {
		h := strings.TrimPrefix(*nonceHex, "0x")
		if len(h) == 36 && strings.Count(h, "-") == 4 {
			h = strings.ReplaceAll(h, "-", "") // a UUID's 16 bytes
		}
		n, err := hex.DecodeString(h)
		if err != nil {
			return bad("--nonce: invalid hex: %v", err)
		}
		if len(n) == 0 || len(n) > 16 {
			return bad("--nonce must be 1-16 bytes, got %d", len(n))
		}
		opts = append(opts, verify.WithNonce(n))
		expects = true
	}
	if !expects {
		fmt.Fprint(stderr, noExpectationsWarning)
		opts = append(opts, verify.WithoutExpectationsUnsafe())
	}

	rep, err := verify.Bundle(ctx, dir, opts...)
	if err != nil {
		if errors.Is(err, verify.ErrUnreadable) || errors.Is(err, verify.ErrOption) {
			return bad("%v", err)
		}
		fmt.Fprintf(stderr, "kettle verify: %v\n", err)
		return exitFailed
	}
	if *asJSON {
		b, err := rep.JSON()
		if err != nil {
			return bad("%v", err)
		}
		stdout.Write(b)
	} else if err := verify.WriteTable(stdout, rep); err != nil {
		return exitFailed
	}
	if !rep.Passed() {
		return exitFailed
	}
	return exitOK
}

const simMeasurementUsage = "with --attester sim-snp: the MEASUREMENT of the simulated reports (96 hex digits, e.g. the launch digest kettle verify --igvm prints for a test IGVM)"

// simMeasurementFlag is --sim-measurement of `kettle attest` and `kettle
// serve`: 48 bytes as 96 hex digits.
type simMeasurementFlag struct {
	set bool
	m   [48]byte
}

func (f *simMeasurementFlag) String() string {
	if !f.set {
		return ""
	}
	return hex.EncodeToString(f.m[:])
}

func (f *simMeasurementFlag) Set(v string) error {
	b, err := hex.DecodeString(strings.TrimPrefix(strings.TrimSpace(v), "0x"))
	if err != nil || len(b) != 48 {
		return fmt.Errorf("want 96 hex digits (a 48-byte SNP measurement), got %q", v)
	}
	copy(f.m[:], b)
	f.set = true
	return nil
}

// options: the attest options for attester name; --sim-measurement with any
// other attester is an error (it would be silently ignored).
func (f *simMeasurementFlag) options(attester string) ([]attest.Option, error) {
	if !f.set {
		return nil, nil
	}
	if attester != attest.NameSimSNP {
		return nil, fmt.Errorf("--sim-measurement needs --attester %s (got %q)", attest.NameSimSNP, attester)
	}
	return []attest.Option{attest.WithSimMeasurement(f.m)}, nil
}
