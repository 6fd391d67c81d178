package verify

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kettle-build/kettle/abi"
)

// TestFixtureVerdicts gives every row of testdata/README.md its verdict, at a
// pinned clock where certificates or collateral expired and also today.
func TestFixtureVerdicts(t *testing.T) {
	coll, err := LoadCollateralDir(attestation + "/collateral")
	if err != nil {
		t.Fatal(err)
	}
	today := time.Now()
	vlekValid := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	genoaReport := readFixture(t, "snp/live-report-v5-genoa.bin")
	testReport := readFixture(t, "snp/test-report.bin")
	tests := []struct {
		name     string
		evidence []byte
		opts     []Option
		wantErr  error  // nil: verified
		wantRD   string // expected bound data (zero-padded per platform)
		check    func(t *testing.T, c *Claims)
	}{
		{name: "az-snp v2 report (Milan) binds 'challenge'", evidence: readFixture(t, "az_snp/evidence-v1.json"), wantRD: "challenge",
			check: func(t *testing.T, c *Claims) {
				if c.ReportVersion != 2 || c.Generation != "Milan" {
					t.Errorf("version %d generation %s, want 2 Milan (fallback)", c.ReportVersion, c.Generation)
				}
			}},
		{name: "az-snp v3 live", evidence: readFixture(t, "az_snp/live-evidence.json"), wantRD: "attestation-test-fixture",
			check: func(t *testing.T, c *Claims) {
				if c.ReportVersion != 3 || len(c.PCRs) != 24 {
					t.Errorf("version %d, %d PCRs", c.ReportVersion, len(c.PCRs))
				}
			}},
		{name: "snp Genoa-line model 0xA0 live evidence", evidence: readFixture(t, "snp/live-evidence-genoa.json"), wantRD: "genoa-test-fixture",
			check: func(t *testing.T, c *Claims) {
				if c.Generation != "Genoa" || c.ReportVersion != 5 {
					t.Errorf("generation %s version %d", c.Generation, c.ReportVersion)
				}
			}},
		{name: "snp Genoa v5 raw report + VCEK", evidence: snpEnvelope(t, genoaReport, "vcek", readFixture(t, "snp/live-vcek-genoa.der")), wantRD: "hello-attestation"},
		{name: "snp Genoa VCEK not yet valid in 2025", evidence: snpEnvelope(t, genoaReport, "vcek", readFixture(t, "snp/live-vcek-genoa.der")),
			opts: []Option{WithNow(vlekValid)}, wantErr: ErrChain},
		{name: "snp v2 test report rejected by bare-metal policy", evidence: snpEnvelope(t, testReport, "vcek", readFixture(t, "snp/test-vcek.der")), wantErr: ErrReportVersion},
		{name: "az-snp with a wrong VCEK (test-vcek-invalid-new)", evidence: replaceVCEK(t, readFixture(t, "az_snp/live-evidence.json"), readFixture(t, "snp/test-vcek-invalid-new.der")), wantErr: ErrChain},
		{name: "snp VLEK expired today", evidence: snpEnvelope(t, readFixture(t, "snp/test-vlek-report.bin"), "vlek", readFixture(t, "snp/test-vlek.der")), wantErr: ErrChain},
		{name: "snp VLEK valid 2025-06-01 but VMPL 1", evidence: snpEnvelope(t, readFixture(t, "snp/test-vlek-report.bin"), "vlek", readFixture(t, "snp/test-vlek.der")),
			opts: []Option{WithNow(vlekValid)}, wantErr: ErrVMPL,
			check: func(t *testing.T, c *Claims) {
				if !c.VLEK {
					t.Error("VLEK not recognised")
				}
			}},
		{name: "tdx v4 DEBUG TD rejected", evidence: tdxEnvelope(t, readFixture(t, "tdx_quote_4.dat")), wantErr: ErrDebug},
		{name: "tdx v4 DEBUG TD with allow-debug", evidence: tdxEnvelope(t, readFixture(t, "tdx_quote_4.dat")), opts: []Option{WithAllowDebugUnsafe()}},
		{name: "tdx v4 with collateral at 2026-04-01: OutOfDate reported, accepted", evidence: tdxEnvelope(t, readFixture(t, "tdx_quote_4.dat")),
			opts: []Option{WithAllowDebugUnsafe(), WithCollateral(coll), WithNow(pinned)},
			check: func(t *testing.T, c *Claims) {
				if c.TCBStatus != "OutOfDate" || c.QEStatus != "UpToDate" {
					t.Errorf("status %s / QE %s, want OutOfDate / UpToDate", c.TCBStatus, c.QEStatus)
				}
			}},
		{name: "tdx v4 with collateral today: expired", evidence: tdxEnvelope(t, readFixture(t, "tdx_quote_4.dat")),
			opts: []Option{WithAllowDebugUnsafe(), WithCollateral(coll), WithNow(today)}, wantErr: ErrCollateral},
		{name: "tdx v5 (TDX 1.5 body)", evidence: tdxEnvelope(t, readFixture(t, "tdx_quote_5.dat")),
			check: func(t *testing.T, c *Claims) {
				if c.QuoteVersion != 5 {
					t.Errorf("quote version %d", c.QuoteVersion)
				}
			}},
		{name: "tdx v4 live", evidence: tdxEnvelope(t, readFixture(t, "tdx_quote_live.dat"))},
		{name: "tdx v4 live, PCK not yet valid in 2025", evidence: tdxEnvelope(t, readFixture(t, "tdx_quote_live.dat")), opts: []Option{WithNow(vlekValid)}, wantErr: ErrChain},
		{name: "az-tdx v1 binds 'challenge' (no collateral for its FMSPC)", evidence: readFixture(t, "az_tdx/evidence-v1.json"), wantRD: "challenge",
			opts: []Option{WithCollateral(coll), WithNow(pinned)},
			check: func(t *testing.T, c *Claims) {
				if c.TCBStatus != "" || !strings.Contains(strings.Join(c.Warnings, ";"), "no collateral") {
					t.Errorf("status %q warnings %v", c.TCBStatus, c.Warnings)
				}
			}},
		{name: "az-tdx live with offline collateral at 2026-04-01", evidence: envelope(t, PlatformAzTDX, readFixture(t, "az_tdx/live-evidence.json")),
			wantRD: "attestation-test-fixture", opts: []Option{WithCollateral(coll), WithNow(pinned)},
			check: func(t *testing.T, c *Claims) {
				if c.TCBStatus != "UpToDate" || c.QEStatus != "UpToDate" {
					t.Errorf("status %s / %s", c.TCBStatus, c.QEStatus)
				}
				if !strings.Contains(strings.Join(c.Steps, ";"), "user-data") {
					t.Error("runtime user-data was not checked")
				}
			}},
		{name: "az-tdx live with collateral today: expired", evidence: envelope(t, PlatformAzTDX, readFixture(t, "az_tdx/live-evidence.json")),
			opts: []Option{WithCollateral(coll), WithNow(today)}, wantErr: ErrCollateral},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var base []EvidenceOption
			for _, o := range tc.opts {
				base = append(base, o)
			}
			opts := append(base[:len(base):len(base)], anything)
			if tc.wantRD != "" {
				opts = append(base[:len(base):len(base)], WithExpectedReportData([]byte(tc.wantRD)))
			}
			c, err := Evidence(context.Background(), tc.evidence, opts...)
			if tc.wantErr == nil && err != nil {
				t.Fatalf("Evidence: %v", err)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("Evidence = %v, want %v", err, tc.wantErr)
			}
			if tc.check != nil && c != nil {
				tc.check(t, c)
			}
			if err == nil && tc.wantRD != "" {
				// Any other report data fails.
				if _, err := Evidence(context.Background(), tc.evidence, append(base[:len(base):len(base)], WithExpectedReportData([]byte(tc.wantRD+"x")))...); !errors.Is(err, ErrReportDataMismatch) {
					t.Errorf("wrong report data: %v, want ErrReportDataMismatch", err)
				}
			}
		})
	}
}

func replaceVCEK(t *testing.T, evidence, der []byte) []byte {
	t.Helper()
	var env abi.Envelope
	if err := json.Unmarshal(evidence, &env); err != nil {
		t.Fatal(err)
	}
	var ev map[string]any
	if err := json.Unmarshal(env.Evidence, &ev); err != nil {
		t.Fatal(err)
	}
	ev["vcek"] = base64.RawURLEncoding.EncodeToString(der)
	return envelope(t, env.Platform, ev)
}

func TestTDXEventLog(t *testing.T) {
	quote := base64.StdEncoding.EncodeToString(readFixture(t, "tdx_quote_live.dat"))
	for name, tc := range map[string]struct {
		log  string
		want error
	}{
		"matching":   {"tdx_ccel_live2.dat", nil},
		"other boot": {"tdx_ccel_live.bin", ErrBinding},
	} {
		ev := envelope(t, PlatformTDX, map[string]any{"quote": quote, "cc_eventlog": base64.StdEncoding.EncodeToString(readFixture(t, tc.log))})
		c, err := Evidence(context.Background(), ev, anything)
		if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("%s: %v", name, err)
		}
		if err == nil && !strings.Contains(strings.Join(c.Steps, ";"), "event log") {
			t.Errorf("%s: steps %v", name, c.Steps)
		}
	}
}

func TestGCPTags(t *testing.T) {
	var env abi.Envelope
	json.Unmarshal(readFixture(t, "snp/live-evidence-genoa.json"), &env)
	c, err := Evidence(context.Background(), envelope(t, PlatformGCPSNP, []byte(env.Evidence)), WithExpectedReportData([]byte("genoa-test-fixture")))
	if err != nil || c.Platform != PlatformGCPSNP {
		t.Errorf("gcp-snp: %v", err)
	}
	q := map[string]any{"quote": base64.StdEncoding.EncodeToString(readFixture(t, "tdx_quote_live.dat"))}
	if c, err := Evidence(context.Background(), envelope(t, PlatformGCPTDX, q), anything); err != nil || c.Platform != PlatformGCPTDX {
		t.Errorf("gcp-tdx: %v", err)
	}
	dq := map[string]any{"quote": hex.EncodeToString(readFixture(t, "tdx_quote_live.dat"))}
	if c, err := Evidence(context.Background(), envelope(t, PlatformDstack, dq), anything); err != nil || c.Platform != PlatformDstack {
		t.Errorf("dstack: %v", err)
	}
	if _, err := Evidence(context.Background(), envelope(t, "sgx", q), anything); !errors.Is(err, ErrUnsupportedPlatform) {
		t.Errorf("unknown platform: %v", err)
	}
}
