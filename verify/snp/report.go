// Package snp parses AMD SEV-SNP attestation reports and checks that they are
// genuine: the VCEK/VLEK certificate chains to an AMD root key, the report's
// ECDSA P-384 signature verifies with it, and the certificate's chip id and TCB
// extensions match the report. It does not judge whether the report meets a
// policy (debug, VMPL, measurements): callers do that with the parsed fields.
//
// go-sev-guest's verify.SnpAttestation is not used on purpose: v0.15.0 maps
// only the exact models Milan 0x01, Genoa 0x11 and Turin 0x02 to a product, so
// the Genoa-line model 0xA0 fails, and it has no Turin TCB layout.
package snp

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ReportSize is the size of an ATTESTATION_REPORT.
const ReportSize = 0x4A0

// SignedSize is the number of leading report bytes covered by the signature.
const SignedSize = 0x2A0

// ErrFormat reports a malformed report.
var ErrFormat = errors.New("malformed SNP report")

// Signing keys named by the report's SIGNER_INFO.
const (
	SignerVCEK = 0
	SignerVLEK = 1
	SignerNone = 7
)

// Guest policy bits (SNP ABI §4.3).
const (
	PolicyDebugBit = 19
	PolicySMTBit   = 16
)

// Report is the parsed subset of an ATTESTATION_REPORT that verification and
// policy need. Raw keeps the exact bytes for the signature check.
type Report struct {
	Raw            []byte
	Version        uint32
	GuestSVN       uint32
	Policy         uint64
	VMPL           uint32
	SignatureAlgo  uint32
	CurrentTCB     uint64
	PlatformInfo   uint64
	SigningKey     uint8 // SignerVCEK, SignerVLEK or SignerNone
	MaskChipKey    bool
	ReportData     [64]byte
	Measurement    [48]byte
	HostData       [32]byte
	IDKeyDigest    [48]byte
	ReportID       [32]byte
	ReportedTCB    uint64
	Family, Model  uint8 // CPUID family/model (report v3+; zero in v2)
	Stepping       uint8
	ChipID         [64]byte
	CommittedTCB   uint64
	LaunchTCB      uint64
	SignatureR     [72]byte // little endian, as in the report
	SignatureS     [72]byte
	HasCPUID       bool
	CurrentVersion [3]uint8 // build, minor, major
}

// Debug reports whether the guest policy allows debugging the VM.
func (r *Report) Debug() bool { return r.Policy&(1<<PolicyDebugBit) != 0 }

// Parse decodes a raw 1184-byte report. It checks sizes and the fields whose
// values the rest of verification relies on; the signature is not checked.
func Parse(raw []byte) (*Report, error) {
	if len(raw) != ReportSize {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrFormat, len(raw), ReportSize)
	}
	le32 := func(off int) uint32 { return binary.LittleEndian.Uint32(raw[off:]) }
	le64 := func(off int) uint64 { return binary.LittleEndian.Uint64(raw[off:]) }
	r := &Report{
		Raw:           raw,
		Version:       le32(0x00),
		GuestSVN:      le32(0x04),
		Policy:        le64(0x08),
		VMPL:          le32(0x30),
		SignatureAlgo: le32(0x34),
		CurrentTCB:    le64(0x38),
		PlatformInfo:  le64(0x40),
		ReportedTCB:   le64(0x180),
		CommittedTCB:  le64(0x1E0),
		LaunchTCB:     le64(0x1F0),
	}
	if r.Version < 2 {
		return nil, fmt.Errorf("%w: version %d", ErrFormat, r.Version)
	}
	signer := le32(0x48)
	r.MaskChipKey = signer&2 != 0
	r.SigningKey = uint8((signer >> 2) & 7)
	copy(r.ReportData[:], raw[0x50:0x90])
	copy(r.Measurement[:], raw[0x90:0xC0])
	copy(r.HostData[:], raw[0xC0:0xE0])
	copy(r.IDKeyDigest[:], raw[0xE0:0x110])
	copy(r.ReportID[:], raw[0x140:0x160])
	if r.Version >= 3 {
		r.HasCPUID = true
		r.Family, r.Model, r.Stepping = raw[0x188], raw[0x189], raw[0x18A]
	}
	copy(r.ChipID[:], raw[0x1A0:0x1E0])
	r.CurrentVersion = [3]uint8{raw[0x1E8], raw[0x1E9], raw[0x1EA]}
	copy(r.SignatureR[:], raw[0x2A0:0x2E8])
	copy(r.SignatureS[:], raw[0x2E8:0x330])
	if r.SignatureAlgo != 1 {
		return nil, fmt.Errorf("%w: signature algorithm %d, want 1 (ECDSA P-384 with SHA-384)", ErrFormat, r.SignatureAlgo)
	}
	if r.VMPL > 3 {
		return nil, fmt.Errorf("%w: VMPL %d", ErrFormat, r.VMPL)
	}
	return r, nil
}

// Generation is an AMD processor generation (product line).
type Generation string

// Product lines with AMD root keys.
const (
	Unknown Generation = ""
	Milan   Generation = "Milan"
	Genoa   Generation = "Genoa"
	Turin   Generation = "Turin"
)

// GenerationOf maps CPUID family/model to a product line, as attestation-rs
// does: Genoa includes the 0xA0–0xAF models (Bergamo, Siena).
func GenerationOf(family, model uint8) Generation {
	switch {
	case family == 0x19 && model <= 0x0F:
		return Milan
	case family == 0x19 && (model >= 0x10 && model <= 0x1F || model >= 0xA0 && model <= 0xAF):
		return Genoa
	case family == 0x1A && model <= 0x11:
		return Turin
	}
	return Unknown
}

// Generation returns the product line named by the report's CPUID fields,
// Unknown for v2 reports (which carry none) or unlisted models.
func (r *Report) Generation() Generation {
	if !r.HasCPUID {
		return Unknown
	}
	return GenerationOf(r.Family, r.Model)
}

// TCB is a decoded TCB_VERSION. FMC is only present on Turin.
type TCB struct {
	FMC, Bootloader, TEE, SNP, Microcode uint8
}

// DecodeTCB splits a TCB_VERSION according to the generation's layout:
// Milan/Genoa [BL, TEE, -, -, -, -, SNP, ucode], Turin [FMC, BL, TEE, SNP, -, -, -, ucode].
func DecodeTCB(g Generation, v uint64) TCB {
	b := func(i int) uint8 { return uint8(v >> (8 * i)) }
	if g == Turin {
		return TCB{FMC: b(0), Bootloader: b(1), TEE: b(2), SNP: b(3), Microcode: b(7)}
	}
	return TCB{Bootloader: b(0), TEE: b(1), SNP: b(6), Microcode: b(7)}
}

// AtLeast reports whether every component of t is ≥ the one in min.
func (t TCB) AtLeast(min TCB) bool {
	return t.FMC >= min.FMC && t.Bootloader >= min.Bootloader && t.TEE >= min.TEE &&
		t.SNP >= min.SNP && t.Microcode >= min.Microcode
}

func (t TCB) String() string {
	return fmt.Sprintf("bl=%d,tee=%d,snp=%d,ucode=%d,fmc=%d", t.Bootloader, t.TEE, t.SNP, t.Microcode, t.FMC)
}
