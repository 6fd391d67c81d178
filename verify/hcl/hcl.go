// Package hcl parses the Azure confidential VM "HCL report": the blob the
// paravisor (HCL) stores in vTPM NV index 0x01400001. It carries the hardware
// report (SNP ATTESTATION_REPORT or TDX TDREPORT) whose report data is the
// SHA-256 of the runtime-data JSON that follows it; that JSON holds the vTPM
// attestation key (HCLAkPub) which signs TPM quotes. Checking that hash is
// what ties the TPM quote to the hardware.
package hcl

import (
	"bytes"
	"crypto/rsa"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// ErrFormat reports a malformed HCL report or runtime data.
var ErrFormat = errors.New("malformed HCL report")

// Report types of the IGVM request header.
const (
	TypeSNP = 2
	TypeTDX = 4
)

// HashSHA256 is the report_data_hash_type for SHA-256.
const HashSHA256 = 1

const (
	headerSize   = 0x20
	teeReportEnd = 0x4C0
	igvmHdrEnd   = 0x4D4
	// TDReportSize is the size of a TDX TDREPORT_STRUCT within the TEE report area.
	TDReportSize = 1024
)

// Report is a parsed HCL report.
type Report struct {
	Version     uint32
	ReportSize  uint32
	RequestType uint32
	// TEEReport is the 1184-byte hardware report area: an SNP report, or a
	// TDREPORT in its first 1024 bytes.
	TEEReport   []byte
	ReportType  uint32 // TypeSNP or TypeTDX
	HashType    uint32
	RuntimeData []byte // the JSON whose SHA-256 the hardware report binds
}

// Parse decodes an HCL report blob.
func Parse(b []byte) (*Report, error) {
	if len(b) < igvmHdrEnd {
		return nil, fmt.Errorf("%w: %d bytes", ErrFormat, len(b))
	}
	if string(b[:4]) != "HCLA" {
		return nil, fmt.Errorf("%w: no HCLA signature", ErrFormat)
	}
	le := binary.LittleEndian
	r := &Report{
		Version:     le.Uint32(b[4:]),
		ReportSize:  le.Uint32(b[8:]),
		RequestType: le.Uint32(b[12:]),
		TEEReport:   b[headerSize:teeReportEnd],
		ReportType:  le.Uint32(b[teeReportEnd+8:]),
		HashType:    le.Uint32(b[teeReportEnd+12:]),
	}
	varSize := le.Uint32(b[teeReportEnd+16:])
	if uint64(varSize) > uint64(len(b)-igvmHdrEnd) {
		return nil, fmt.Errorf("%w: runtime data size %d exceeds the blob", ErrFormat, varSize)
	}
	r.RuntimeData = bytes.TrimRight(b[igvmHdrEnd:igvmHdrEnd+int(varSize)], "\x00")
	if len(r.RuntimeData) == 0 {
		return nil, fmt.Errorf("%w: empty runtime data", ErrFormat)
	}
	if r.ReportType != TypeSNP && r.ReportType != TypeTDX {
		return nil, fmt.Errorf("%w: report type %d", ErrFormat, r.ReportType)
	}
	if r.HashType != HashSHA256 {
		return nil, fmt.Errorf("%w: runtime data hash type %d, want SHA-256", ErrFormat, r.HashType)
	}
	return r, nil
}

// JWK is one key of the runtime data.
type JWK struct {
	Kid    string   `json:"kid"`
	Kty    string   `json:"kty"`
	E      string   `json:"e"`
	N      string   `json:"n"`
	KeyOps []string `json:"key_ops"`
}

// RuntimeData is the decoded runtime-data JSON.
type RuntimeData struct {
	Keys            []JWK           `json:"keys"`
	VMConfiguration json.RawMessage `json:"vm-configuration"`
	UserData        string          `json:"user-data"`
}

// ParseRuntimeData decodes the runtime-data JSON.
func ParseRuntimeData(b []byte) (*RuntimeData, error) {
	var rd RuntimeData
	if err := json.Unmarshal(b, &rd); err != nil {
		return nil, fmt.Errorf("%w: runtime data: %w", ErrFormat, err)
	}
	return &rd, nil
}

// AttestationKey returns the HCLAkPub RSA key.
func (rd *RuntimeData) AttestationKey() (*rsa.PublicKey, error) {
	for _, k := range rd.Keys {
		if k.Kid != "HCLAkPub" || k.Kty != "RSA" {
			continue
		}
		n, err1 := b64url(k.N)
		e, err2 := b64url(k.E)
		if err1 != nil || err2 != nil || len(n) == 0 || len(e) == 0 || len(e) > 4 {
			return nil, fmt.Errorf("%w: HCLAkPub is not a valid RSA JWK", ErrFormat)
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		if pub.N.BitLen() < 2048 || pub.E < 3 || pub.E%2 == 0 {
			return nil, fmt.Errorf("%w: HCLAkPub: weak RSA key (%d bits, e=%d)", ErrFormat, pub.N.BitLen(), pub.E)
		}
		return pub, nil
	}
	return nil, fmt.Errorf("%w: runtime data has no RSA HCLAkPub key", ErrFormat)
}

// UserDataBytes decodes the "user-data" hex field (64 bytes when present).
func (rd *RuntimeData) UserDataBytes() ([]byte, error) {
	b, err := hex.DecodeString(rd.UserData)
	if err != nil {
		return nil, fmt.Errorf("%w: user-data is not hex", ErrFormat)
	}
	return b, nil
}

func b64url(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}
