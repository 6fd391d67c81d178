package verify

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kettle-build/kettle/provenance"
)

// TestOptionTypes: an option that does not apply to an entry point does not
// have that entry point's type, so passing it does not compile (this test
// is the run-time view of that: e.g. Evidence(ev, WithNonce(n)) used to
// return nil, ignoring the nonce).
func TestOptionTypes(t *testing.T) {
	bundleOnly := map[string]any{
		"WithNonce": WithNonce([]byte{1}), "WithSourceSHA256": WithSourceSHA256(strings.Repeat("0", 64)),
		"WithGitCommit": WithGitCommit(strings.Repeat("0", 40)), "WithGitTree": WithGitTree(strings.Repeat("0", 40)),
		"WithBuilderID": WithBuilderID("b"), "WithSourceURI": WithSourceURI("u"),
	}
	for name, o := range bundleOnly {
		if _, ok := o.(EvidenceOption); ok {
			t.Errorf("%s is an EvidenceOption", name)
		}
		if _, ok := o.(BundleOption); !ok {
			t.Errorf("%s is not a BundleOption", name)
		}
	}
	var rd any = WithExpectedReportData([]byte{1})
	if _, ok := rd.(BundleOption); ok {
		t.Error("WithExpectedReportData is a BundleOption")
	}
	for name, o := range map[string]Option{"WithNow": WithNow(pinned), "WithPolicy": WithPolicy(Policy{}),
		"WithAllowInsecureUnsafe": WithAllowInsecureUnsafe(), "WithoutExpectationsUnsafe": WithoutExpectationsUnsafe(),
		"WithMeasurements": WithMeasurements(strings.Repeat("00", 48))} {
		var b BundleOption = o
		var e EvidenceOption = o
		if b == nil || e == nil {
			t.Errorf("%s", name)
		}
	}
}

// TestOptionErrors: invalid, inapplicable and contradictory options are an
// ErrOption from the entry point, before anything is read or checked.
func TestOptionErrors(t *testing.T) {
	ev := mustRead(t, filepath.Join(kexDir, EvidenceFile))
	sha := strings.Repeat("ab", 32)
	bundle := map[string][]BundleOption{
		"no expectation":                     nil,
		"only min-tcb":                       {WithPolicy(Policy{MinTCB: "bl=0"})},
		"only allow-insecure":                {WithAllowInsecureUnsafe()},
		"unsafe and an expectation":          {anything, WithNonce([]byte{1})},
		"unsafe and a policy expectation":    {anything, WithPolicy(Policy{BuilderID: "b"})},
		"empty nonce":                        {WithNonce(nil)},
		"17-byte nonce":                      {WithNonce(make([]byte, 17))},
		"two nonces":                         {WithNonce([]byte{1}), WithNonce([]byte{2})},
		"short git commit":                   {WithGitCommit("0fc9cfa")},
		"git tree not hex":                   {WithGitTree(strings.Repeat("z", 40))},
		"source sha256 too short":            {WithSourceSHA256("abcd")},
		"source sha256 in a policy, not hex": {WithPolicy(Policy{SourceSHA256: strings.Repeat("x", 64)})},
		"empty builder id":                   {WithBuilderID(" ")},
		"empty source uri":                   {WithSourceURI("")},
		"two values for one PCR": {WithPolicy(Policy{PCRs: map[int]string{7: strings.Repeat("00", 32)}}),
			WithPolicy(Policy{PCRs: map[int]string{7: strings.Repeat("11", 32)}})},
		"two min-tcb":     {WithNonce([]byte{1}), WithPolicy(Policy{MinTCB: "bl=1"}), WithPolicy(Policy{MinTCB: "bl=2"})},
		"nil option":      {WithNonce([]byte{1}), nil},
		"nil trust roots": {WithNonce([]byte{1}), WithTrustRoots(nil)},
	}

	bundle["zero clock"] = []BundleOption{WithNonce([]byte{1}), WithNow(time.Time{})}
	for name, opts := range bundle {
		t.Run("Bundle/"+name, func(t *testing.T) {
			if r, err := Bundle(context.Background(), kexDir, opts...); !errors.Is(err, ErrOption) || r != nil {
				t.Errorf("Bundle = %v, %v; want ErrOption", r, err)
			}
		})
	}
	evidence := map[string][]EvidenceOption{
		"no expectation":                         nil,
		"only min-tcb":                           {WithPolicy(Policy{MinTCB: "bl=0"})},
		"a provenance policy field (builder-id)": {WithPolicy(Policy{BuilderID: "https://lunal.dev/kettle-tee/v1"})},
		"a provenance policy field (sha256)":     {WithPolicy(Policy{SourceSHA256: sha, Measurements: []string{strings.Repeat("00", 48)}})},
		"two report data":                        {WithExpectedReportData([]byte{1}), WithExpectedReportData([]byte{2})},
		"65 bytes of report data":                {WithExpectedReportData(make([]byte, 65))},
		"unsafe and report data":                 {anything, WithExpectedReportData([]byte{1})},
	}
	for name, opts := range evidence {
		t.Run("Evidence/"+name, func(t *testing.T) {
			if c, err := Evidence(context.Background(), ev, opts...); !errors.Is(err, ErrOption) || c != nil {
				t.Errorf("Evidence = %v, %v; want ErrOption", c, err)
			}
		})
	}
	// The error says what to do.
	_, err := Bundle(context.Background(), kexDir)
	if err == nil || !strings.Contains(err.Error(), "WithoutExpectationsUnsafe") {
		t.Errorf("no-expectation error: %v", err)
	}
	_, err = Evidence(context.Background(), ev, WithPolicy(Policy{BuilderID: "b"}))
	if err == nil || !strings.Contains(err.Error(), "builder-id") {
		t.Errorf("inapplicable-policy error: %v", err)
	}
}

// TestWithoutExpectationsUnsafe: allowed, and the report says so.
func TestWithoutExpectationsUnsafe(t *testing.T) {
	r := mustBundle(t, kexDir, anything)
	if !r.Passed() || !strings.Contains(strings.Join(r.Warnings, "\n"), NoExpectationsWarning) {
		t.Errorf("warnings %q", r.Warnings)
	}
	if r := mustBundle(t, kexDir, WithNonce(make([]byte, 16))); strings.Contains(strings.Join(r.Warnings, "\n"), NoExpectationsWarning) {
		t.Errorf("no-expectation warning with a nonce: %q", r.Warnings)
	}
}

// TestExpectationsAccumulate: a requirement is never replaced by a later
// one: two different commits are both checked, and the build fails.
func TestExpectationsAccumulate(t *testing.T) {
	good := "0fc9cfa2d7cf98bf1d6c370a5359cd4ac451540a"
	r := mustBundle(t, kexDir, WithGitCommit(good), WithPolicy(Policy{GitCommit: strings.Repeat("1", 40)}))
	if r.Passed() || len(r.Failed()) != 1 || !strings.HasPrefix(r.Failed()[0].Name, "Git commit is 1111") {
		t.Errorf("two commits:\n%s", dump(t, r))
	}
	// The same value twice is one check.
	r = mustBundle(t, kexDir, WithGitCommit(good), WithGitCommit(strings.ToUpper(good)), WithPolicy(Policy{GitCommit: good}))
	n := 0
	for _, c := range r.Checks {
		if strings.HasPrefix(c.Name, "Git commit is") {
			n++
		}
	}
	if !r.Passed() || n != 1 {
		t.Errorf("one commit three times: %d rows\n%s", n, dump(t, r))
	}
}

// TestExpectationOptions: each Bundle expectation option accepts the true
// value and rejects another at its own row.
func TestExpectationOptions(t *testing.T) {
	sum := strings.Repeat("5e", 32)
	dir, _ := writeBundle(t, func(s *provenance.Statement) {
		s.Predicate.BuildDefinition.ExternalParameters.Source.URI = "https://github.com/x/kex"
		s.Predicate.BuildDefinition.ExternalParameters.Source.Digest["sha256"] = sum
	}, func(p []byte) []byte { return insecureEvidence(t, reportData(p, []byte{7})) })
	c := kexClaims(t)
	tests := []struct {
		name   string
		dir    string
		accept BundleOption
		reject BundleOption
		row    string
	}{
		{"nonce", kexDir, WithNonce(make([]byte, 16)), WithNonce([]byte{1}), "Nonce matches the attestation"},
		{"source sha256", dir, WithSourceSHA256(sum), WithSourceSHA256(strings.Repeat("00", 32)), "Source archive sha256 is 0000"},
		{"git commit", kexDir, WithGitCommit("0fc9cfa2d7cf98bf1d6c370a5359cd4ac451540a"), WithGitCommit(strings.Repeat("2", 40)), "Git commit is 2222"},
		{"git tree", kexDir, WithGitTree("40097e700eabf1c2cfacd538ab1d921678419862"), WithGitTree(strings.Repeat("3", 40)), "Git tree is 3333"},
		{"builder id", kexDir, WithBuilderID("https://lunal.dev/kettle-tee/v1"), WithBuilderID("https://example.com/b"), "Builder id is https://example.com/b"},
		{"source uri", dir, WithSourceURI("https://github.com/x/kex"), WithSourceURI("https://github.com/x/kex.git"), "Source URI is https://github.com/x/kex.git"},
		{"measurement", kexDir, WithMeasurements(c.Measurement.String()), WithMeasurements(strings.Repeat("ab", 48)), "Launch measurement is in the allow-list"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if r := mustBundle(t, tc.dir, WithAllowInsecureUnsafe(), tc.accept); !r.Passed() {
				t.Errorf("accept:\n%s", dump(t, r))
			}
			r := mustBundle(t, tc.dir, WithAllowInsecureUnsafe(), tc.reject)
			if got := firstFailed(r); !strings.HasPrefix(got, tc.row) {
				t.Errorf("reject: first failed %q, want %q\n%s", got, tc.row, dump(t, r))
			}
		})
	}
}
