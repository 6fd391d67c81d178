// Package tpm checks a TPM2_Quote as the Azure vTPM makes it: the
// TPMS_ATTEST message, its RSASSA-PKCS1-v1_5/SHA-256 signature by the
// attestation key, and the PCR digest over the reported PCR values.
//
// The parser is written out here (rather than go-tpm's tpm2.Unmarshal) so that
// it is strict about trailing bytes and easy to fuzz; it is a few dozen lines.
package tpm

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
)

// TPM constants used by quotes.
const (
	GeneratedValue = 0xFF544347 // TPM_GENERATED_VALUE
	STAttestQuote  = 0x8018     // TPM_ST_ATTEST_QUOTE
	AlgSHA256      = 0x000B
	NumPCRs        = 24
)

// Sentinel errors.
var (
	ErrFormat    = errors.New("malformed TPMS_ATTEST")
	ErrSignature = errors.New("TPM quote signature")
	ErrPCRDigest = errors.New("PCR digest")
)

// Selection is one TPMS_PCR_SELECTION.
type Selection struct {
	Hash uint16
	PCRs []int // selected indices, ascending
}

// Attest is a parsed TPMS_ATTEST of type quote.
type Attest struct {
	Magic           uint32
	Type            uint16
	QualifiedSigner []byte
	ExtraData       []byte // the caller's qualifying data (nonce)
	Clock           uint64
	ResetCount      uint32
	RestartCount    uint32
	Safe            bool
	FirmwareVersion uint64
	Selections      []Selection
	PCRDigest       []byte
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.err = fmt.Errorf("%w: truncated", ErrFormat)
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) u8() uint8 {
	b := r.take(1)
	if b == nil {
		return 0
	}
	return b[0]
}

func (r *reader) u16() uint16 {
	b := r.take(2)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint16(b)
}

func (r *reader) u32() uint32 {
	b := r.take(4)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint32(b)
}

func (r *reader) u64() uint64 {
	b := r.take(8)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

func (r *reader) tpm2b() []byte { return r.take(int(r.u16())) }

// ParseAttest decodes a marshalled TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE.
// Trailing bytes are an error.
func ParseAttest(msg []byte) (*Attest, error) {
	r := &reader{b: msg}
	a := &Attest{
		Magic:           r.u32(),
		Type:            r.u16(),
		QualifiedSigner: r.tpm2b(),
		ExtraData:       r.tpm2b(),
		Clock:           r.u64(),
		ResetCount:      r.u32(),
		RestartCount:    r.u32(),
		Safe:            r.u8() != 0,
		FirmwareVersion: r.u64(),
	}
	count := r.u32()
	if r.err == nil && count > 16 {
		return nil, fmt.Errorf("%w: %d PCR selections", ErrFormat, count)
	}
	for i := uint32(0); i < count && r.err == nil; i++ {
		s := Selection{Hash: r.u16()}
		size := int(r.u8())
		bitmap := r.take(size)
		for byteIdx, bits := range bitmap {
			for bit := 0; bit < 8; bit++ {
				if bits&(1<<bit) != 0 {
					s.PCRs = append(s.PCRs, byteIdx*8+bit)
				}
			}
		}
		a.Selections = append(a.Selections, s)
	}
	a.PCRDigest = r.tpm2b()
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrFormat, len(r.b))
	}
	if a.Magic != GeneratedValue {
		return nil, fmt.Errorf("%w: magic 0x%08x, want TPM_GENERATED_VALUE", ErrFormat, a.Magic)
	}
	if a.Type != STAttestQuote {
		return nil, fmt.Errorf("%w: type 0x%04x, want TPM_ST_ATTEST_QUOTE", ErrFormat, a.Type)
	}
	return a, nil
}

// VerifySignature checks the RSASSA-PKCS1-v1_5 SHA-256 signature over the raw
// TPMS_ATTEST bytes (the Azure evidence stores the bare RSA signature, not a
// TPMT_SIGNATURE).
func VerifySignature(ak *rsa.PublicKey, msg, sig []byte) error {
	d := sha256.Sum256(msg)
	if err := rsa.VerifyPKCS1v15(ak, crypto.SHA256, d[:], sig); err != nil {
		return fmt.Errorf("%w: %w", ErrSignature, err)
	}
	return nil
}

// CheckPCRs checks that the quote selects PCRs of the SHA-256 bank only, that
// every selected PCR has a 32-byte value in pcrs (indexed by PCR number), and
// that the quote's pcrDigest equals SHA-256 of the selected values in order.
func CheckPCRs(a *Attest, pcrs [][]byte) error {
	h := sha256.New()
	n := 0
	for _, s := range a.Selections {
		if len(s.PCRs) == 0 {
			continue
		}
		if s.Hash != AlgSHA256 {
			return fmt.Errorf("%w: PCR bank 0x%04x, want SHA-256", ErrPCRDigest, s.Hash)
		}
		for _, i := range s.PCRs {
			if i >= len(pcrs) || len(pcrs[i]) != sha256.Size {
				return fmt.Errorf("%w: PCR %d selected but no 32-byte value given", ErrPCRDigest, i)
			}
			h.Write(pcrs[i])
			n++
		}
	}
	if n == 0 {
		return fmt.Errorf("%w: quote selects no PCRs", ErrPCRDigest)
	}
	if subtle.ConstantTimeCompare(h.Sum(nil), a.PCRDigest) != 1 {
		return fmt.Errorf("%w: SHA-256 of the PCR values differs from the quoted digest", ErrPCRDigest)
	}
	return nil
}
