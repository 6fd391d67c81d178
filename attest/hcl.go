package attest

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
)

// HCL report layout (Azure paravisor "HCLA" blob in vTPM NV 0x01400001).
const (
	hclHeaderSize     = 0x20
	hclTEEReportSize  = 1184                             // SNP ATTESTATION_REPORT, or a TDREPORT padded
	hclReqDataOffset  = hclHeaderSize + hclTEEReportSize // 0x4C0
	hclReqDataSize    = 20                               // 5 × u32 LE
	hclRuntimeOffset  = hclReqDataOffset + hclReqDataSize
	tdReportSize      = 1024
	hclMagic          = 0x414C4348 // "HCLA" little endian
	hclReportTypeSNP  = 2
	hclReportTypeTDX  = 4
	hclHashTypeSHA256 = 1
)

// ErrHCLReport marks a malformed HCL report.
var ErrHCLReport = errors.New("malformed HCL report")

// HCLReport is the parsed Azure HCL report.
type HCLReport struct {
	Version     uint32 // 1 on SNP hosts, 2 on TDX hosts
	ReportType  uint32 // 2 = SNP, 4 = TDX
	HashType    uint32 // report_data_hash_type, 1 = SHA-256
	TEEReport   []byte // 1184 bytes: SNP report, or the TDREPORT (first 1024) padded
	RuntimeData []byte // the runtime-data JSON, trailing NULs trimmed
}

// ParseHCLReport parses the NV 0x01400001 blob. It returns errors wrapping
// ErrHCLReport for anything the verifier would also refuse.
func ParseHCLReport(b []byte) (*HCLReport, error) {
	if len(b) < hclRuntimeOffset {
		return nil, fmt.Errorf("%w: %d bytes, want at least %d", ErrHCLReport, len(b), hclRuntimeOffset)
	}
	if m := binary.LittleEndian.Uint32(b[0:4]); m != hclMagic {
		return nil, fmt.Errorf("%w: magic %#x, want \"HCLA\"", ErrHCLReport, m)
	}
	r := &HCLReport{
		Version:    binary.LittleEndian.Uint32(b[4:8]),
		TEEReport:  b[hclHeaderSize:hclReqDataOffset],
		ReportType: binary.LittleEndian.Uint32(b[hclReqDataOffset+8:]),
		HashType:   binary.LittleEndian.Uint32(b[hclReqDataOffset+12:]),
	}
	varSize := binary.LittleEndian.Uint32(b[hclReqDataOffset+16:])
	rest := b[hclRuntimeOffset:]
	if uint64(varSize) > uint64(len(rest)) {
		return nil, fmt.Errorf("%w: runtime data size %d exceeds the %d bytes present", ErrHCLReport, varSize, len(rest))
	}
	r.RuntimeData = bytes.TrimRight(rest[:varSize], "\x00")
	if len(r.RuntimeData) == 0 {
		return nil, fmt.Errorf("%w: empty runtime data", ErrHCLReport)
	}
	return r, nil
}

// RuntimeJWK is one key of the HCL runtime data.
type RuntimeJWK struct {
	Kid string `json:"kid"`
	Kty string `json:"kty"`
	E   string `json:"e"`
	N   string `json:"n"`
}

// RuntimeData is the HCL runtime-data JSON (the fields kettle uses).
type RuntimeData struct {
	Keys     []RuntimeJWK `json:"keys"`
	UserData string       `json:"user-data"`
}

// Runtime parses the runtime-data JSON.
func (r *HCLReport) Runtime() (*RuntimeData, error) {
	var rd RuntimeData
	if err := json.Unmarshal(r.RuntimeData, &rd); err != nil {
		return nil, fmt.Errorf("%w: runtime data JSON: %v", ErrHCLReport, err)
	}
	return &rd, nil
}

// AKModulus returns the big-endian modulus of the HCLAkPub RSA key.
func (rd *RuntimeData) AKModulus() ([]byte, error) {
	for _, k := range rd.Keys {
		if k.Kid == "HCLAkPub" && k.Kty == "RSA" {
			n, err := decodeB64URL(k.N)
			if err != nil {
				return nil, fmt.Errorf("%w: HCLAkPub n: %v", ErrHCLReport, err)
			}
			return n, nil
		}
	}
	return nil, fmt.Errorf("%w: no HCLAkPub RSA key in runtime data", ErrHCLReport)
}

// TDReport returns the 1024-byte TDREPORT of a TDX HCL report.
func (r *HCLReport) TDReport() ([]byte, error) {
	if r.ReportType != hclReportTypeTDX {
		return nil, fmt.Errorf("%w: report type %d is not TDX (4)", ErrHCLReport, r.ReportType)
	}
	return r.TEEReport[:tdReportSize], nil
}

// decodeB64URL accepts base64url with or without padding.
func decodeB64URL(s string) ([]byte, error) {
	return b64url.DecodeString(trimPad(s))
}

func trimPad(s string) string {
	for len(s) > 0 && s[len(s)-1] == '=' {
		s = s[:len(s)-1]
	}
	return s
}
