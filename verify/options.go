package verify

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrOption: the options given to Bundle or Evidence are invalid, do not
// apply to that entry point, contradict each other, or expect nothing
// without WithoutExpectationsUnsafe.
var ErrOption = errors.New("invalid verification options")

// BundleOption configures Bundle. Options that apply to Bundle only
// (WithNonce, WithSourceSHA256, WithGitCommit, WithGitTree, WithBuilderID,
// WithSourceURI) are BundleOptions and do not compile as EvidenceOptions.
type BundleOption interface {
	applyBundle(*options) error
}

// EvidenceOption configures Evidence. WithExpectedReportData applies to
// Evidence only (Bundle computes the report data itself).
type EvidenceOption interface {
	applyEvidence(*options) error
}

// Option applies to both Bundle and Evidence.
type Option interface {
	BundleOption
	EvidenceOption
}

// Each option is a function returning an error (sigstore-go style); its
// type says which entry points accept it.
type (
	bothOpt     func(*options) error
	bundleOpt   func(*options) error
	evidenceOpt func(*options) error
)

func (f bothOpt) applyBundle(o *options) error       { return f(o) }
func (f bothOpt) applyEvidence(o *options) error     { return f(o) }
func (f bundleOpt) applyBundle(o *options) error     { return f(o) }
func (f evidenceOpt) applyEvidence(o *options) error { return f(o) }

type options struct {
	now           time.Time
	roots         *TrustRoots
	expectedRD    []byte
	expectRD      bool
	nonce         []byte
	hasNonce      bool
	allowInsecure bool
	allowDebug    bool
	// policy holds the evidence requirements (measurements, PCRs, min TCB);
	// the provenance requirements are in expect.
	policy         Policy
	expect         []expectation
	getter         Getter
	collateral     *Collateral
	skipArtifacts  bool
	requireSNPv3   bool
	noExpectations bool
	image          imagePolicy // WithIGVM, WithImage (image.go)
}

func optErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrOption, fmt.Sprintf(format, a...))
}

// WithNow pins the verification clock (certificate and collateral validity).
func WithNow(t time.Time) Option {
	return bothOpt(func(o *options) error {
		if t.IsZero() {
			return optErr("WithNow: zero time")
		}
		o.now = t
		return nil
	})
}

// WithTrustRoots replaces the embedded AMD and Intel roots.
func WithTrustRoots(r *TrustRoots) Option {
	return bothOpt(func(o *options) error {
		if r == nil {
			return optErr("WithTrustRoots: nil roots")
		}
		o.roots = r
		return nil
	})
}

// WithExpectedReportData makes Evidence fail with ErrReportDataMismatch unless
// the evidence binds rd: REPORT_DATA == rd zero-padded to 64 (snp, tdx); the
// TPM extraData (az-snp, az-tdx) or report_data (insecure) equals rd, possibly
// zero-padded (the peer pads az-snp extraData to 50 bytes). It is an
// expectation.
func WithExpectedReportData(rd []byte) EvidenceOption {
	return evidenceOpt(func(o *options) error {
		if len(rd) == 0 || len(rd) > 64 {
			return optErr("WithExpectedReportData: %d bytes, want 1-64", len(rd))
		}
		if o.expectRD && string(o.expectedRD) != string(rd) {
			return optErr("WithExpectedReportData given twice with different data")
		}
		o.expectedRD, o.expectRD = append([]byte(nil), rd...), true
		return nil
	})
}

// WithNonce makes Bundle check that the bound nonce (bytes 32..48 of the
// report data) equals nonce zero-padded to 16 bytes. It is an expectation.
func WithNonce(nonce []byte) BundleOption {
	return bundleOpt(func(o *options) error {
		if len(nonce) == 0 || len(nonce) > 16 {
			return optErr("the nonce is %d bytes; want 1-16", len(nonce))
		}
		if o.hasNonce && string(o.nonce) != string(nonce) {
			return optErr("two different nonces")
		}
		o.nonce, o.hasNonce = append([]byte(nil), nonce...), true
		return nil
	})
}

// WithSourceSHA256 requires the provenance's source digest "sha256" (the
// uploaded archive's sha256) to equal hexSum. It is an expectation.
func WithSourceSHA256(hexSum string) BundleOption {
	return expectOpt(keySourceSHA256, hexSum)
}

// WithGitCommit requires the source's gitCommit to equal commit (a full 40-
// or 64-hex hash, any case). It is an expectation.
func WithGitCommit(commit string) BundleOption { return expectOpt(keyGitCommit, commit) }

// WithGitTree requires the source's gitTree (the git tree hash of the
// built content) to equal tree (40 or 64 hex). It is an expectation.
func WithGitTree(tree string) BundleOption { return expectOpt(keyGitTree, tree) }

// WithBuilderID requires runDetails.builder.id to equal id. It is an
// expectation.
func WithBuilderID(id string) BundleOption { return expectOpt(keyBuilderID, id) }

// WithSourceURI requires externalParameters.source.uri to equal uri. It is
// an expectation.
func WithSourceURI(uri string) BundleOption { return expectOpt(keySourceURI, uri) }

func expectOpt(key, want string) BundleOption {
	return bundleOpt(func(o *options) error { return o.addExpect(key, want) })
}

// WithMeasurements adds launch measurements (hex; SNP MEASUREMENT or TDX
// MRTD) to the allow-list. It is an expectation.
func WithMeasurements(hexMeasurements ...string) Option {
	return WithPolicy(Policy{Measurements: hexMeasurements})
}

// WithAllowInsecureUnsafe accepts "insecure" evidence, which proves nothing:
// the build ran without a TEE.
func WithAllowInsecureUnsafe() Option {
	return bothOpt(func(o *options) error { o.allowInsecure = true; return nil })
}

// WithAllowDebugUnsafe accepts evidence from a debuggable TEE, whose memory
// the host can read and write.
func WithAllowDebugUnsafe() Option {
	return bothOpt(func(o *options) error { o.allowDebug = true; return nil })
}

// WithoutExpectationsUnsafe allows a verification that expects nothing of
// the build: no nonce, source, commit, tree, builder, URI, measurement, PCR
// or report data. Genuine evidence then proves only that some TEE built
// something. Without it, such a call fails with ErrOption; with an
// expectation it is a contradiction and fails too.
func WithoutExpectationsUnsafe() Option {
	return bothOpt(func(o *options) error { o.noExpectations = true; return nil })
}

// WithPolicy adds policy requirements. Requirements only add up: a
// provenance field given twice with different values fails verification
// (both are checked), measurement lists are combined, and two different
// values for the same PCR or two min-tcb values are an ErrOption. Evidence
// accepts only the evidence fields (measurement, pcr, min-tcb, allow-*); a
// provenance field there is an ErrOption.
func WithPolicy(p Policy) Option { return policyOpt{p} }

type policyOpt struct{ p Policy }

func (po policyOpt) applyBundle(o *options) error {
	if err := po.apply(o); err != nil {
		return err
	}
	p := po.p
	for _, kv := range [][2]string{{keyBuilderID, p.BuilderID}, {keySourceURI, p.SourceURI},
		{keyGitCommit, p.GitCommit}, {keyGitTree, p.GitTree}, {keySourceSHA256, p.SourceSHA256}} {
		if kv[1] != "" {
			if err := o.addExpect(kv[0], kv[1]); err != nil {
				return err
			}
		}
	}
	return nil
}

func (po policyOpt) applyEvidence(o *options) error {
	if f := po.p.provenanceFields(); len(f) > 0 {
		return optErr("policy field(s) %s concern the provenance: they apply to Bundle, not Evidence", strings.Join(f, ", "))
	}
	return po.apply(o)
}

func (po policyOpt) apply(o *options) error {
	if err := po.p.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrOption, err)
	}
	merged, err := o.policy.mergeEvidence(po.p)
	if err != nil {
		return err
	}
	o.policy = merged
	o.allowDebug = o.allowDebug || po.p.AllowDebug
	o.allowInsecure = o.allowInsecure || po.p.AllowInsecure
	return nil
}

// WithGetter allows network access through g: to fetch a VCEK that the
// evidence lacks (AMD KDS) and current Intel collateral (PCS).
func WithGetter(g Getter) Option {
	return bothOpt(func(o *options) error {
		if g == nil {
			return optErr("WithGetter: nil getter")
		}
		o.getter = g
		return nil
	})
}

// WithCollateral gives Intel collateral for TDX TCB evaluation offline.
func WithCollateral(c *Collateral) Option {
	return bothOpt(func(o *options) error {
		if c == nil {
			return optErr("WithCollateral: nil collateral")
		}
		o.collateral = c
		return nil
	})
}

// WithRequireSNPReportV3 rejects bare-metal SNP reports older than v3 (which
// carry no CPUID fields). Bare-metal "snp" evidence always requires it; this
// extends the rule to az-snp.
func WithRequireSNPReportV3() Option {
	return bothOpt(func(o *options) error { o.requireSNPv3 = true; return nil })
}

func (o *options) defaults() {
	if o.now.IsZero() {
		o.now = time.Now()
	}
	if o.roots == nil {
		o.roots = DefaultTrustRoots()
	}
}

// expectsEvidence: something the evidence itself must match.
func (o *options) expectsEvidence() bool {
	return o.expectRD || len(o.policy.Measurements) > 0 || len(o.policy.PCRs) > 0 || o.image.igvmPath != ""
}

func (o *options) checkExpectations(any bool) error {
	switch {
	case !any && !o.noExpectations:
		return optErr("nothing is expected of this build (no nonce, source digest, git commit or tree, builder, source URI, measurement, PCR or report data): genuine evidence would prove only that some TEE built something; pass WithoutExpectationsUnsafe to allow that")
	case any && o.noExpectations:
		return optErr("WithoutExpectationsUnsafe contradicts the expectations given")
	}
	return nil
}

func collectBundle(opts []BundleOption) (*options, error) {
	o := &options{}
	for i, f := range opts {
		if f == nil {
			return nil, optErr("option %d is nil", i)
		}
		if err := f.applyBundle(o); err != nil {
			return nil, err
		}
	}
	if err := o.image.validate(); err != nil {
		return nil, err
	}
	if err := o.checkExpectations(o.hasNonce || len(o.expect) > 0 || o.expectsEvidence()); err != nil {
		return nil, err
	}
	o.defaults()
	return o, nil
}

func collectEvidence(opts []EvidenceOption) (*options, error) {
	o := &options{}
	for i, f := range opts {
		if f == nil {
			return nil, optErr("option %d is nil", i)
		}
		if err := f.applyEvidence(o); err != nil {
			return nil, err
		}
	}
	if err := o.checkExpectations(o.expectsEvidence()); err != nil {
		return nil, err
	}
	o.defaults()
	return o, nil
}

// Provenance expectation keys: the flag names of `kettle verify`.
const (
	keyBuilderID    = "builder-id"
	keySourceURI    = "source-uri"
	keyGitCommit    = "git-commit"
	keyGitTree      = "git-tree"
	keySourceSHA256 = "source-sha256"
)

// expectation is one provenance requirement.
type expectation struct{ key, want string }

func (o *options) addExpect(key, want string) error {
	want = strings.TrimSpace(want)
	switch key {
	case keyGitCommit, keyGitTree, keySourceSHA256:
		want = strings.ToLower(want)
		if err := checkHexField(key, want); err != nil {
			return fmt.Errorf("%w: %w", ErrOption, err)
		}
	default:
		if want == "" {
			return optErr("empty %s", key)
		}
	}
	for _, e := range o.expect {
		if e.key == key && e.want == want {
			return nil
		}
	}
	o.expect = append(o.expect, expectation{key, want})
	return nil
}

// checkHexField validates a hash-valued policy field.
func checkHexField(key, v string) error {
	b, err := hex.DecodeString(v)
	switch key {
	case keySourceSHA256:
		if err != nil || len(b) != 32 {
			return fmt.Errorf("%w: source sha256 %q is not 64 hex digits", ErrPolicy, v)
		}
	case keyGitCommit:
		if err != nil || (len(b) != 20 && len(b) != 32) {
			return fmt.Errorf("%w: git commit %q is not a full 40- or 64-hex hash", ErrPolicy, v)
		}
	case keyGitTree:
		if err != nil || (len(b) != 20 && len(b) != 32) {
			return fmt.Errorf("%w: git tree %q is not a full 40- or 64-hex hash", ErrPolicy, v)
		}
	}
	return nil
}
