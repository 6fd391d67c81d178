package verify

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"sync"

	"github.com/kettle-build/kettle/verify/snp"
	"github.com/kettle-build/kettle/verify/tdx"
)

// TrustRoots are the vendor keys evidence must chain to: AMD ARKs with their
// ASK/ASVK intermediates, and Intel SGX Root CAs.
type TrustRoots struct {
	amd   *snp.Roots
	intel []*x509.Certificate
}

// AMD returns the AMD roots (nil when there are none).
func (t *TrustRoots) AMD() *snp.Roots { return t.amd }

// Intel returns the Intel roots.
func (t *TrustRoots) Intel() []*x509.Certificate { return t.intel }

var defaultTrustRoots = sync.OnceValue(func() *TrustRoots {
	return &TrustRoots{amd: snp.DefaultRoots(), intel: []*x509.Certificate{tdx.DefaultRoot()}}
})

// DefaultTrustRoots returns the embedded real vendor roots: AMD's ARK, ASK
// and ASVK for Milan, Genoa and Turin, and the pinned Intel SGX Root CA.
func DefaultTrustRoots() *TrustRoots { return defaultTrustRoots() }

// ParseTrustRoots reads PEM CERTIFICATE blocks: self-signed AMD ARKs with the
// ASKs/ASVKs they signed, and/or self-signed Intel (ECDSA) roots. The result
// replaces the embedded roots entirely: a platform with no root here fails.
// Test-only chains (go-sev-guest's fake ARK/ASK) are accepted as given.
func ParseTrustRoots(pemData []byte) (*TrustRoots, error) {
	var amdPEM bytes.Buffer
	t := &TrustRoots{}
	n := 0
	for rest := pemData; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		n++
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("trust roots: certificate %d: %w", n, err)
		}
		if _, ok := c.PublicKey.(*ecdsa.PublicKey); ok {
			if !bytes.Equal(c.RawIssuer, c.RawSubject) || c.CheckSignatureFrom(c) != nil {
				return nil, fmt.Errorf("trust roots: ECDSA certificate %q is not a self-signed Intel root", c.Subject.CommonName)
			}
			t.intel = append(t.intel, c)
			continue
		}
		_ = pem.Encode(&amdPEM, b)
	}
	if n == 0 {
		return nil, fmt.Errorf("trust roots: no PEM CERTIFICATE blocks")
	}
	if amdPEM.Len() > 0 {
		r, err := snp.ParseRoots(amdPEM.Bytes())
		if err != nil {
			return nil, fmt.Errorf("trust roots: %w", err)
		}
		t.amd = r
	}
	return t, nil
}
