package snp

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"embed"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"sync"
	"time"
)

// Sentinel errors of genuineness checks.
var (
	ErrChain     = errors.New("AMD certificate chain")
	ErrSignature = errors.New("SNP report signature")
	ErrTCB       = errors.New("endorsement key does not match the report")
)

// Roots are trusted AMD keys: self-signed ARKs and the ASK/ASVK intermediates
// they signed. A report's VCEK or VLEK must chain ARK→ASK|ASVK→V[CL]EK.
type Roots struct {
	ARKs          []*x509.Certificate
	Intermediates []*x509.Certificate

	once                sync.Once
	rootPool, interPool *x509.CertPool

	// chains memoizes verified chains by the endorsement key's DER: a fleet's
	// evidence reuses a handful of VCEKs, and the two RSA-4096 signatures
	// are most of an az-snp verification. An entry is used only at times
	// inside every certificate's validity period.
	mu     sync.Mutex
	chains map[[32]byte]*cachedChain
}

type cachedChain struct {
	chain     Chain
	notBefore time.Time // latest NotBefore in the chain
	notAfter  time.Time // earliest NotAfter in the chain
}

const maxCachedChains = 1024

func (r *Roots) cached(key *x509.Certificate, now time.Time) (*Chain, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.chains[sha256.Sum256(key.Raw)]
	if !ok || now.Before(c.notBefore) || now.After(c.notAfter) {
		return nil, false
	}
	ch := c.chain
	return &ch, true
}

func (r *Roots) remember(ch *Chain) {
	c := &cachedChain{chain: *ch, notAfter: ch.Key.NotAfter}
	for _, x := range []*x509.Certificate{ch.Key, ch.Intermediate, ch.ARK} {
		if x.NotBefore.After(c.notBefore) {
			c.notBefore = x.NotBefore
		}
		if x.NotAfter.Before(c.notAfter) {
			c.notAfter = x.NotAfter
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.chains == nil || len(r.chains) >= maxCachedChains {
		r.chains = map[[32]byte]*cachedChain{}
	}
	r.chains[sha256.Sum256(ch.Key.Raw)] = c
}

//go:embed roots/*.pem
var rootFS embed.FS

var defaultRoots = sync.OnceValues(func() (*Roots, error) {
	var all []byte
	ents, err := rootFS.ReadDir("roots")
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		b, err := rootFS.ReadFile("roots/" + e.Name())
		if err != nil {
			return nil, err
		}
		all = append(all, b...)
		all = append(all, '\n')
	}
	// Fixed at build time and checked by TestDefaultRootsSigned: the nine
	// RSA-4096 signature checks of ParseRoots were over a quarter of a
	// whole `kettle verify` process (issue 16 point 5). Each chain a
	// report uses is still verified link by link (x509 Verify).
	return parseRoots(all, false)
})

// DefaultRoots returns AMD's real ARK, ASK and ASVK certificates for Milan,
// Genoa and Turin, embedded from go-sev-guest's trust package.
func DefaultRoots() *Roots {
	r, err := defaultRoots()
	if err != nil {
		// The embedded files are fixed at build time; a failure is a build defect.
		panic(fmt.Sprintf("snp: embedded AMD roots: %v", err))
	}
	return r
}

// ParseRoots reads PEM CERTIFICATE blocks (other blocks are skipped). pem.Decode
// is used rather than kds.ParseProductCertChain because AMD's Turin VLEK file
// has CRLF line endings that the latter rejects. Self-signed certificates are
// ARKs (their self-signature must verify); every other certificate must be
// signed by one of the ARKs. Duplicates are dropped.
func ParseRoots(data []byte) (*Roots, error) {
	return parseRoots(data, true)
}

// parseRoots is ParseRoots; with check false the ARK self-signatures and
// the ARK→intermediate signatures are not checked (only for roots embedded
// at build time).
func parseRoots(data []byte, check bool) (*Roots, error) {
	var certs []*x509.Certificate
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
			return nil, fmt.Errorf("parse AMD root certificate: %w", err)
		}
		if !slices.ContainsFunc(certs, c.Equal) {
			certs = append(certs, c)
		}
	}
	r := &Roots{}
	for _, c := range certs {
		if bytes.Equal(c.RawIssuer, c.RawSubject) {
			if check {
				if err := c.CheckSignatureFrom(c); err != nil {
					return nil, fmt.Errorf("ARK %q: self-signature: %w", c.Subject.CommonName, err)
				}
			}
			r.ARKs = append(r.ARKs, c)
		}
	}
	for _, c := range certs {
		if bytes.Equal(c.RawIssuer, c.RawSubject) {
			continue
		}
		ok := !check || slices.ContainsFunc(r.ARKs, func(ark *x509.Certificate) bool { return c.CheckSignatureFrom(ark) == nil })
		if !ok {
			return nil, fmt.Errorf("AMD intermediate %q is not signed by any given ARK", c.Subject.CommonName)
		}
		r.Intermediates = append(r.Intermediates, c)
	}
	if len(r.ARKs) == 0 {
		return nil, errors.New("no self-signed AMD root (ARK) certificate")
	}
	return r, nil
}

func (r *Roots) pools() (*x509.CertPool, *x509.CertPool) {
	r.once.Do(func() {
		r.rootPool, r.interPool = x509.NewCertPool(), x509.NewCertPool()
		for _, c := range r.ARKs {
			r.rootPool.AddCert(c)
		}
		for _, c := range r.Intermediates {
			r.interPool.AddCert(c)
		}
	})
	return r.rootPool, r.interPool
}

// Chain is a verified endorsement chain.
type Chain struct {
	Key          *x509.Certificate // VCEK or VLEK
	Intermediate *x509.Certificate // ASK or ASVK
	ARK          *x509.Certificate
	VLEK         bool
	// Generation named by the ARK's common name ("ARK-Genoa"); Unknown for
	// roots with other names (test roots may have any name).
	Generation Generation
}

// VerifyChain checks that key chains to one of the roots at time now: every
// signature (RSASSA-PSS SHA-384 for AMD's certificates), validity periods, and
// a chain of exactly three certificates.
func VerifyChain(key *x509.Certificate, roots *Roots, now time.Time) (*Chain, error) {
	if ch, ok := roots.cached(key, now); ok {
		return ch, nil
	}
	rp, ip := roots.pools()
	chains, err := key.Verify(x509.VerifyOptions{
		Roots:         rp,
		Intermediates: ip,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrChain, key.Subject.CommonName, err)
	}
	for _, c := range chains {
		if len(c) != 3 {
			continue
		}
		ch := &Chain{Key: c[0], Intermediate: c[1], ARK: c[2]}
		ch.VLEK = strings.Contains(c[0].Subject.CommonName, "VLEK") || strings.Contains(c[1].Subject.CommonName, "VLEK")
		if name, ok := strings.CutPrefix(c[2].Subject.CommonName, "ARK-"); ok {
			switch g := Generation(name); g {
			case Milan, Genoa, Turin:
				ch.Generation = g
			}
		}
		roots.remember(ch)
		return ch, nil
	}
	return nil, fmt.Errorf("%w: %s: no chain of length 3 (VEK→ASK→ARK)", ErrChain, key.Subject.CommonName)
}

// VerifySignature checks the report's ECDSA P-384/SHA-384 signature over bytes
// 0..0x2A0 with key's public key.
func VerifySignature(r *Report, key *x509.Certificate) error {
	pub, ok := key.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P384() {
		return fmt.Errorf("%w: endorsement key is not ECDSA P-384", ErrSignature)
	}
	digest := sha512.Sum384(r.Raw[:SignedSize])
	rr := new(big.Int).SetBytes(reverse(r.SignatureR[:]))
	ss := new(big.Int).SetBytes(reverse(r.SignatureS[:]))
	if !ecdsa.Verify(pub, digest[:], rr, ss) {
		return fmt.Errorf("%w: does not verify with %s", ErrSignature, key.Subject.CommonName)
	}
	return nil
}

func reverse(b []byte) []byte {
	out := make([]byte, len(b))
	for i := range b {
		out[len(b)-1-i] = b[i]
	}
	return out
}

// KDS certificate extension OIDs (AMD "VCEK certificate and KDS interface").
var (
	oidBlSpl    = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 3, 1}
	oidTeeSpl   = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 3, 2}
	oidSnpSpl   = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 3, 3}
	oidUcodeSpl = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 3, 8}
	oidFmcSpl   = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 3, 9}
	oidHwid     = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 4}
)

func extension(c *x509.Certificate, oid asn1.ObjectIdentifier) ([]byte, bool) {
	for _, e := range c.Extensions {
		if e.Id.Equal(oid) {
			return e.Value, true
		}
	}
	return nil, false
}

func splExt(c *x509.Certificate, oid asn1.ObjectIdentifier) (uint8, error) {
	v, ok := extension(c, oid)
	if !ok {
		return 0, fmt.Errorf("%w: certificate lacks extension %v", ErrTCB, oid)
	}
	var n int
	rest, err := asn1.Unmarshal(v, &n)
	if err != nil || len(rest) != 0 || n < 0 || n > 255 {
		return 0, fmt.Errorf("%w: extension %v is not a small INTEGER", ErrTCB, oid)
	}
	return uint8(n), nil
}

// CheckEndorsement checks the binding between the report and its endorsement
// key certificate: the signer type matches the certificate (VCEK or VLEK), a
// VCEK's HW_ID equals the report's CHIP_ID, and the certificate's SPL
// extensions equal the report's REPORTED_TCB (decoded for generation g).
func CheckEndorsement(r *Report, ch *Chain, g Generation) error {
	switch {
	case r.SigningKey == SignerVLEK && !ch.VLEK:
		return fmt.Errorf("%w: report is VLEK-signed but the certificate is a VCEK", ErrTCB)
	case r.SigningKey == SignerVCEK && ch.VLEK:
		return fmt.Errorf("%w: report is VCEK-signed but the certificate is a VLEK", ErrTCB)
	case r.SigningKey != SignerVCEK && r.SigningKey != SignerVLEK:
		return fmt.Errorf("%w: report signing key %d", ErrTCB, r.SigningKey)
	}
	if !ch.VLEK {
		v, ok := extension(ch.Key, oidHwid)
		if !ok {
			return fmt.Errorf("%w: VCEK has no HW_ID extension", ErrTCB)
		}
		hwid := v
		// KDS writes a DER OCTET STRING; Azure's THIM certificates hold raw bytes.
		var octets []byte
		if rest, err := asn1.Unmarshal(v, &octets); err == nil && len(rest) == 0 {
			hwid = octets
		}
		// Turin VCEKs may certify only the 8 meaningful bytes of CHIP_ID.
		if g == Turin && len(hwid) == 8 && allZero(r.ChipID[8:]) {
			hwid = append(append([]byte(nil), hwid...), make([]byte, 56)...)
		}
		if !bytes.Equal(hwid, r.ChipID[:]) {
			return fmt.Errorf("%w: VCEK HW_ID differs from the report's CHIP_ID", ErrTCB)
		}
	}
	want := DecodeTCB(g, r.ReportedTCB)
	var got TCB
	var err error
	for _, f := range []struct {
		oid asn1.ObjectIdentifier
		dst *uint8
	}{{oidBlSpl, &got.Bootloader}, {oidTeeSpl, &got.TEE}, {oidSnpSpl, &got.SNP}, {oidUcodeSpl, &got.Microcode}} {
		if *f.dst, err = splExt(ch.Key, f.oid); err != nil {
			return err
		}
	}
	if g == Turin {
		if got.FMC, err = splExt(ch.Key, oidFmcSpl); err != nil {
			return err
		}
	}
	if got != want {
		return fmt.Errorf("%w: certificate TCB %v, report REPORTED_TCB %v", ErrTCB, got, want)
	}
	return nil
}

// Result is what Verify establishes about a genuine report.
type Result struct {
	Report     *Report
	Chain      *Chain
	Generation Generation
}

// Verify checks that raw is a genuine report signed by key, which must chain
// to roots at time now. The generation comes from the report's CPUID fields;
// v2 reports (no CPUID) take it from the verified chain's ARK, and failing
// that try Milan, then Genoa, then Turin for the TCB layout, as attestation-rs
// does.
func Verify(r *Report, key *x509.Certificate, roots *Roots, now time.Time) (*Result, error) {
	ch, err := VerifyChain(key, roots, now)
	if err != nil {
		return nil, err
	}
	if err := VerifySignature(r, ch.Key); err != nil {
		return nil, err
	}
	g := r.Generation()
	if r.HasCPUID && g == Unknown {
		return nil, fmt.Errorf("%w: unknown CPU family 0x%02x model 0x%02x", ErrFormat, r.Family, r.Model)
	}
	if g != Unknown && ch.Generation != Unknown && g != ch.Generation {
		return nil, fmt.Errorf("%w: report is from a %s CPU but the key chains to ARK-%s", ErrChain, g, ch.Generation)
	}
	if g == Unknown {
		g = ch.Generation
	}
	if g != Unknown {
		if err := CheckEndorsement(r, ch, g); err != nil {
			return nil, err
		}
		return &Result{Report: r, Chain: ch, Generation: g}, nil
	}
	var first error
	for _, cand := range []Generation{Milan, Genoa, Turin} {
		if err := CheckEndorsement(r, ch, cand); err == nil {
			return &Result{Report: r, Chain: ch, Generation: cand}, nil
		} else if first == nil {
			first = err
		}
	}
	return nil, first
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// ResetCache forgets every remembered chain (benchmarks of cold verification).
func (r *Roots) ResetCache() {
	r.mu.Lock()
	r.chains = nil
	r.mu.Unlock()
}
