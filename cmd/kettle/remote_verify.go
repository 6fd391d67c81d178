package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/kettle-build/kettle/igvm"
	"github.com/kettle-build/kettle/verify"
)

// policyFlags are the policy flags shared by `kettle verify` and
// `kettle remote build`: same names, same meanings, one mapping to options.
// They are read from the command line only (see parseCommandLine): no
// environment variable can relax or replace them.
type policyFlags struct {
	builderID, sourceURI, gitCommit, gitTree, sourceSHA256, minTCB *string
	allowDebug, allowInsecure, online                              *bool
	rootsFile, at, policyFile, collDir                             *string
	igvmFile, igvmLoader, imageFile                                *string
	measurements                                                   listFlag
	pcrs                                                           pcrFlag
}

func (p *policyFlags) register(fs *flag.FlagSet) {
	p.builderID = fs.String("builder-id", "", "require this runDetails.builder.id")
	p.sourceURI = fs.String("source-uri", "", "require this source URI")
	p.gitCommit = fs.String("git-commit", "", "require this git commit (full hash)")
	p.gitTree = fs.String("git-tree", "", "require this git tree hash of the built source (full hash)")
	p.sourceSHA256 = fs.String("source-sha256", "", "require this sha256 of the uploaded source archive (64 hex digits)")
	p.minTCB = fs.String("min-tcb", "", "minimum TCB: SNP bl=N,tee=N,snp=N,ucode=N[,fmc=N] or 16 hex digits; TDX 32-hex TEE_TCB_SVN")
	p.allowDebug = fs.Bool("allow-debug", false, "UNSAFE: accept evidence from a debuggable TEE")
	p.allowInsecure = fs.Bool("allow-insecure", false, "UNSAFE: accept \"insecure\" evidence from a build without a TEE")
	p.rootsFile = fs.String("trust-roots", "", "PEM file of vendor roots replacing the embedded AMD/Intel roots")
	p.at = fs.String("at", "", "verify as of this time (RFC 3339 or YYYY-MM-DD) instead of now")
	p.policyFile = fs.String("policy", "", "JSON policy file (keys as these flags)")
	p.online = fs.Bool("online", false, "allow the network: fetch a missing VCEK (AMD KDS) and current Intel collateral (PCS)")
	p.collDir = fs.String("tdx-collateral", "", "directory of offline Intel collateral for TDX TCB evaluation")
	p.igvmFile = fs.String("igvm", "", "require the SNP launch measurement to be the launch digest of this IGVM file (as QEMU/KVM loads it)")
	p.igvmLoader = fs.String("igvm-loader", "qemu", "with --igvm: how the VMM loads it: qemu (QEMU's IGVM backend on KVM) or direct (one launch update per page, zero pages as PAGE_TYPE_ZERO: sev-snp-measure's OVMF model)")
	p.imageFile = fs.String("image", "", "with --igvm: require this GPT disk image's root-verity hash to be the roothash= of the IGVM's kernel command line (and its root partition to hash to it)")
	p.pcrs = pcrFlag{}
	fs.Var(&p.measurements, "measurement", "allowed launch measurement (hex; repeatable or comma-separated)")
	fs.Var(p.pcrs, "pcr", "required PCR value N=HEX (repeatable; Azure)")
}

// options turns the flags into verify options. expects reports whether
// the flags or the policy file expect something of the build (builder,
// source, commit, tree, archive digest, measurement, PCR); the caller adds
// its own expectations (a nonce) or verify.WithoutExpectationsUnsafe.
func (p *policyFlags) options() (opts []verify.BundleOption, expects bool, err error) {
	pol := verify.Policy{
		BuilderID: *p.builderID, SourceURI: *p.sourceURI, GitCommit: strings.ToLower(*p.gitCommit),
		GitTree: strings.ToLower(*p.gitTree), SourceSHA256: strings.ToLower(*p.sourceSHA256),
		Measurements: p.measurements, MinTCB: *p.minTCB,
		AllowDebug: *p.allowDebug, AllowInsecure: *p.allowInsecure,
	}
	if len(p.pcrs) > 0 {
		pol.PCRs = p.pcrs
	}
	if *p.policyFile != "" {
		f, err := verify.LoadPolicy(*p.policyFile)
		if err != nil {
			return nil, false, err
		}
		opts = append(opts, verify.WithPolicy(f))
		expects = f.HasExpectations()
	}
	if err := pol.Validate(); err != nil {
		return nil, false, err
	}
	opts = append(opts, verify.WithPolicy(pol))
	expects = expects || pol.HasExpectations()
	if *p.rootsFile != "" {
		b, err := os.ReadFile(*p.rootsFile)
		if err != nil {
			return nil, false, fmt.Errorf("--trust-roots: %v", err)
		}
		r, err := verify.ParseTrustRoots(b)
		if err != nil {
			return nil, false, fmt.Errorf("--trust-roots: %v", err)
		}
		opts = append(opts, verify.WithTrustRoots(r))
	}
	if *p.at != "" {
		t, err := parseAt(*p.at)
		if err != nil {
			return nil, false, err
		}
		opts = append(opts, verify.WithNow(t))
	}
	if *p.collDir != "" {
		c, err := verify.LoadCollateralDir(*p.collDir)
		if err != nil {
			return nil, false, fmt.Errorf("--tdx-collateral: %v", err)
		}
		opts = append(opts, verify.WithCollateral(c))
	}
	if *p.online {
		opts = append(opts, verify.WithGetter(verify.NewHTTPGetter()))
	}
	if *p.imageFile != "" && *p.igvmFile == "" {
		return nil, false, fmt.Errorf("--image needs --igvm: the image's root hash is checked against the IGVM's kernel command line")
	}
	if *p.igvmFile != "" {
		l, err := igvm.ParseLoader(*p.igvmLoader)
		if err != nil {
			return nil, false, fmt.Errorf("--igvm-loader: %v", err)
		}
		opts = append(opts, verify.WithIGVM(*p.igvmFile), verify.WithIGVMLoader(l))
		if *p.imageFile != "" {
			opts = append(opts, verify.WithImage(*p.imageFile))
		}
		expects = true
	}
	return opts, expects, nil
}

// parseCommandLine parses flags before and after the positional arguments
// from args alone. Only the flags named in fromEnv also read KETTLE_<FLAG>
// when not given: verification flags never do, so a variable set in a CI
// job or a shell profile cannot relax or replace what the command line says
// (KETTLE_ALLOW_INSECURE=true, KETTLE_TRUST_ROOTS=…, KETTLE_AT=…).
func parseCommandLine(fs *flag.FlagSet, args []string, fromEnv ...string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if rest[0] == "--" {
			pos = append(pos, rest[1:]...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, name := range fromEnv {
		if set[name] || fs.Lookup(name) == nil {
			continue
		}
		env := "KETTLE_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if err := fs.Set(name, v); err != nil {
				return nil, fmt.Errorf("%s: %w", env, err)
			}
		}
	}
	return pos, nil
}

// noExpectationsWarning is printed when a verification expects nothing.
const noExpectationsWarning = `⚠️  WARNING: nothing is expected of this build. The checks below prove only that the
⚠️  result is self-consistent and its evidence genuine — not that it is the build you
⚠️  asked for. Pass --nonce, --source-sha256, --git-commit, --git-tree, --source-uri,
⚠️  --builder-id, --measurement or --pcr (or --policy FILE) to say what you expect.
`
