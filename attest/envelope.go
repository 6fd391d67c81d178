package attest

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
)

// Platform tags of the evidence envelope (the peer's names).
const (
	PlatformAzSNP    = "az-snp"
	PlatformAzTDX    = "az-tdx"
	PlatformSNP      = "snp"
	PlatformTDX      = "tdx"
	PlatformInsecure = "insecure"
)

// Envelope is evidence.json: compact JSON `{"platform":…,"evidence":{…}}`,
// byte-compatible with the peer (attestation-rs) per platform. Field order
// of the structs below is the serialization order.
type Envelope struct {
	Platform string          `json:"platform"`
	Evidence json.RawMessage `json:"evidence"`
}

// TPMQuote is the Azure vTPM quote: all hex (lower case).
type TPMQuote struct {
	Signature string   `json:"signature"` // raw RSASSA-PKCS1-v1_5 signature (256 bytes)
	Message   string   `json:"message"`   // marshalled TPMS_ATTEST
	PCRs      []string `json:"pcrs"`      // SHA-256 PCRs 0..23
}

// AzSNPEvidence is the az-snp evidence body.
type AzSNPEvidence struct {
	Version   int      `json:"version"` // 1
	TPMQuote  TPMQuote `json:"tpm_quote"`
	HCLReport string   `json:"hcl_report"` // base64url, no padding
	VCEK      string   `json:"vcek"`       // base64url DER, no padding
}

// AzTDXEvidence is the az-tdx evidence body.
type AzTDXEvidence struct {
	Version   int      `json:"version"` // 1
	TPMQuote  TPMQuote `json:"tpm_quote"`
	HCLReport string   `json:"hcl_report"` // base64url, no padding
	TDQuote   string   `json:"td_quote"`   // base64url, no padding
}

// SNPEvidence is the bare-metal snp evidence body (standard base64).
type SNPEvidence struct {
	AttestationReport string        `json:"attestation_report"`
	CertChain         *SNPCertChain `json:"cert_chain"` // null: fetch the VCEK from AMD KDS
}

// SNPCertChain holds DER certificates, standard base64. Verifiers use their
// own AMD roots; ask and ark are informative only.
type SNPCertChain struct {
	VCEK string  `json:"vcek"`
	ASK  *string `json:"ask"`
	ARK  *string `json:"ark"`
}

// TDXEvidence is the bare-metal tdx evidence body (standard base64).
type TDXEvidence struct {
	Quote      string `json:"quote"`
	CCEventlog string `json:"cc_eventlog,omitempty"`
}

// InsecureEvidence is the only content of "insecure" evidence: the report
// data, hex. It proves nothing about the machine.
type InsecureEvidence struct {
	ReportData string `json:"report_data"`
}

var (
	b64url = base64.RawURLEncoding
	b64std = base64.StdEncoding
)

// marshalEnvelope writes the compact envelope (no trailing newline).
func marshalEnvelope(platform string, evidence any) ([]byte, error) {
	body, err := json.Marshal(evidence)
	if err != nil {
		return nil, fmt.Errorf("attest: encode %s evidence: %w", platform, err)
	}
	return json.Marshal(Envelope{Platform: platform, Evidence: body})
}

// ParseEnvelope splits evidence.json into its platform and raw evidence.
func ParseEnvelope(data []byte) (*Envelope, error) {
	var env Envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return nil, fmt.Errorf("attest: evidence envelope: %w", err)
	}
	if env.Platform == "" || len(env.Evidence) == 0 {
		return nil, fmt.Errorf("attest: evidence envelope: missing platform or evidence")
	}
	return &env, nil
}

func strPtr(s string) *string { return &s }
