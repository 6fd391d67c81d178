package attest

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kettle-build/kettle/attest/attesttest"
)

// TestNoBackDoors guards docs/provenance.md (nothing of a submission runs on the trusted side): nothing a build's subprocess controls
// (environment variables, files it could write, process-global flags) may
// change where evidence comes from. Options are code-only.
func TestNoBackDoors(t *testing.T) {
	files, _ := filepath.Glob("*.go")
	bad := regexp.MustCompile(`os\.(Getenv|LookupEnv|Environ)|flag\.(String|Bool|Int|Parse)|os\.ExpandEnv`)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if m := bad.Find(b); m != nil {
			t.Errorf("%s uses %s: attesters must take configuration only from Options", f, m)
		}
	}
}

func BenchmarkAttestInsecure(b *testing.B) {
	a, _ := New(context.Background(), "insecure", quiet)
	rd := testRD("bench")
	for b.Loop() {
		if _, err := a.Attest(context.Background(), rd); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAttestSimSNP(b *testing.B) {
	a, err := New(context.Background(), "sim-snp", quiet)
	if err != nil {
		b.Fatal(err)
	}
	rd := testRD("bench")
	for b.Loop() {
		if _, err := a.Attest(context.Background(), rd); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAttestAzSNPSimulator measures the az-snp path (NV read of the HCL
// report, TPM2_Quote, 3× TPM2_PCR_Read, self-checks, IMDS VCEK over loopback
// HTTP) against the software TPM simulator.
func BenchmarkAttestAzSNPSimulator(b *testing.B) {
	v := attesttest.NewAzureVTPM(b, false)
	imds := attesttest.NewIMDS(b, v.Signer, nil)
	a, err := New(context.Background(), "az-snp", WithTPM(v), WithIMDS(imds.URL, imds.Client()), quiet)
	if err != nil {
		b.Fatal(err)
	}
	rd := testRD("bench")
	for b.Loop() {
		if _, err := a.Attest(context.Background(), rd); err != nil {
			b.Fatal(err)
		}
	}
}
