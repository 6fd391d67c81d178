package verify

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kettle-build/kettle/provenance"
)

func kexClaims(t *testing.T) *Claims {
	t.Helper()
	c, err := Evidence(context.Background(), mustRead(t, filepath.Join(kexDir, EvidenceFile)), anything)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestPolicyKex: each policy field accepts the kex bundle's true value and
// rejects another, at the check of that field.
func TestPolicyKex(t *testing.T) {
	c := kexClaims(t)
	meas := c.Measurement.String()
	pcr7 := c.PCRs[7].String()
	other48 := strings.Repeat("ab", 48)
	tests := []struct {
		name   string
		policy Policy
		reject string // first failing check when rejected; "" = passes
	}{
		{"builder-id accept", Policy{BuilderID: "https://lunal.dev/kettle-tee/v1"}, ""},
		{"builder-id reject", Policy{BuilderID: "https://example.com/builder"}, "Builder id is"},
		{"git-commit accept", Policy{GitCommit: "0FC9CFA2D7CF98BF1D6C370A5359CD4AC451540A"}, ""},
		{"git-commit reject", Policy{GitCommit: strings.Repeat("1", 40)}, "Git commit is"},
		{"source-uri reject", Policy{SourceURI: "https://github.com/x/kex"}, "Source URI is"},
		{"git-tree accept", Policy{GitTree: "40097E700EABF1C2CFACD538AB1D921678419862"}, ""},
		{"git-tree reject", Policy{GitTree: strings.Repeat("1", 40)}, "Git tree is"},
		{"source-sha256 reject (a git build names no archive)", Policy{SourceSHA256: strings.Repeat("ab", 32)}, "Source archive sha256 is"},
		{"measurement accept (one of a list)", Policy{Measurements: []string{other48, meas}}, ""},
		{"measurement reject", Policy{Measurements: []string{other48}}, "Launch measurement"},
		{"pcr accept", Policy{PCRs: map[int]string{7: pcr7}}, ""},
		{"pcr reject", Policy{PCRs: map[int]string{7: strings.Repeat("00", 32)}}, "PCR[7]"},
		{"min-tcb accept (parts)", Policy{MinTCB: "bl=0,tee=0,snp=0,ucode=0"}, ""},
		{"min-tcb reject (parts)", Policy{MinTCB: "bl=255"}, "TCB is at least"},
		{"min-tcb reject (TCB_VERSION)", Policy{MinTCB: "ffffffffffffffff"}, "TCB is at least"},
		{"min-tcb reject (TDX form on SNP)", Policy{MinTCB: strings.Repeat("00", 16)}, "TCB is at least"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.policy.Validate(); err != nil {
				t.Fatal(err)
			}
			opts := []BundleOption{WithPolicy(tc.policy)}
			eopts := []EvidenceOption{WithPolicy(tc.policy)}
			if !tc.policy.HasExpectations() { // min-tcb alone expects nothing of the build
				opts, eopts = append(opts, anything), append(eopts, anything)
			}
			r := mustBundle(t, kexDir, opts...)
			if got := firstFailed(r); !strings.HasPrefix(got, tc.reject) || (tc.reject == "") != (got == "") {
				t.Errorf("first failed %q, want %q\n%s", got, tc.reject, dump(t, r))
			}
			_, err := Evidence(context.Background(), mustRead(t, filepath.Join(kexDir, EvidenceFile)), eopts...)
			if len(tc.policy.provenanceFields()) > 0 {
				// A provenance field does not apply to Evidence: an error, never ignored.
				if !errors.Is(err, ErrOption) {
					t.Errorf("Evidence with a provenance policy: %v, want ErrOption", err)
				}
			} else if (tc.reject != "") != errors.Is(err, ErrPolicy) {
				t.Errorf("Evidence with policy: %v", err)
			}
		})
	}
}

// TestPolicySourceAccept: source-uri and source-sha256 on a bundle whose
// provenance names an archive (the kex bundle names none).
func TestPolicySourceAccept(t *testing.T) {
	sum := strings.Repeat("5e", 32)
	dir, _ := writeBundle(t, func(s *provenance.Statement) {
		s.Predicate.BuildDefinition.ExternalParameters.Source.URI = "https://github.com/x/kex"
		s.Predicate.BuildDefinition.ExternalParameters.Source.Digest["sha256"] = sum
	}, func(p []byte) []byte { return insecureEvidence(t, reportData(p, nil)) })
	if r := mustBundle(t, dir, WithAllowInsecureUnsafe(), WithPolicy(Policy{SourceSHA256: strings.ToUpper(sum)})); !r.Passed() {
		t.Errorf("source-sha256 accept:\n%s", dump(t, r))
	}
	if r := mustBundle(t, dir, WithAllowInsecureUnsafe(), WithSourceSHA256(sum)); !r.Passed() {
		t.Errorf("WithSourceSHA256 accept:\n%s", dump(t, r))
	}
	r := mustBundle(t, dir, WithAllowInsecureUnsafe(), WithSourceSHA256(strings.Repeat("00", 32)))
	if got := firstFailed(r); got != "Source archive sha256 is "+strings.Repeat("00", 32) || r.Failed()[0].Detail != `source archive sha256 "`+sum+`"` {
		t.Errorf("source-sha256 reject: %q\n%s", got, dump(t, r))
	}
	if r := mustBundle(t, dir, WithAllowInsecureUnsafe(), WithPolicy(Policy{SourceURI: "https://github.com/x/kex"})); !r.Passed() {
		t.Errorf("source-uri accept:\n%s", dump(t, r))
	}
	if got := firstFailed(mustBundle(t, dir, WithAllowInsecureUnsafe(), WithPolicy(Policy{SourceURI: "https://github.com/x/kex.git"}))); !strings.HasPrefix(got, "Source URI") {
		t.Errorf("source-uri reject: %q", got)
	}
}

// TestPolicyNonAzure: PCR and measurement rules on platforms without them fail.
func TestPolicyNonAzure(t *testing.T) {
	ev, roots := simSNP(t, "Milan-B1", nil, false)
	tr, _ := ParseTrustRoots(roots)
	c, err := Evidence(context.Background(), ev, WithTrustRoots(tr), anything)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []Policy{
		{PCRs: map[int]string{0: strings.Repeat("00", 32)}},
		{Measurements: []string{strings.Repeat("11", 48)}},
		{MinTCB: "bl=1"},
	} {
		opts := []EvidenceOption{WithTrustRoots(tr), WithPolicy(p)}
		if !p.HasExpectations() {
			opts = append(opts, anything)
		}
		if _, err := Evidence(context.Background(), ev, opts...); !errors.Is(err, ErrPolicy) {
			t.Errorf("%+v: %v, want ErrPolicy", p, err)
		}
	}
	if _, err := Evidence(context.Background(), ev, WithTrustRoots(tr), WithPolicy(Policy{Measurements: []string{c.Measurement.String()}, MinTCB: "0000000000000000"})); err != nil {
		t.Errorf("matching policy: %v", err)
	}
}

func TestPolicyDebug(t *testing.T) {
	ev, roots := simSNP(t, "Genoa-B1", nil, true)
	tr, _ := ParseTrustRoots(roots)
	if _, err := Evidence(context.Background(), ev, WithTrustRoots(tr), anything); !errors.Is(err, ErrDebug) {
		t.Errorf("debug guest: %v, want ErrDebug", err)
	}
	for _, opt := range []Option{WithAllowDebugUnsafe(), WithPolicy(Policy{AllowDebug: true})} {
		c, err := Evidence(context.Background(), ev, WithTrustRoots(tr), opt, anything)
		if err != nil || !c.Debug || len(c.Warnings) == 0 {
			t.Errorf("debug guest allowed: %v %+v", err, c)
		}
	}
}

func TestPolicyTDXMinTCB(t *testing.T) {
	ev := tdxEnvelope(t, readFixture(t, "tdx_quote_live.dat"))
	if _, err := Evidence(context.Background(), ev, WithPolicy(Policy{MinTCB: strings.Repeat("00", 16)}), anything); err != nil {
		t.Errorf("min-tcb zeros: %v", err)
	}
	if _, err := Evidence(context.Background(), ev, WithPolicy(Policy{MinTCB: strings.Repeat("ff", 16)}), anything); !errors.Is(err, ErrPolicy) {
		t.Errorf("min-tcb ff: %v", err)
	}
}

func TestLoadPolicy(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.json")
	os.WriteFile(good, []byte(`{"builder-id":"b","source-uri":"s","git-commit":"`+strings.Repeat("a", 40)+`","measurement":["`+strings.Repeat("00", 48)+`"],"pcr":{"7":"`+strings.Repeat("11", 32)+`"},"min-tcb":"bl=1,snp=2","allow-debug":true}`), 0o644)
	p, err := LoadPolicy(good)
	if err != nil {
		t.Fatal(err)
	}
	if p.BuilderID != "b" || p.SourceURI != "s" || len(p.Measurements) != 1 || p.PCRs[7] == "" || p.MinTCB != "bl=1,snp=2" || !p.AllowDebug {
		t.Errorf("%+v", p)
	}
	for name, body := range map[string]string{
		"unknown key":     `{"builderid":"b"}`,
		"bad measurement": `{"measurement":["00"]}`,
		"bad pcr":         `{"pcr":{"24":"` + strings.Repeat("11", 32) + `"}}`,
		"bad min-tcb":     `{"min-tcb":"high"}`,
		"short commit":    `{"git-commit":"0fc9cfa"}`,
		"not json":        `builder-id: b`,
	} {
		f := filepath.Join(dir, "bad.json")
		os.WriteFile(f, []byte(body), 0o644)
		if _, err := LoadPolicy(f); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := LoadPolicy(filepath.Join(dir, "missing.json")); !errors.Is(err, ErrUnreadable) {
		t.Errorf("missing file: %v", err)
	}
}
