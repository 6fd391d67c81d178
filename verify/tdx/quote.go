// Package tdx parses Intel TDX DCAP quotes (versions 4 and 5, TDX 1.0 and 1.5
// bodies) and checks that they are genuine: the quote's ECDSA P-256
// signature by the attestation key, the QE report's signature by the PCK
// certificate, the QE binding of the attestation key, and the PCK chain to the
// pinned Intel SGX Root CA. With collateral (TCB info, QE identity, CRLs) it
// also evaluates the platform's TCB status.
//
// go-tdx-guest is not used for quotes because v0.3.x parses only v4, rejects
// every TCB status but UpToDate, and prints to stdout; its pcs package is used
// for the PCS JSON types and the PCK certificate's SGX extensions.
package tdx

import (
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
)

// ErrFormat reports a malformed quote.
var ErrFormat = errors.New("malformed TDX quote")

// Quote constants.
const (
	headerSize     = 48
	TEETypeTDX     = 0x81
	AttKeyECDSA256 = 2
	body10Size     = 584 // TDX 1.0 TD quote body
	body15Size     = 648 // TDX 1.5: adds tee_tcb_svn2 and mr_servicetd
	qeReportSize   = 384
	certTypeQE     = 6 // QE report certification data
	certTypePCK    = 5 // PCK certificate chain (PEM)
	maxQuoteSize   = 1 << 20
)

// Body is a TD quote body (TDX 1.0 fields, plus TDX 1.5 ones when present).
type Body struct {
	TEETCBSVN      [16]byte
	MRSEAM         [48]byte
	MRSignerSEAM   [48]byte
	SEAMAttributes [8]byte
	TDAttributes   [8]byte
	XFAM           [8]byte
	MRTD           [48]byte
	MRConfigID     [48]byte
	MROwner        [48]byte
	MROwnerConfig  [48]byte
	RTMRs          [4][48]byte
	ReportData     [64]byte
	TEETCBSVN2     [16]byte // TDX 1.5 only
	MRServiceTD    [48]byte // TDX 1.5 only
}

// Debug reports whether the TD is a debug TD (TDATTRIBUTES.DEBUG, bit 0).
func (b *Body) Debug() bool { return b.TDAttributes[0]&1 != 0 }

// EnclaveReport is an SGX report (here: the Quoting Enclave's).
type EnclaveReport struct {
	Raw        []byte
	CPUSVN     [16]byte
	MiscSelect uint32
	Attributes [16]byte
	MREnclave  [32]byte
	MRSigner   [32]byte
	ISVProdID  uint16
	ISVSVN     uint16
	ReportData [64]byte
}

// Quote is a parsed DCAP quote with ECDSA-256 attestation key.
type Quote struct {
	Raw          []byte
	Version      uint16
	AttKeyType   uint16
	TEEType      uint32
	QESVN        uint16
	PCESVN       uint16
	QEVendorID   [16]byte
	BodyType     uint16 // v5: 2 = TDX 1.0, 3 = TDX 1.5; v4: 2
	Body         Body
	SignedLen    int      // quote[:SignedLen] is signed by the attestation key
	Signature    [64]byte // r ‖ s, big endian
	AttestKey    [64]byte // X ‖ Y
	QEReport     EnclaveReport
	QESignature  [64]byte
	QEAuthData   []byte
	PCKChainPEM  []byte
	PCKChainDERs [][]byte // leaf first
}

type rd struct {
	b   []byte
	off int
	err error
}

func (r *rd) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b)-r.off {
		r.err = fmt.Errorf("%w: truncated at offset %d", ErrFormat, r.off)
		return nil
	}
	out := r.b[r.off : r.off+n]
	r.off += n
	return out
}

func (r *rd) u16() uint16 {
	if b := r.take(2); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}

func (r *rd) u32() uint32 {
	if b := r.take(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

// ParseQuote decodes a DCAP quote v4 or v5.
func ParseQuote(b []byte) (*Quote, error) {
	if len(b) > maxQuoteSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrFormat, len(b))
	}
	r := &rd{b: b}
	q := &Quote{Raw: b}
	q.Version = r.u16()
	q.AttKeyType = r.u16()
	q.TEEType = r.u32()
	q.QESVN = r.u16()
	q.PCESVN = r.u16()
	copy(q.QEVendorID[:], r.take(16))
	r.take(20) // user data
	if r.err != nil {
		return nil, r.err
	}
	if q.TEEType != TEETypeTDX {
		return nil, fmt.Errorf("%w: TEE type 0x%x, want 0x81 (TDX)", ErrFormat, q.TEEType)
	}
	if q.AttKeyType != AttKeyECDSA256 {
		return nil, fmt.Errorf("%w: attestation key type %d, want 2 (ECDSA-256-with-P-256)", ErrFormat, q.AttKeyType)
	}
	var bodySize int
	switch q.Version {
	case 4:
		q.BodyType, bodySize = 2, body10Size
	case 5:
		q.BodyType = r.u16()
		size := r.u32()
		switch {
		case q.BodyType == 2 && size == body10Size, q.BodyType == 3 && size == body15Size:
			bodySize = int(size)
		default:
			return nil, fmt.Errorf("%w: v5 body type %d size %d", ErrFormat, q.BodyType, size)
		}
	default:
		return nil, fmt.Errorf("%w: version %d, want 4 or 5", ErrFormat, q.Version)
	}
	body := r.take(bodySize)
	if r.err != nil {
		return nil, r.err
	}
	parseBody(&q.Body, body)
	q.SignedLen = r.off

	// Bytes after the signature data (padding some producers add) are ignored:
	// nothing there is signed or used.
	sd := &rd{b: r.take(int(r.u32()))}
	if r.err != nil {
		return nil, r.err
	}
	copy(q.Signature[:], sd.take(64))
	copy(q.AttestKey[:], sd.take(64))
	if ct := sd.u16(); sd.err == nil && ct != certTypeQE {
		return nil, fmt.Errorf("%w: certification data type %d, want 6 (QE report)", ErrFormat, ct)
	}
	qe := &rd{b: sd.take(int(sd.u32()))}
	if sd.err != nil {
		return nil, sd.err
	}
	q.QEReport = parseEnclaveReport(qe.take(qeReportSize))
	copy(q.QESignature[:], qe.take(64))
	q.QEAuthData = qe.take(int(qe.u16()))
	if ct := qe.u16(); qe.err == nil && ct != certTypePCK {
		return nil, fmt.Errorf("%w: QE certification data type %d, want 5 (PCK chain)", ErrFormat, ct)
	}
	q.PCKChainPEM = qe.take(int(qe.u32()))
	if qe.err != nil {
		return nil, qe.err
	}
	for rest := q.PCKChainPEM; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type == "CERTIFICATE" {
			q.PCKChainDERs = append(q.PCKChainDERs, blk.Bytes)
		}
	}
	if len(q.PCKChainDERs) == 0 {
		return nil, fmt.Errorf("%w: no PCK certificates", ErrFormat)
	}
	return q, nil
}

func parseBody(b *Body, body []byte) {
	copy(b.TEETCBSVN[:], body[0:16])
	copy(b.MRSEAM[:], body[16:64])
	copy(b.MRSignerSEAM[:], body[64:112])
	copy(b.SEAMAttributes[:], body[112:120])
	copy(b.TDAttributes[:], body[120:128])
	copy(b.XFAM[:], body[128:136])
	copy(b.MRTD[:], body[136:184])
	copy(b.MRConfigID[:], body[184:232])
	copy(b.MROwner[:], body[232:280])
	copy(b.MROwnerConfig[:], body[280:328])
	for i := range b.RTMRs {
		copy(b.RTMRs[i][:], body[328+48*i:376+48*i])
	}
	copy(b.ReportData[:], body[520:584])
	if len(body) == body15Size {
		copy(b.TEETCBSVN2[:], body[584:600])
		copy(b.MRServiceTD[:], body[600:648])
	}
}

func parseEnclaveReport(b []byte) EnclaveReport {
	var e EnclaveReport
	if len(b) != qeReportSize {
		return e
	}
	e.Raw = b
	copy(e.CPUSVN[:], b[0:16])
	e.MiscSelect = binary.LittleEndian.Uint32(b[16:20])
	copy(e.Attributes[:], b[48:64])
	copy(e.MREnclave[:], b[64:96])
	copy(e.MRSigner[:], b[128:160])
	e.ISVProdID = binary.LittleEndian.Uint16(b[256:258])
	e.ISVSVN = binary.LittleEndian.Uint16(b[258:260])
	copy(e.ReportData[:], b[320:384])
	return e
}
