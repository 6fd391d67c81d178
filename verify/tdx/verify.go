package tdx

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	_ "embed"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"time"

	"github.com/google/go-tdx-guest/pcs"
)

// Sentinel errors of genuineness checks.
var (
	ErrChain     = errors.New("Intel PCK certificate chain")
	ErrSignature = errors.New("TDX quote signature")
	ErrQEBinding = errors.New("QE report binding")
)

//go:embed intel_sgx_root_ca.pem
var intelRootPEM []byte

// The Intel SGX Root CA public key (P-256), pinned as attestation-rs does.
const (
	intelRootX = "0ba9c4c0c0c86193a3fe23d6b02cda10a8bbd4e88e48b4458561a36e705525f5"
	intelRootY = "67918e2edc88e40d860bd0cc4ee26aacc988e505a953558c453f6b0904ae7394"
)

var defaultRoot = sync.OnceValues(func() (*x509.Certificate, error) {
	blk, _ := pem.Decode(intelRootPEM)
	if blk == nil {
		return nil, errors.New("no PEM block")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, err
	}
	pub, ok := c.PublicKey.(*ecdsa.PublicKey)
	x, _ := hex.DecodeString(intelRootX)
	y, _ := hex.DecodeString(intelRootY)
	if !ok || pub.X.Cmp(new(big.Int).SetBytes(x)) != 0 || pub.Y.Cmp(new(big.Int).SetBytes(y)) != 0 {
		return nil, errors.New("embedded root is not the pinned Intel SGX Root CA key")
	}
	return c, nil
})

// DefaultRoot returns the embedded Intel SGX Root CA certificate, whose key is
// pinned.
func DefaultRoot() *x509.Certificate {
	c, err := defaultRoot()
	if err != nil {
		panic(fmt.Sprintf("tdx: embedded Intel root: %v", err))
	}
	return c
}

// Intel's TD quoting enclave: MRSIGNER, ISVPRODID (as in PCS's TD_QE identity).
var intelQESigner = [32]byte{
	0xdc, 0x9e, 0x2a, 0x7c, 0x6f, 0x94, 0x8f, 0x17, 0x47, 0x4e, 0x34, 0xa7, 0xfc, 0x43, 0xed, 0x03,
	0x0f, 0x7c, 0x15, 0x63, 0xf1, 0xba, 0xbd, 0xdf, 0x63, 0x40, 0xc8, 0x2e, 0x0e, 0x54, 0xa8, 0xc5,
}

const (
	tdQEProdID   = 2
	sgxAttrDebug = 0x02 // SGX ATTRIBUTES.DEBUG
)

// Result is what Verify establishes about a genuine quote.
type Result struct {
	Quote        *Quote
	PCK          *x509.Certificate
	Intermediate *x509.Certificate // Intel SGX PCK Platform CA or Processor CA
	Root         *x509.Certificate
	PCKExt       *pcs.PckExtensions
}

func p256Key(xy []byte) (*ecdsa.PublicKey, error) {
	return ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append([]byte{4}, xy...))
}

func verifyRS(pub *ecdsa.PublicKey, msg []byte, rs []byte) bool {
	d := sha256.Sum256(msg)
	return ecdsa.Verify(pub, d[:], new(big.Int).SetBytes(rs[:32]), new(big.Int).SetBytes(rs[32:64]))
}

// Verify checks that q is genuine at time now: the PCK chain leads to root
// (whose key must be one of roots; nil means the pinned Intel root), every
// certificate is valid at now, the QE report is signed by the PCK key, comes
// from Intel's (non-debug) TD quoting enclave and binds the attestation key,
// and the quote is signed by the attestation key.
func Verify(q *Quote, roots []*x509.Certificate, now time.Time) (*Result, error) {
	if len(roots) == 0 {
		roots = []*x509.Certificate{DefaultRoot()}
	}
	if len(q.PCKChainDERs) != 3 {
		return nil, fmt.Errorf("%w: %d certificates, want 3 (PCK, CA, root)", ErrChain, len(q.PCKChainDERs))
	}
	var chain [3]*x509.Certificate
	for i, der := range q.PCKChainDERs {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate %d: %w", ErrChain, i, err)
		}
		chain[i] = c
	}
	// The quote's own root is only used to find the trusted one: its key
	// must equal a trusted root's key, and the trusted certificate is used.
	var root *x509.Certificate
	for _, r := range roots {
		if bytes.Equal(r.RawSubjectPublicKeyInfo, chain[2].RawSubjectPublicKeyInfo) {
			root = r
			break
		}
	}
	if root == nil {
		return nil, fmt.Errorf("%w: root certificate %q is not the trusted Intel SGX Root CA", ErrChain, chain[2].Subject.CommonName)
	}
	rp, ip := x509.NewCertPool(), x509.NewCertPool()
	rp.AddCert(root)
	ip.AddCert(chain[1])
	if _, err := chain[0].Verify(x509.VerifyOptions{
		Roots: rp, Intermediates: ip, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrChain, err)
	}
	if err := chain[1].CheckSignatureFrom(root); err != nil {
		return nil, fmt.Errorf("%w: CA not signed by the root: %w", ErrChain, err)
	}
	pckPub, ok := chain[0].PublicKey.(*ecdsa.PublicKey)
	if !ok || pckPub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: PCK key is not ECDSA P-256", ErrChain)
	}
	ext, err := pcs.PckCertificateExtensions(chain[0])
	if err != nil {
		return nil, fmt.Errorf("%w: PCK SGX extensions: %w", ErrChain, err)
	}
	if len(q.QEReport.Raw) != qeReportSize || !verifyRS(pckPub, q.QEReport.Raw, q.QESignature[:]) {
		return nil, fmt.Errorf("%w: QE report signature does not verify with the PCK key", ErrSignature)
	}
	// The QE must be Intel's TD quoting enclave, not in debug mode, even when
	// no QE identity collateral is at hand (Evaluate checks the identity too).
	if q.QEReport.MRSigner != intelQESigner || q.QEReport.ISVProdID != tdQEProdID || q.QEReport.Attributes[0]&sgxAttrDebug != 0 {
		return nil, fmt.Errorf("%w: the quoting enclave is not Intel's TD QE (MRSIGNER %x, ISVPRODID %d, attributes %x)", ErrQEBinding, q.QEReport.MRSigner[:8], q.QEReport.ISVProdID, q.QEReport.Attributes[:1])
	}
	h := sha256.New()
	h.Write(q.AttestKey[:])
	h.Write(q.QEAuthData)
	var want [64]byte
	copy(want[:], h.Sum(nil))
	if q.QEReport.ReportData != want {
		return nil, fmt.Errorf("%w: QE report data is not SHA-256(attestation key ‖ QE auth data) ‖ 0^32", ErrQEBinding)
	}
	ak, err := p256Key(q.AttestKey[:])
	if err != nil {
		return nil, fmt.Errorf("%w: attestation key: %w", ErrSignature, err)
	}
	if !verifyRS(ak, q.Raw[:q.SignedLen], q.Signature[:]) {
		return nil, fmt.Errorf("%w: does not verify with the attestation key", ErrSignature)
	}
	return &Result{Quote: q, PCK: chain[0], Intermediate: chain[1], Root: root, PCKExt: ext}, nil
}

// ParseRoots reads PEM CERTIFICATE blocks that are self-signed Intel roots.
func ParseRoots(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}
