// Package abi is the wire format of evidence.json, shared by the producer
// (package attest) and the verifier (package verify), byte-compatible with
// the peer (attestation-rs): compact JSON `{"platform":…,"evidence":{…}}`.
// Field order of the structs is the serialization order; the byte layout is
// pinned by attest's round-trip tests over real evidence in testdata.
package abi

import (
	"encoding/json"
	"fmt"
)

// Platform tags of the envelope (the peer's names).
const (
	PlatformAzSNP = "az-snp"
	PlatformAzTDX = "az-tdx"
	PlatformSNP   = "snp"
	PlatformTDX   = "tdx"
	// The peer's GCP tags: the same evidence as snp / tdx (the tag is the
	// attester's claim; verification is identical).
	PlatformGCPSNP = "gcp-snp"
	PlatformGCPTDX = "gcp-tdx"
	// PlatformDstack is a TDX quote from a dstack agent (hex); its event log
	// is not replayed (attestation-rs drops it too).
	PlatformDstack   = "dstack"
	PlatformInsecure = "insecure"
)

// Size limits of attestation-rs: the envelope and each decoded field.
const (
	MaxEnvelope = 10 << 20
	MaxField    = 1 << 20
)

// Envelope is evidence.json.
type Envelope struct {
	Platform string          `json:"platform"`
	Evidence json.RawMessage `json:"evidence"`
}

// Marshal writes the compact envelope of evidence (no trailing newline).
func Marshal(platform string, evidence any) ([]byte, error) {
	body, err := json.Marshal(evidence)
	if err != nil {
		return nil, fmt.Errorf("encode %s evidence: %w", platform, err)
	}
	return json.Marshal(Envelope{Platform: platform, Evidence: body})
}

// TPMQuote is the Azure vTPM quote: all hex (lower case).
type TPMQuote struct {
	Signature string   `json:"signature"` // raw RSASSA-PKCS1-v1_5 signature (256 bytes)
	Message   string   `json:"message"`   // marshalled TPMS_ATTEST
	PCRs      []string `json:"pcrs"`      // SHA-256 PCRs 0..23
}

// AzureEvidence is the az-snp (VCEK) and az-tdx (TDQuote) evidence body.
type AzureEvidence struct {
	Version   int       `json:"version"` // 1
	TPMQuote  *TPMQuote `json:"tpm_quote"`
	HCLReport string    `json:"hcl_report"`         // base64url, no padding
	VCEK      string    `json:"vcek,omitempty"`     // az-snp: base64url DER, no padding
	TDQuote   string    `json:"td_quote,omitempty"` // az-tdx: base64url, no padding
}

// SNPEvidence is the bare-metal snp evidence body (standard base64).
type SNPEvidence struct {
	AttestationReport string        `json:"attestation_report"`
	CertChain         *SNPCertChain `json:"cert_chain"` // null: fetch the VCEK from AMD KDS
}

// SNPCertChain holds DER certificates, standard base64. Verifiers use their
// own AMD roots; ask and ark are informative only. kettle writes a VCEK;
// a VLEK comes only from other producers.
type SNPCertChain struct {
	VCEK *string `json:"vcek"`
	VLEK *string `json:"vlek,omitempty"`
	ASK  *string `json:"ask"`
	ARK  *string `json:"ark"`
}

// TDXEvidence is the bare-metal tdx evidence body (standard base64).
type TDXEvidence struct {
	Quote      string `json:"quote"`
	CCEventLog string `json:"cc_eventlog,omitempty"`
}

// DstackEvidence is a dstack agent's TDX quote.
type DstackEvidence struct {
	Quote string `json:"quote"` // hex
}

// InsecureEvidence is the only content of "insecure" evidence: the report
// data, hex. It proves nothing about the machine.
type InsecureEvidence struct {
	ReportData string `json:"report_data"`
}
