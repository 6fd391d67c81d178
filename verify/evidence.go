package verify

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/kettle-build/kettle/abi"

	"github.com/kettle-build/kettle/verify/hcl"
	"github.com/kettle-build/kettle/verify/snp"
	"github.com/kettle-build/kettle/verify/tdx"
	"github.com/kettle-build/kettle/verify/tpm"
)

// ParseEnvelope decodes evidence.json. Unknown platforms are an error.
func ParseEnvelope(b []byte) (*abi.Envelope, error) {
	if len(b) > abi.MaxEnvelope {
		return nil, fmt.Errorf("%w: evidence is %d bytes (limit %d)", ErrMalformed, len(b), abi.MaxEnvelope)
	}
	var env abi.Envelope
	if err := json.Unmarshal(b, &env); err != nil {
		return nil, fmt.Errorf("%w: evidence envelope: %w", ErrMalformed, err)
	}
	if len(env.Evidence) == 0 || bytes.Equal(env.Evidence, []byte("null")) {
		return nil, fmt.Errorf("%w: evidence envelope has no \"evidence\"", ErrMalformed)
	}
	switch env.Platform {
	case PlatformAzSNP, PlatformAzTDX, PlatformSNP, PlatformTDX, PlatformGCPSNP, PlatformGCPTDX, PlatformDstack, PlatformInsecure:
	case "":
		return nil, fmt.Errorf("%w: evidence envelope has no \"platform\"", ErrMalformed)
	default:
		return nil, fmt.Errorf("%w: %q", ErrUnsupportedPlatform, env.Platform)
	}
	return &env, nil
}

func decodeField(name, s string, enc *base64.Encoding) ([]byte, error) {
	if len(s) > abi.MaxField*4/3+4 {
		return nil, fmt.Errorf("%w: %s is too large", ErrMalformed, name)
	}
	b, err := enc.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrMalformed, name, err)
	}
	return b, nil
}

// b64url decodes URL-safe base64 with or without padding.
func b64url(name, s string) ([]byte, error) {
	return decodeField(name, strings.TrimRight(s, "="), base64.RawURLEncoding)
}

func b64std(name, s string) ([]byte, error) {
	return decodeField(name, s, base64.StdEncoding)
}

func strict(raw json.RawMessage, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return nil
}

// run records the steps of one verification.
type run struct {
	c *Claims
	o *options
}

func (r *run) ok(step string) { r.c.Steps = append(r.c.Steps, step) }

func (r *run) fail(step string, sentinel, err error) error {
	return &stepError{step: step, sentinel: sentinel, err: err}
}

// stepError names the failed step; it matches its sentinel and the cause
// with errors.Is, and reads "step: cause".
type stepError struct {
	step          string
	sentinel, err error
}

func (e *stepError) Error() string {
	if e.err == nil {
		return e.step + ": " + e.sentinel.Error()
	}
	return e.step + ": " + e.err.Error()
}

func (e *stepError) Unwrap() []error {
	if e.err == nil {
		return []error{e.sentinel}
	}
	return []error{e.sentinel, e.err}
}

func genuine(ctx context.Context, b []byte, o *options) (*Claims, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	env, err := ParseEnvelope(b)
	if err != nil {
		return nil, err
	}
	r := &run{c: &Claims{Platform: env.Platform}, o: o}
	r.ok("decode evidence envelope (platform=" + env.Platform + ")")
	switch env.Platform {
	case PlatformAzSNP, PlatformAzTDX:
		err = r.azure(ctx, env)
	case PlatformSNP, PlatformGCPSNP:
		err = r.snp(ctx, env)
	case PlatformTDX, PlatformGCPTDX:
		err = r.tdx(ctx, env)
	case PlatformDstack:
		err = r.dstack(ctx, env)
	case PlatformInsecure:
		err = r.insecure(env)
	}
	return r.c, err
}

func (r *run) insecure(env *abi.Envelope) error {
	var ev abi.InsecureEvidence
	if err := strict(env.Evidence, &ev); err != nil {
		return err
	}
	rd, err := hex.DecodeString(ev.ReportData)
	if err != nil || len(rd) > 64 {
		return fmt.Errorf("%w: insecure report_data is not hex of at most 64 bytes", ErrMalformed)
	}
	r.c.ReportData = rd
	if !r.o.allowInsecure {
		return fmt.Errorf("%w: the evidence proves nothing about where or how it was built; accept it (--allow-insecure) only for testing", ErrInsecure)
	}
	r.c.Warnings = append(r.c.Warnings, "INSECURE: the build ran without a TEE; the evidence is unsigned and proves nothing (anyone can write it)")
	r.ok("insecure evidence accepted (--allow-insecure)")
	return nil
}

func (r *run) azure(ctx context.Context, env *abi.Envelope) error {
	var ev abi.AzureEvidence
	if err := strict(env.Evidence, &ev); err != nil {
		return err
	}
	if ev.Version != 1 {
		return fmt.Errorf("%w: Azure evidence version %d, want 1", ErrMalformed, ev.Version)
	}
	if ev.TPMQuote == nil {
		return fmt.Errorf("%w: no tpm_quote", ErrMalformed)
	}
	blob, err := b64url("hcl_report", ev.HCLReport)
	if err != nil {
		return err
	}
	h, err := hcl.Parse(blob)
	if err != nil {
		return r.fail("HCL report parse", ErrMalformed, err)
	}
	wantType := uint32(hcl.TypeSNP)
	if env.Platform == PlatformAzTDX {
		wantType = hcl.TypeTDX
	}
	if h.ReportType != wantType {
		return fmt.Errorf("%w: HCL report type %d does not match platform %s", ErrMalformed, h.ReportType, env.Platform)
	}
	r.ok(fmt.Sprintf("HCL report parse (HCLA, report_type=%d)", h.ReportType))
	rt, err := hcl.ParseRuntimeData(h.RuntimeData)
	if err != nil {
		return r.fail("HCL runtime data", ErrMalformed, err)
	}
	if len(rt.VMConfiguration) > 0 && json.Valid(rt.VMConfiguration) {
		r.c.VMConfiguration = rt.VMConfiguration
	}
	ak, err := rt.AttestationKey()
	if err != nil {
		return r.fail("AK public key from HCL runtime data", ErrMalformed, err)
	}
	r.ok(fmt.Sprintf("AK public key from HCL runtime data (HCLAkPub, RSA-%d)", ak.N.BitLen()))

	msg, err1 := hex.DecodeString(ev.TPMQuote.Message)
	sig, err2 := hex.DecodeString(ev.TPMQuote.Signature)
	if err1 != nil || err2 != nil {
		return fmt.Errorf("%w: tpm_quote message/signature is not hex", ErrMalformed)
	}
	if err := tpm.VerifySignature(ak, msg, sig); err != nil {
		return r.fail("TPM quote signature (RSASSA-PKCS1-v1_5 SHA-256, AK)", ErrSignature, err)
	}
	r.ok("TPM quote signature (RSASSA-PKCS1-v1_5 SHA-256 over TPMS_ATTEST, AK)")
	att, err := tpm.ParseAttest(msg)
	if err != nil {
		return r.fail("TPMS_ATTEST parse", ErrMalformed, err)
	}
	r.ok("TPMS_ATTEST parse (magic, type=ATTEST_QUOTE)")
	if len(ev.TPMQuote.PCRs) > 64 {
		return fmt.Errorf("%w: %d PCR values", ErrMalformed, len(ev.TPMQuote.PCRs))
	}
	pcrs := make([][]byte, len(ev.TPMQuote.PCRs))
	for i, s := range ev.TPMQuote.PCRs {
		if pcrs[i], err = hex.DecodeString(s); err != nil {
			return fmt.Errorf("%w: PCR %d is not hex", ErrMalformed, i)
		}
	}
	if err := tpm.CheckPCRs(att, pcrs); err != nil {
		return r.fail("PCR digest", ErrBinding, err)
	}
	r.c.PCRs = map[int]HexBytes{}
	for _, s := range att.Selections {
		for _, i := range s.PCRs {
			r.c.PCRs[i] = pcrs[i]
		}
	}
	r.ok(fmt.Sprintf("PCR digest == SHA-256(%d selected SHA-256 PCRs)", len(r.c.PCRs)))
	r.c.ReportData = att.ExtraData
	runtimeHash := sha256.Sum256(h.RuntimeData)

	if env.Platform == PlatformAzSNP {
		rep, err := snp.Parse(h.TEEReport)
		if err != nil {
			return r.fail("SNP report parse", ErrMalformed, err)
		}
		if rep.Version < 2 || rep.Version > 5 || (r.o.requireSNPv3 && rep.Version < 3) {
			return r.fail("SNP report parse", ErrReportVersion, fmt.Errorf("version %d", rep.Version))
		}
		r.ok(fmt.Sprintf("SNP report parse (version %d)", rep.Version))
		if subtle.ConstantTimeCompare(rep.ReportData[:32], runtimeHash[:]) != 1 {
			return r.fail("HCL binding: SNP report_data[0:32] == SHA-256(runtime data)", ErrBinding, nil)
		}
		r.ok("HCL binding: SNP report_data[0:32] == SHA-256(runtime data)")
		var der []byte
		switch {
		case ev.VCEK != "":
			if der, err = b64url("vcek", ev.VCEK); err != nil {
				return err
			}
		case r.o.getter != nil:
			if der, err = fetchVCEK(ctx, r.o.getter, rep); err != nil {
				return r.fail("VCEK from AMD KDS", ErrNoEndorsement, err)
			}
			r.ok("VCEK fetched from AMD KDS")
		default:
			return r.fail("VCEK certificate", ErrNoEndorsement, errors.New("az-snp evidence has no vcek; fetching it from AMD KDS needs the network (--online)"))
		}
		key, err := x509.ParseCertificate(der)
		if err != nil {
			return r.fail("VCEK certificate parse", ErrMalformed, err)
		}
		r.ok("VCEK certificate parse")
		return r.snpReport(rep, key)
	}

	// az-tdx: the TD quote from Azure IMDS, verified like bare-metal TDX.
	if ev.TDQuote == "" {
		return fmt.Errorf("%w: az-tdx evidence has no td_quote", ErrMalformed)
	}
	raw, err := b64url("td_quote", ev.TDQuote)
	if err != nil {
		return err
	}
	q, err := r.tdxQuote(ctx, raw)
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare(q.Body.ReportData[:32], runtimeHash[:]) != 1 {
		return r.fail("HCL binding: TD quote report_data[0:32] == SHA-256(runtime data)", ErrBinding, nil)
	}
	r.ok("HCL binding: TD quote report_data[0:32] == SHA-256(runtime data)")
	// The HCL regenerates the TD report after the caller's data is written to
	// NV 0x01400002, so runtime "user-data" must be that data padded to 64:
	// the same bytes as the TPM nonce. attestation-rs skips this check.
	if rt.UserData != "" {
		ud, err := rt.UserDataBytes()
		if err != nil {
			return r.fail("runtime user-data", ErrMalformed, err)
		}
		switch {
		case allZero(ud):
			// Older attesters did not write NV 0x01400002: nothing to compare.
			r.c.Warnings = append(r.c.Warnings, "az-tdx runtime user-data is empty: the report data is bound by the TPM quote only")
		case !zeroPadEqual(ud, att.ExtraData, 64):
			return r.fail("runtime user-data == TPM nonce (zero-padded to 64)", ErrBinding, nil)
		default:
			r.ok("runtime user-data == TPM nonce (zero-padded to 64)")
		}
	}
	return nil
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// zeroPadEqual reports whether bound == want zero-padded to len(bound), with
// len(bound) == size when size > 0.
func zeroPadEqual(bound, want []byte, size int) bool {
	if size > 0 && len(bound) != size || len(bound) < len(want) {
		return false
	}
	if subtle.ConstantTimeCompare(bound[:len(want)], want) != 1 {
		return false
	}
	for _, b := range bound[len(want):] {
		if b != 0 {
			return false
		}
	}
	return true
}

// snpReport runs the SNP checks shared by az-snp and snp.
func (r *run) snpReport(rep *snp.Report, key *x509.Certificate) error {
	amd := r.o.roots.AMD()
	if amd == nil {
		return r.fail("AMD cert chain", ErrChain, errors.New("the trust roots hold no AMD root"))
	}
	res, err := snp.Verify(rep, key, amd, r.o.now)
	switch {
	case errors.Is(err, snp.ErrChain):
		return r.fail("AMD cert chain VEK->ASK->ARK", ErrChain, err)
	case errors.Is(err, snp.ErrSignature):
		return r.fail("SNP report signature (ECDSA P-384 SHA-384)", ErrSignature, err)
	case errors.Is(err, snp.ErrTCB):
		return r.fail("VEK chip_id/TCB extensions match the report", ErrBinding, err)
	case err != nil:
		return r.fail("SNP report", ErrMalformed, err)
	}
	kind := "VCEK->ASK"
	if res.Chain.VLEK {
		kind = "VLEK->ASVK"
	}
	r.ok(fmt.Sprintf("AMD cert chain %s->ARK (%s)", kind, res.Chain.ARK.Subject.CommonName))
	r.ok("SNP report signature (ECDSA P-384 SHA-384 over bytes 0..0x2A0)")
	r.ok(fmt.Sprintf("VEK chip_id/TCB extensions match the report (%s)", res.Generation))
	c := r.c
	c.Measurement = rep.Measurement[:]
	c.HostData = rep.HostData[:]
	c.Debug = rep.Debug()
	c.ReportVersion = rep.Version
	c.Generation = string(res.Generation)
	vmpl := rep.VMPL
	c.VMPL = &vmpl
	tcb := snp.DecodeTCB(res.Generation, rep.ReportedTCB)
	c.ReportedTCB = fmt.Sprintf("0x%016x (%s)", rep.ReportedTCB, tcb)
	c.ChipID = rep.ChipID[:]
	c.VLEK = res.Chain.VLEK
	c.snpTCB = &snpTCBInfo{gen: res.Generation, tcb: tcb}
	if rep.VMPL != 0 {
		return r.fail("VMPL == 0", ErrVMPL, fmt.Errorf("report is from VMPL %d", rep.VMPL))
	}
	r.ok("VMPL == 0")
	return r.debugRule(c.Debug, "guest policy")
}

func (r *run) debugRule(debug bool, what string) error {
	if !debug {
		r.ok(what + ": debug disallowed")
		return nil
	}
	if !r.o.allowDebug {
		return r.fail(what+": debug disallowed", ErrDebug, errors.New("the TEE allows debugging: the host can read and change its memory (use --allow-debug only for testing)"))
	}
	r.c.Warnings = append(r.c.Warnings, "DEBUG: the TEE allows debugging (accepted by --allow-debug)")
	r.ok(what + ": debug allowed (--allow-debug)")
	return nil
}

func (r *run) snp(ctx context.Context, env *abi.Envelope) error {
	var ev abi.SNPEvidence
	if err := strict(env.Evidence, &ev); err != nil {
		return err
	}
	raw, err := b64std("attestation_report", ev.AttestationReport)
	if err != nil {
		return err
	}
	rep, err := snp.Parse(raw)
	if err != nil {
		return r.fail("SNP report parse", ErrMalformed, err)
	}
	// Bare metal reports must carry CPUID (v3+); the generation decides the roots.
	if rep.Version < 3 || rep.Version > 5 {
		return r.fail("SNP report parse", ErrReportVersion, fmt.Errorf("version %d, bare-metal SNP requires 3..5", rep.Version))
	}
	if rep.Generation() == snp.Unknown {
		return r.fail("SNP report parse", ErrMalformed, fmt.Errorf("unknown CPU family 0x%02x model 0x%02x", rep.Family, rep.Model))
	}
	r.c.ReportData = rep.ReportData[:]
	r.ok(fmt.Sprintf("SNP report parse (version %d, %s)", rep.Version, rep.Generation()))
	// Any ASK/ARK in the evidence is ignored: only the trust roots count.
	var der []byte
	if ev.CertChain != nil && ev.CertChain.VCEK != nil && *ev.CertChain.VCEK != "" {
		if der, err = b64std("cert_chain.vcek", *ev.CertChain.VCEK); err != nil {
			return err
		}
	} else if ev.CertChain != nil && ev.CertChain.VLEK != nil && *ev.CertChain.VLEK != "" {
		if der, err = b64std("cert_chain.vlek", *ev.CertChain.VLEK); err != nil {
			return err
		}
	} else {
		if r.o.getter == nil {
			return r.fail("VCEK certificate", ErrNoEndorsement, errors.New("the evidence has no VCEK; fetching it from AMD KDS needs the network (--online)"))
		}
		if der, err = fetchVCEK(ctx, r.o.getter, rep); err != nil {
			return r.fail("VCEK from AMD KDS", ErrNoEndorsement, err)
		}
		r.ok("VCEK fetched from AMD KDS")
	}
	key, err := x509.ParseCertificate(der)
	if err != nil {
		return r.fail("VCEK certificate parse", ErrMalformed, err)
	}
	r.ok("VEK certificate parse")
	return r.snpReport(rep, key)
}

func (r *run) tdx(ctx context.Context, env *abi.Envelope) error {
	var ev abi.TDXEvidence
	if err := strict(env.Evidence, &ev); err != nil {
		return err
	}
	raw, err := b64std("quote", ev.Quote)
	if err != nil {
		return err
	}
	q, err := r.tdxQuote(ctx, raw)
	if err != nil {
		return err
	}
	r.c.ReportData = q.Body.ReportData[:]
	if ev.CCEventLog != "" {
		log, err := b64std("cc_eventlog", ev.CCEventLog)
		if err != nil {
			return err
		}
		events, err := tdx.CheckEventLog(&q.Body, log)
		if err != nil {
			return r.fail("CC event log replays to RTMR0..3", ErrBinding, err)
		}
		r.ok(fmt.Sprintf("CC event log replays to RTMR0..3 (%d events)", len(events)))
	}
	return nil
}

func (r *run) dstack(ctx context.Context, env *abi.Envelope) error {
	var ev abi.DstackEvidence
	if err := strict(env.Evidence, &ev); err != nil {
		return err
	}
	if len(ev.Quote) > 2*abi.MaxField {
		return fmt.Errorf("%w: quote is too large", ErrMalformed)
	}
	raw, err := hex.DecodeString(ev.Quote)
	if err != nil {
		return fmt.Errorf("%w: dstack quote is not hex", ErrMalformed)
	}
	q, err := r.tdxQuote(ctx, raw)
	if err != nil {
		return err
	}
	r.c.ReportData = q.Body.ReportData[:]
	r.c.Warnings = append(r.c.Warnings, "dstack: the event log was not replayed")
	return nil
}

// tdxQuote verifies a TD quote and fills the TDX claims.
func (r *run) tdxQuote(ctx context.Context, raw []byte) (*tdx.Quote, error) {
	q, err := tdx.ParseQuote(raw)
	if err != nil {
		return nil, r.fail("TD quote parse", ErrMalformed, err)
	}
	r.ok(fmt.Sprintf("TD quote parse (version %d, body type %d)", q.Version, q.BodyType))
	intel := r.o.roots.Intel()
	if len(intel) == 0 {
		return nil, r.fail("PCK chain", ErrChain, errors.New("the trust roots hold no Intel root"))
	}
	res, err := tdx.Verify(q, intel, r.o.now)
	switch {
	case errors.Is(err, tdx.ErrChain):
		return nil, r.fail("PCK chain to the Intel SGX Root CA", ErrChain, err)
	case errors.Is(err, tdx.ErrQEBinding):
		return nil, r.fail("QE binding", ErrBinding, err)
	case errors.Is(err, tdx.ErrSignature):
		return nil, r.fail("TD quote signatures", ErrSignature, err)
	case err != nil:
		return nil, r.fail("TD quote", ErrMalformed, err)
	}
	r.ok("PCK chain to the pinned Intel SGX Root CA (" + res.Intermediate.Subject.CommonName + ")")
	r.ok("QE report signature (PCK, ECDSA P-256)")
	r.ok("QE binding: report_data == SHA-256(attestation key || QE auth data) || 0^32")
	r.ok("TD quote signature (attestation key, ECDSA P-256)")
	c := r.c
	b := &q.Body
	c.QuoteVersion = q.Version
	c.Measurement = b.MRTD[:]
	c.HostData = b.MRConfigID[:]
	c.TEETCBSVN = b.TEETCBSVN[:]
	c.tdxSVN = b.TEETCBSVN[:]
	c.FMSPC = res.PCKExt.FMSPC
	for i := range b.RTMRs {
		c.RTMRs = append(c.RTMRs, b.RTMRs[i][:])
	}
	c.Debug = b.Debug()

	coll := r.o.collateral
	if coll != nil {
		if _, ok := coll.TCBInfo[strings.ToLower(res.PCKExt.FMSPC)]; !ok && r.o.getter != nil {
			coll = nil // fetch below
		}
	}
	if coll == nil && r.o.getter != nil {
		if coll, err = fetchCollateral(ctx, r.o.getter, res); err != nil {
			return nil, r.fail("Intel collateral from PCS", ErrCollateral, err)
		}
	}
	if coll != nil {
		st, err := tdx.Evaluate(res, coll, r.o.now)
		switch {
		case errors.Is(err, tdx.ErrNoCollateral):
			c.Warnings = append(c.Warnings, "TCB status not evaluated: "+err.Error())
		case errors.Is(err, tdx.ErrRevoked):
			return nil, r.fail("TCB status", ErrRevoked, err)
		case err != nil:
			return nil, r.fail("Intel collateral", ErrCollateral, err)
		default:
			c.TCBStatus, c.QEStatus, c.AdvisoryIDs = string(st.TDXStatus), string(st.QEStatus), st.AdvisoryIDs
			nu := st.NextUpdate.UTC()
			c.Collateral = &nu
			r.ok(fmt.Sprintf("Intel collateral: TCB info, QE identity, CRLs (TCB %s, QE %s)", st.TDXStatus, st.QEStatus))
			if st.TDXStatus != "UpToDate" || st.QEStatus != "UpToDate" {
				c.Warnings = append(c.Warnings, fmt.Sprintf("TCB status %s, QE %s (advisories: %s)", st.TDXStatus, st.QEStatus, strings.Join(st.AdvisoryIDs, ", ")))
			}
		}
	} else {
		c.Warnings = append(c.Warnings, "TCB status not evaluated: no Intel collateral (give --tdx-collateral DIR or --online)")
	}
	if err := r.debugRule(c.Debug, "TD attributes"); err != nil {
		return nil, err
	}
	return q, nil
}

// checkReportData applies WithExpectedReportData.
func checkReportData(c *Claims, want []byte) error {
	size := 0
	switch c.Platform {
	case PlatformSNP, PlatformTDX, PlatformGCPSNP, PlatformGCPTDX, PlatformDstack:
		size = 64
	}
	if len(want) > 64 || !zeroPadEqual(c.ReportData, want, size) {
		return fmt.Errorf("%w: the evidence binds %x, want %x", ErrReportDataMismatch, []byte(c.ReportData), want)
	}
	c.Steps = append(c.Steps, "report data == expected")
	return nil
}

type snpTCBInfo struct {
	gen snp.Generation
	tcb snp.TCB
}
