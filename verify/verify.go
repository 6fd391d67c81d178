// Package verify checks kettle results offline: that evidence.json is genuine
// AMD SEV-SNP or Intel TDX evidence (bare metal or Azure vTPM) chaining to the
// vendors' roots, and that a result directory's provenance and artifacts are
// the ones the evidence binds. Nothing but the CPU vendors' keys is trusted;
// the network is used only when a Getter is given.
//
// Two questions are kept apart, as in go-sev-guest: Evidence answers "is this
// genuine?" (chains, signatures, bindings, debug and VMPL rules);
// expectations (WithNonce, WithSourceSHA256, WithGitCommit, WithPolicy, …)
// answer "is it what I expect?". Options are typed per entry point
// (BundleOption, EvidenceOption; an Option fits both), so one that does not
// apply does not compile or is an ErrOption, and a call that expects nothing
// must say so with WithoutExpectationsUnsafe.
package verify

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/kettle-build/kettle/abi"
)

// Sentinel errors; every error returned wraps one or more of them.
var (
	// ErrUnreadable: an input could not be read or decoded at all.
	ErrUnreadable = errors.New("unreadable input")
	// ErrMalformed: evidence does not have the expected structure.
	ErrMalformed = errors.New("malformed evidence")
	// ErrUnsupportedPlatform: the envelope names a platform this verifier does not know.
	ErrUnsupportedPlatform = errors.New("unsupported platform")
	// ErrInsecure: the evidence says the build ran without a TEE.
	ErrInsecure = errors.New("the build ran without a TEE (platform \"insecure\")")
	// ErrChain: an endorsement certificate does not chain to a trusted vendor root.
	ErrChain = errors.New("certificate chain")
	// ErrSignature: a report, quote or TPM signature does not verify.
	ErrSignature = errors.New("signature")
	// ErrBinding: two parts of the evidence that must agree do not (HCL
	// runtime data hash, PCR digest, QE binding, VCEK chip id/TCB, user-data).
	ErrBinding = errors.New("binding")
	// ErrDebug: the TEE allows debugging and WithAllowDebugUnsafe was not given.
	ErrDebug = errors.New("debug TEE")
	// ErrVMPL: an SNP report from a VMPL other than 0.
	ErrVMPL = errors.New("VMPL")
	// ErrReportVersion: a report version outside what the platform accepts.
	ErrReportVersion = errors.New("report version")
	// ErrCollateral: Intel collateral is missing, expired or invalid.
	ErrCollateral = errors.New("collateral")
	// ErrRevoked: a TCB, QE or certificate is revoked.
	ErrRevoked = errors.New("revoked")
	// ErrReportDataMismatch: the evidence does not bind the expected report data.
	ErrReportDataMismatch = errors.New("report data mismatch")
	// ErrPolicy: a policy requirement (measurement, PCR, TCB, builder, source…) is not met.
	ErrPolicy = errors.New("policy")
	// ErrNoEndorsement: the evidence has no VCEK and no Getter was given to fetch one.
	ErrNoEndorsement = errors.New("no endorsement key")
)

// Platforms of the evidence envelope (package abi has the wire format).
const (
	PlatformAzSNP    = abi.PlatformAzSNP
	PlatformAzTDX    = abi.PlatformAzTDX
	PlatformSNP      = abi.PlatformSNP
	PlatformTDX      = abi.PlatformTDX
	PlatformGCPSNP   = abi.PlatformGCPSNP
	PlatformGCPTDX   = abi.PlatformGCPTDX
	PlatformDstack   = abi.PlatformDstack
	PlatformInsecure = abi.PlatformInsecure
)

// HexBytes is a byte string written as lower-case hex in JSON.
type HexBytes []byte

// MarshalJSON writes hex.
func (h HexBytes) MarshalJSON() ([]byte, error) {
	return fmt.Appendf(nil, "%q", hex.EncodeToString(h)), nil
}

// UnmarshalJSON reads hex.
func (h *HexBytes) UnmarshalJSON(b []byte) error {
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return errors.New("want a hex string")
	}
	v, err := hex.DecodeString(string(b[1 : len(b)-1]))
	*h = v
	return err
}

func (h HexBytes) String() string { return hex.EncodeToString(h) }

// Claims are what genuine evidence establishes.
type Claims struct {
	Platform string `json:"platform"`
	// ReportData is the caller-bound bytes: the TPM quote's extraData for
	// az-snp/az-tdx, the 64-byte REPORT_DATA for snp/tdx, report_data for
	// insecure.
	ReportData HexBytes `json:"report_data"`
	// Measurement is the launch measurement: SNP MEASUREMENT (on Azure, the
	// paravisor's), TDX MRTD.
	Measurement HexBytes `json:"measurement,omitempty"`
	Debug       bool     `json:"debug"`
	// HostData is SNP HOST_DATA or TDX MRCONFIGID.
	HostData HexBytes `json:"host_data,omitempty"`
	// PCRs are the SHA-256 PCR values the TPM quote covers (Azure only).
	PCRs map[int]HexBytes `json:"pcrs,omitempty"`
	// VMConfiguration is the Azure HCL runtime data's "vm-configuration"
	// (secure-boot, tpm-enabled, console-enabled, vmUniqueId), as attested.
	VMConfiguration json.RawMessage `json:"vm_configuration,omitempty"`

	// SEV-SNP.
	ReportVersion uint32   `json:"report_version,omitempty"`
	Generation    string   `json:"generation,omitempty"` // Milan, Genoa, Turin
	VMPL          *uint32  `json:"vmpl,omitempty"`
	ReportedTCB   string   `json:"reported_tcb,omitempty"`
	ChipID        HexBytes `json:"chip_id,omitempty"`
	VLEK          bool     `json:"vlek,omitempty"`

	// TDX.
	QuoteVersion uint16      `json:"quote_version,omitempty"`
	TEETCBSVN    HexBytes    `json:"tee_tcb_svn,omitempty"`
	RTMRs        []HexBytes  `json:"rtmrs,omitempty"`
	FMSPC        string      `json:"fmspc,omitempty"`
	TCBStatus    string      `json:"tcb_status,omitempty"` // from collateral; empty when not evaluated
	QEStatus     string      `json:"qe_status,omitempty"`
	AdvisoryIDs  []string    `json:"advisory_ids,omitempty"`
	Collateral   *time.Time  `json:"collateral_next_update,omitempty"`
	snpTCB       *snpTCBInfo // for min-TCB policy
	tdxSVN       []byte

	// Steps lists the checks that passed, in order.
	Steps []string `json:"steps"`
	// Warnings are facts a careful reader should see (OutOfDate TCB, no collateral, insecure).
	Warnings []string `json:"warnings,omitempty"`
}

// Evidence checks that evidenceJSON (the {"platform","evidence"} envelope) is
// genuine: the full chain to the trust roots, every signature, the platform's
// bindings, the debug and VMPL rules, then any expected report data and the
// policy's evidence fields (measurements, PCRs, minimum TCB; the provenance
// fields are Bundle's). It uses the network only through a Getter given with
// WithGetter. On error the returned Claims, when not nil, hold what was parsed
// before the failing step, for diagnostics only: trust them only when the
// error is nil.
//
// Some expectation (WithExpectedReportData, a measurement or PCR policy) is
// required, or WithoutExpectationsUnsafe; invalid or contradictory options
// fail with ErrOption before anything is checked.
func Evidence(ctx context.Context, evidenceJSON []byte, opts ...EvidenceOption) (*Claims, error) {
	o, err := collectEvidence(opts)
	if err != nil {
		return nil, err
	}
	c, err := genuine(ctx, evidenceJSON, o)
	if err != nil {
		return c, err
	}
	if o.expectRD {
		if err := checkReportData(c, o.expectedRD); err != nil {
			return c, err
		}
	}
	for _, chk := range evidencePolicy(c, o.policy) {
		if !chk.OK {
			return c, fmt.Errorf("%w: %s: %s", ErrPolicy, chk.Name, chk.Detail)
		}
	}
	return c, nil
}
