package snp

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	sevverify "github.com/google/go-sev-guest/verify"
)

// TestCrossCheckGoSevGuest: go-sev-guest's verifier agrees with this package
// on the reports whose product it recognises (Milan model 0x01), and on a
// tampered one. (It cannot take the Genoa-line 0xA0 fixture: see the package
// comment.)
func TestCrossCheckGoSevGuest(t *testing.T) {
	hclBlob, vcekDER := kexEvidence(t)
	raw := append([]byte(nil), hclBlob[0x20:0x20+ReportSize]...)
	key, err := x509.ParseCertificate(vcekDER)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
	for _, tamper := range []bool{false, true} {
		b := append([]byte(nil), raw...)
		if tamper {
			b[0x90] ^= 1 // MEASUREMENT
		}
		r, err := Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		_, ours := Verify(r, key, DefaultRoots(), now)
		pr, err := abi.ReportToProto(b)
		if err != nil {
			t.Fatal(err)
		}
		theirs := sevverify.SnpAttestation(&spb.Attestation{Report: pr, CertificateChain: &spb.CertificateChain{VcekCert: vcekDER}},
			&sevverify.Options{Now: now, DisableCertFetching: true})
		if (ours == nil) != (theirs == nil) || (ours == nil) == tamper {
			t.Errorf("tamper=%v: ours %v, go-sev-guest %v", tamper, ours, theirs)
		}
	}
}

// kexEvidence returns the HCL report and VCEK of the kex bundle's az-snp evidence.
func kexEvidence(t *testing.T) ([]byte, []byte) {
	b, err := os.ReadFile(filepath.Join("..", "testdata", "kettle-v1", "kex", "evidence.json"))
	if err != nil {
		t.Fatal(err)
	}
	var env struct {
		Evidence struct {
			HCLReport string `json:"hcl_report"`
			VCEK      string `json:"vcek"`
		}
	}
	if err := json.Unmarshal(b, &env); err != nil {
		t.Fatal(err)
	}
	hcl, err1 := base64.RawURLEncoding.DecodeString(env.Evidence.HCLReport)
	vcek, err2 := base64.RawURLEncoding.DecodeString(env.Evidence.VCEK)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	return hcl, vcek
}
