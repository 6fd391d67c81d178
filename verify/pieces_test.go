package verify

import (
	"crypto/x509"
	"encoding/pem"
	"testing"

	"github.com/kettle-build/kettle/verify/hcl"
	"github.com/kettle-build/kettle/verify/snp"
	"github.com/kettle-build/kettle/verify/tpm"
)

// TestAzSNPPieces: the separate pieces of an az-snp evidence (fixtures
// README: "for unit tests of the parsers") fit together.
func TestAzSNPPieces(t *testing.T) {
	h, err := hcl.Parse(readFixture(t, "az_snp/hcl-report.bin"))
	if err != nil {
		t.Fatal(err)
	}
	rt, err := hcl.ParseRuntimeData(h.RuntimeData)
	if err != nil {
		t.Fatal(err)
	}
	ak, err := rt.AttestationKey()
	if err != nil {
		t.Fatal(err)
	}
	msg, sig := readFixture(t, "az_snp/tpm-quote.msg"), readFixture(t, "az_snp/tpm-quote.sig")
	if err := tpm.VerifySignature(ak, msg, sig); err != nil {
		t.Errorf("tpm-quote.sig over tpm-quote.msg with the HCL's AK: %v", err)
	}
	if _, err := tpm.ParseAttest(msg); err != nil {
		t.Error(err)
	}
	rep, err := snp.Parse(h.TEEReport)
	if err != nil {
		t.Fatal(err)
	}
	vcek, err := x509.ParseCertificate(readFixture(t, "az_snp/imds-vcek.der"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := snp.Verify(rep, vcek, DefaultTrustRoots().AMD(), pinned); err != nil {
		t.Errorf("HCL SNP report with the IMDS VCEK: %v", err)
	}
	// The IMDS chain is AMD's Milan ASK and ARK, the embedded ones.
	for _, name := range []string{"az_snp/imds-chain-0.der", "az_snp/imds-chain-1.der"} {
		c, err := x509.ParseCertificate(readFixture(t, name))
		if err != nil {
			t.Fatal(err)
		}
		found := false
		amd := DefaultTrustRoots().AMD()
		for _, r := range append(append([]*x509.Certificate{}, amd.ARKs...), amd.Intermediates...) {
			found = found || r.Equal(c)
		}
		if !found {
			t.Errorf("%s (%s) is not an embedded AMD root", name, c.Subject.CommonName)
		}
	}
	// vcek.pem is another machine's VCEK (then ASK, ARK): it chains to the
	// embedded Milan roots but does not verify this report.
	blk, _ := pem.Decode(readFixture(t, "az_snp/vcek.pem"))
	other, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := snp.VerifyChain(other, DefaultTrustRoots().AMD(), pinned); err != nil {
		t.Errorf("vcek.pem chain: %v", err)
	}
	if err := snp.VerifySignature(rep, other); err == nil {
		t.Error("the report verifies with another machine's VCEK")
	}
}
