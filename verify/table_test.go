package verify

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kettle-build/kettle/provenance"
)

var update = flag.Bool("update", false, "rewrite golden files")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", "golden", name)
	if *update {
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run with -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file:\n%s", name, got)
	}
}

func TestGoldenKex(t *testing.T) {
	r := mustBundle(t, kexDir, WithNonce(make([]byte, 16)), WithNow(pinned))
	var b bytes.Buffer
	if err := WriteTable(&b, r); err != nil {
		t.Fatal(err)
	}
	golden(t, "kex.txt", b.Bytes())
	j, err := r.JSON()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "kex.json", j)

	dir := copyBundle(t)
	os.WriteFile(filepath.Join(dir, ArtifactsDir, "extra"), nil, 0o644)
	r = mustBundle(t, dir, WithNonce([]byte{1}), WithNow(pinned), WithPolicy(Policy{BuilderID: "https://example.com/b"}))
	r.Dir = "kex-tampered"
	b.Reset()
	WriteTable(&b, r)
	golden(t, "kex-failed.txt", b.Bytes())
}

// TestGoldenExpectations pins the rows of every expectation, accepted and
// rejected, the insecure rows (⚠️, never ✅) and the no-expectation warning.
func TestGoldenExpectations(t *testing.T) {
	c := kexClaims(t)
	table := func(r *Report, name string) []byte {
		r.Dir = name
		var b bytes.Buffer
		if err := WriteTable(&b, r); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	r := mustBundle(t, kexDir, WithNow(pinned), WithNonce(make([]byte, 16)),
		WithGitCommit("0fc9cfa2d7cf98bf1d6c370a5359cd4ac451540a"), WithGitTree("40097e700eabf1c2cfacd538ab1d921678419862"),
		WithBuilderID("https://lunal.dev/kettle-tee/v1"), WithMeasurements(c.Measurement.String()),
		WithPolicy(Policy{PCRs: map[int]string{7: c.PCRs[7].String()}}))
	out := table(r, "kex-expected")

	sum := "d82711392004d6cbe07a7d0a8ebfc76e94f9c0e06f5d1cee7fa8b2c2ab3a4e2b"
	dir, _ := writeBundle(t, func(s *provenance.Statement) {
		src := &s.Predicate.BuildDefinition.ExternalParameters.Source
		src.URI = "https://github.com/x/kex"
		src.Digest["sha256"] = sum
	}, func(p []byte) []byte { return insecureEvidence(t, reportData(p, []byte("nonce"))) })
	r = mustBundle(t, dir, WithNow(pinned), WithAllowInsecureUnsafe(), WithNonce([]byte("nonce")), WithSourceSHA256(sum),
		WithSourceURI("https://github.com/x/kex"))
	out = append(out, table(r, "insecure-expected")...)

	r = mustBundle(t, dir, WithNow(pinned), WithAllowInsecureUnsafe(), WithNonce([]byte("other")),
		WithSourceSHA256(strings.Repeat("d8e87309c7c2", 5)+"abcd"), WithGitCommit(strings.Repeat("1", 40)),
		WithGitTree(strings.Repeat("2", 40)), WithBuilderID("https://example.com/b"), WithSourceURI("https://github.com/evil/kex"),
		WithMeasurements(strings.Repeat("ab", 48)))
	out = append(out, table(r, "insecure-rejected")...)

	r = mustBundle(t, dir, WithNow(pinned), WithNonce([]byte("nonce")))
	out = append(out, table(r, "insecure-refused")...)

	r = mustBundle(t, kexDir, WithNow(pinned), anything)
	out = append(out, table(r, "kex-nothing-expected")...)
	golden(t, "expectations.txt", out)
}
