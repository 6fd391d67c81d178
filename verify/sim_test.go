package verify

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/pem"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	sevtest "github.com/google/go-sev-guest/testing"
)

// simSNP makes "sim-snp" evidence as engineer C's attester does: a bare-metal
// snp envelope whose report is signed by go-sev-guest's test-only AMD keys.
// It returns the evidence and the PEM of the test ARK+ASK.
func simSNP(t testing.TB, product string, reportData []byte, debug bool) ([]byte, []byte) {
	t.Helper()
	signer, err := sevtest.DefaultTestOnlyCertChain(product, time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	fms := abi.FmsToCpuid1Eax(0x19, 0x01, 0x01) // Milan
	if product == "Genoa-B1" {
		fms = abi.FmsToCpuid1Eax(0x19, 0x11, 0x01)
	}
	resp := sevtest.CreateRawReport(&sevtest.TestReportOptions{ReportData: reportData, FMS: fms, Version: 3})
	rep := resp[:abi.ReportSize]
	policy := binary.LittleEndian.Uint64(rep[0x08:])
	if !debug {
		policy &^= 1 << 19
	}
	binary.LittleEndian.PutUint64(rep[0x08:], policy)
	r, s, err := signer.Sign(rep[:0x2A0])
	if err != nil {
		t.Fatal(err)
	}
	if err := abi.SetSignature(r, s, rep); err != nil {
		t.Fatal(err)
	}
	ev := envelope(t, PlatformSNP, map[string]any{
		"attestation_report": base64.StdEncoding.EncodeToString(rep),
		"cert_chain": map[string]any{
			"vcek": base64.StdEncoding.EncodeToString(signer.Vcek.Raw),
			// The evidence's own ASK/ARK must be ignored.
			"ask": base64.StdEncoding.EncodeToString(signer.Ask.Raw),
			"ark": base64.StdEncoding.EncodeToString(signer.Ark.Raw),
		},
	})
	var roots bytes.Buffer
	for _, c := range [][]byte{signer.Ark.Raw, signer.Ask.Raw} {
		pem.Encode(&roots, &pem.Block{Type: "CERTIFICATE", Bytes: c})
	}
	return ev, roots.Bytes()
}
