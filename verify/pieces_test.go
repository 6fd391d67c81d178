package verify

import (
	"crypto/x509"
	"encoding/pem"
	"testing"

	"github.com/kettle-build/kettle/verify/hcl"
	"github.com/kettle-build/kettle/verify/snp"
	"github.com/kettle-build/kettle/verify/tpm"
)

// TestAzSNPPieces: the separate pieces of az-snp evidence (fixtures README:
// "for unit tests of the parsers"). They come from different captures:
// hcl-report.bin's SNP report is signed by vcek.pem's VCEK, not by
// imds-vcek.der (another chip), and tpm-quote.sig matches none of the AKs
// at hand, so only its message is parsed.
func TestAzSNPPieces(t *testing.T) {
	h, err := hcl.Parse(readFixture(t, "az_snp/hcl-report.bin"))
	if err != nil {
		t.Fatal(err)
	}
	rt, err := hcl.ParseRuntimeData(h.RuntimeData)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rt.AttestationKey(); err != nil {
		t.Fatal(err)
	}
	a, err := tpm.ParseAttest(readFixture(t, "az_snp/tpm-quote.msg"))
	if err != nil || string(a.ExtraData) != "challenge" {
		t.Errorf("tpm-quote.msg: %q %v", a.ExtraData, err)
	}
	rep, err := snp.Parse(h.TEEReport)
	if err != nil {
		t.Fatal(err)
	}
	amd := DefaultTrustRoots().AMD()
	blk, _ := pem.Decode(readFixture(t, "az_snp/vcek.pem"))
	vcek, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := snp.Verify(rep, vcek, amd, pinned); err != nil {
		t.Errorf("HCL SNP report with vcek.pem's VCEK: %v", err)
	}
	other, err := x509.ParseCertificate(readFixture(t, "az_snp/imds-vcek.der"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := snp.VerifyChain(other, amd, pinned); err != nil {
		t.Errorf("imds-vcek.der chain: %v", err)
	}
	if _, err := snp.Verify(rep, other, amd, pinned); err == nil {
		t.Error("the report verifies with another chip's VCEK")
	}
	// The IMDS chain is AMD's Milan ASK and ARK: the embedded ones.
	for _, name := range []string{"az_snp/imds-chain-0.der", "az_snp/imds-chain-1.der"} {
		c, err := x509.ParseCertificate(readFixture(t, name))
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, r := range append(append([]*x509.Certificate{}, amd.ARKs...), amd.Intermediates...) {
			found = found || r.Equal(c)
		}
		if !found {
			t.Errorf("%s (%s) is not an embedded AMD root", name, c.Subject.CommonName)
		}
	}
}
