// Package attest produces hardware evidence binding report data, per
// platform: az-snp, az-tdx (Azure vTPM), snp, tdx (configfs-tsm or the guest
// device), insecure (no TEE), sim-snp (go-sev-guest's test-only AMD keys).
package attest

import (
	"context"
	"crypto/sha256"
)

// ReportDataSize is sha256(provenance) (32) ‖ nonce zero-padded to 16.
const ReportDataSize = 48

// ReportData binds a provenance document and a nonce (≤16 bytes; zeros when
// none).
func ReportData(provenance []byte, nonce []byte) [ReportDataSize]byte {
	var rd [ReportDataSize]byte
	sum := sha256.Sum256(provenance)
	copy(rd[:32], sum[:])
	copy(rd[32:], nonce)
	return rd
}

// Attester makes evidence.json for report data.
type Attester interface {
	// Platform is the envelope's platform tag ("az-snp", "insecure", …).
	Platform() string
	// Attest returns the evidence.json bytes (the peer's envelope).
	Attest(ctx context.Context, reportData [ReportDataSize]byte) ([]byte, error)
}
