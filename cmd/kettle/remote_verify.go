package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/kettle-build/kettle/verify"
)

// policyFlags are the policy flags shared by `kettle verify` and
// `kettle remote build`: same names, same meanings, one mapping to options.
type policyFlags struct {
	builderID, sourceURI, gitCommit, minTCB *string
	allowDebug, allowInsecure, online       *bool
	rootsFile, at, policyFile, collDir      *string
	measurements                            listFlag
	pcrs                                    pcrFlag
}

func (p *policyFlags) register(fs *flag.FlagSet) {
	p.builderID = fs.String("builder-id", "", "require this runDetails.builder.id")
	p.sourceURI = fs.String("source-uri", "", "require this source URI")
	p.gitCommit = fs.String("git-commit", "", "require this git commit (full hash; `remote build --ref COMMIT` defaults to that commit)")
	p.minTCB = fs.String("min-tcb", "", "minimum TCB: SNP bl=N,tee=N,snp=N,ucode=N[,fmc=N] or 16 hex digits; TDX 32-hex TEE_TCB_SVN")
	p.allowDebug = fs.Bool("allow-debug", false, "UNSAFE: accept evidence from a debuggable TEE")
	p.allowInsecure = fs.Bool("allow-insecure", false, "UNSAFE: accept \"insecure\" evidence from a build without a TEE")
	p.rootsFile = fs.String("trust-roots", "", "PEM file of vendor roots replacing the embedded AMD/Intel roots")
	p.at = fs.String("at", "", "verify as of this time (RFC 3339 or YYYY-MM-DD) instead of now")
	p.policyFile = fs.String("policy", "", "JSON policy file (keys as these flags)")
	p.online = fs.Bool("online", false, "allow the network: fetch a missing VCEK (AMD KDS) and current Intel collateral (PCS)")
	p.collDir = fs.String("tdx-collateral", "", "directory of offline Intel collateral for TDX TCB evaluation")
	p.pcrs = pcrFlag{}
	fs.Var(&p.measurements, "measurement", "allowed launch measurement (hex; repeatable or comma-separated)")
	fs.Var(p.pcrs, "pcr", "required PCR value N=HEX (repeatable; Azure)")
}

// options turns the flags into verify options exactly as `kettle verify`
// does. defaults (for example the commit a --ref named) come first, so the
// flags and the policy file override them.
func (p *policyFlags) options(defaults verify.Policy) ([]verify.Option, error) {
	opts := []verify.Option{verify.WithPolicy(defaults)}
	pol := verify.Policy{
		BuilderID: *p.builderID, SourceURI: *p.sourceURI, GitCommit: strings.ToLower(*p.gitCommit),
		Measurements: p.measurements, MinTCB: *p.minTCB,
		AllowDebug: *p.allowDebug, AllowInsecure: *p.allowInsecure,
	}
	if len(p.pcrs) > 0 {
		pol.PCRs = p.pcrs
	}
	if *p.policyFile != "" {
		f, err := verify.LoadPolicy(*p.policyFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, verify.WithPolicy(f))
	}
	if err := pol.Validate(); err != nil {
		return nil, err
	}
	opts = append(opts, verify.WithPolicy(pol))
	if *p.rootsFile != "" {
		b, err := os.ReadFile(*p.rootsFile)
		if err != nil {
			return nil, fmt.Errorf("--trust-roots: %v", err)
		}
		r, err := verify.ParseTrustRoots(b)
		if err != nil {
			return nil, fmt.Errorf("--trust-roots: %v", err)
		}
		opts = append(opts, verify.WithTrustRoots(r))
	}
	if *p.at != "" {
		t, err := parseAt(*p.at)
		if err != nil {
			return nil, err
		}
		opts = append(opts, verify.WithNow(t))
	}
	if *p.collDir != "" {
		c, err := verify.LoadCollateralDir(*p.collDir)
		if err != nil {
			return nil, fmt.Errorf("--tdx-collateral: %v", err)
		}
		opts = append(opts, verify.WithCollateral(c))
	}
	if *p.online {
		opts = append(opts, verify.WithGetter(verify.NewHTTPGetter()))
	}
	return opts, nil
}
