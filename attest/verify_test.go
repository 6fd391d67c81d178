package attest

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/configfs/faketsm"
	sevtesting "github.com/google/go-sev-guest/testing"
	tdxtesting "github.com/google/go-tdx-guest/testing"
	"github.com/kettle-build/kettle/attest/attesttest"
	"github.com/kettle-build/kettle/verify"
)

// These tests feed evidence from the production attesters, running on
// simulated hardware, to the production verifier.

var verifyNow = verify.WithNow(time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC))

func simRoots(t *testing.T) *verify.TrustRoots {
	t.Helper()
	var b bytes.Buffer
	if err := WriteSimRoots(&b); err != nil {
		t.Fatal(err)
	}
	roots, err := verify.ParseTrustRoots(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return roots
}

// checkVerdicts: passes with the test roots and the right report data; fails
// with the embedded (real) roots; fails with another nonce.
func checkVerdicts(t *testing.T, ev []byte, rd [ReportDataSize]byte, extra ...verify.EvidenceOption) *verify.Claims {
	t.Helper()
	roots := simRoots(t)
	opts := append([]verify.EvidenceOption{verifyNow, verify.WithTrustRoots(roots), verify.WithExpectedReportData(rd[:])}, extra...)
	c, err := verify.Evidence(context.Background(), ev, opts...)
	if err != nil {
		t.Fatalf("verify with the test roots: %v", err)
	}
	if _, err := verify.Evidence(context.Background(), ev, append([]verify.EvidenceOption{verifyNow, verify.WithExpectedReportData(rd[:])}, extra...)...); !errors.Is(err, verify.ErrChain) {
		t.Fatalf("verify with the real AMD roots: err = %v, want ErrChain", err)
	}
	wrong := rd
	wrong[40] ^= 1 // another nonce
	if _, err := verify.Evidence(context.Background(), ev, append([]verify.EvidenceOption{verifyNow, verify.WithTrustRoots(roots), verify.WithExpectedReportData(wrong[:])}, extra...)...); !errors.Is(err, verify.ErrReportDataMismatch) {
		t.Fatalf("verify with a wrong nonce: err = %v, want ErrReportDataMismatch", err)
	}
	return c
}

func TestVerifySimSNP(t *testing.T) {
	a, err := New(context.Background(), "sim-snp", quiet)
	if err != nil {
		t.Fatal(err)
	}
	rd := testRD("sim-verify")
	ev, err := a.Attest(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	c := checkVerdicts(t, ev, rd) // no WithAllowDebugUnsafe: sim-snp's policy has no DEBUG
	if c.Platform != PlatformSNP || c.Debug {
		t.Fatalf("claims %+v", c)
	}
}

func TestVerifyAzSNPSimulator(t *testing.T) {
	v := attesttest.NewAzureVTPM(t, false)
	imds := attesttest.NewIMDS(t, v.Signer, nil)
	a, err := New(context.Background(), "az-snp", WithTPM(v), WithIMDS(imds.URL, imds.Client()), quiet)
	if err != nil {
		t.Fatal(err)
	}
	rd := testRD("az-snp-verify")
	ev, err := a.Attest(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	c := checkVerdicts(t, ev, rd)
	if c.Platform != PlatformAzSNP || !bytes.Equal(c.ReportData, rd[:]) || len(c.PCRs) != 24 {
		t.Fatalf("claims: platform %s report data %x, %d PCRs", c.Platform, c.ReportData, len(c.PCRs))
	}
}

func TestVerifySNPMockDevices(t *testing.T) {
	s := attesttest.Signer(t)
	rd := testRD("bare-metal")
	sub := faketsm.ReportV7(0)
	orig, origMake := sub.ReadAttr, sub.MakeEntry
	sub.MakeEntry = func() *faketsm.ReportEntry {
		e := origMake()
		e.ROAttrs = map[string][]byte{"provider": []byte("sev_guest\n")}
		return e
	}
	sub.ReadAttr = func(e *faketsm.ReportEntry, attr string) ([]byte, error) {
		switch attr {
		case "outblob":
			var in [64]byte
			copy(in[:], e.InAttrs["inblob"].Value)
			return attesttest.SignedSNPReport(t, s, in, attesttest.ReportOptions{}), nil
		case "auxblob":
			return attesttest.CertTable(s), nil
		}
		return orig(e, attr)
	}
	for name, opts := range map[string][]Option{
		"quote provider": {WithSNPQuoteProvider(&sevtesting.QuoteProvider{Device: attesttest.SNPDevice(s, pad64(rd))})},
		"sev-guest":      {WithSNPDevice(attesttest.SNPDevice(s, pad64(rd))), WithSysRoot(t.TempDir())},
		"configfs-tsm":   {WithConfigFS(&faketsm.Client{Subsystems: map[string]configfsi.Client{"report": sub}})},
	} {
		t.Run(name, func(t *testing.T) {
			a, err := New(context.Background(), "snp", append(opts, quiet)...)
			if err != nil {
				t.Fatal(err)
			}
			ev, err := a.Attest(context.Background(), rd)
			if err != nil {
				t.Fatal(err)
			}
			checkVerdicts(t, ev, rd)
		})
	}
}

func TestVerifyTDXMock(t *testing.T) {
	tcs := tdxtesting.TestCases()[:1]
	bound, err := TDXQuoteReportData(tcs[0].Quote)
	if err != nil {
		t.Fatal(err)
	}
	copy(tcs[0].Input[:], bound)
	qp, _ := tdxtesting.TcQuoteProvider(tcs)
	a, err := New(context.Background(), "tdx", WithTDXQuoteProvider(qp), WithCCELPath(""), quiet)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := a.(*tdxAttester).attest64(context.Background(), tcs[0].Input)
	if err != nil {
		t.Fatal(err)
	}
	c, err := verify.Evidence(context.Background(), ev, verifyNow, verify.WithExpectedReportData(bound))
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if c.Platform != PlatformTDX || !bytes.Equal(c.ReportData, bound) {
		t.Fatalf("claims %+v", c)
	}
	other := bytes.Clone(bound)
	other[0] ^= 1
	if _, err := verify.Evidence(context.Background(), ev, verifyNow, verify.WithExpectedReportData(other)); !errors.Is(err, verify.ErrReportDataMismatch) {
		t.Fatalf("wrong report data: %v", err)
	}
}

// TestVerifyAzTDXPlumbing: the az-tdx evidence is well-formed and its TPM part
// verifies; the canned TD quote (no fake Intel signer exists) cannot bind
// this vTPM's runtime data, and the verifier says so.
func TestVerifyAzTDXPlumbing(t *testing.T) {
	v := attesttest.NewAzureVTPM(t, true)
	imds := attesttest.NewIMDS(t, nil, tdxtesting.TestCases()[0].Quote)
	a, err := New(context.Background(), "az-tdx", WithTPM(v), WithIMDS(imds.URL, imds.Client()), quiet)
	if err != nil {
		t.Fatal(err)
	}
	rd := testRD("az-tdx-verify")
	ev, err := a.Attest(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verify.Evidence(context.Background(), ev, verifyNow, verify.WithExpectedReportData(rd[:])); !errors.Is(err, verify.ErrBinding) {
		t.Fatalf("err = %v, want ErrBinding (TD quote vs runtime data)", err)
	}
}

func TestVerifyInsecure(t *testing.T) {
	a, _ := New(context.Background(), "insecure", quiet)
	rd := testRD("insecure")
	ev, err := a.Attest(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verify.Evidence(context.Background(), ev, verify.WithExpectedReportData(rd[:])); !errors.Is(err, verify.ErrInsecure) {
		t.Fatalf("err = %v, want ErrInsecure", err)
	}
	if _, err := verify.Evidence(context.Background(), ev, verify.WithAllowInsecureUnsafe(), verify.WithExpectedReportData(rd[:])); err != nil {
		t.Fatalf("with --allow-insecure: %v", err)
	}
}
