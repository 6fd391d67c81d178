package attest

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha512"
	"crypto/x509"
	"embed"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/google/go-sev-guest/abi"
)

// sim-snp: real SNP evidence (envelope platform "snp") signed by
// go-sev-guest's test-only AMD keys. Only a verifier given WriteSimRoots'
// output as trust roots accepts it.

//go:generate go run gen_simchain.go

// simProductName is the product the test-only chain is issued for; the
// reports carry the matching CPUID (Milan B1: family 0x19, model 0x01).
const simProductName = "Milan-B1"

// simChainTime fixes the test-only chain's validity (ARK/ASK 2024-01-01 +
// 25 years, VCEK until 2031-01-01) so that roots written by one process verify
// evidence made by another.
var simChainTime = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// simFiles is the chain gen_simchain.go made with go-sev-guest's test code.
// It is embedded rather than made at run time because importing
// go-sev-guest/testing parses all its test keys in package init, which
// every kettle process (`kettle verify` too) would pay for.
//
//go:embed simchain/*.pem
var simFiles embed.FS

// simSigner is the parsed chain: parsed on first use only.
type simSigner struct {
	Ark, Ask, Vcek *x509.Certificate
	VcekKey        *ecdsa.PrivateKey
}

var simChain = sync.OnceValues(func() (*simSigner, error) {
	s, err := parseSimChain()
	if err != nil {
		return nil, fmt.Errorf("attest: sim-snp: test-only AMD chain: %w", err)
	}
	return s, nil
})

func parseSimChain() (*simSigner, error) {
	block := func(name, typ string) ([]byte, error) {
		b, err := simFiles.ReadFile("simchain/" + name)
		if err != nil {
			return nil, err
		}
		p, _ := pem.Decode(b)
		if p == nil || p.Type != typ {
			return nil, fmt.Errorf("%s: no %s block", name, typ)
		}
		return p.Bytes, nil
	}
	cert := func(name string) (*x509.Certificate, error) {
		der, err := block(name, "CERTIFICATE")
		if err != nil {
			return nil, err
		}
		return x509.ParseCertificate(der)
	}
	var s simSigner
	var err error
	if s.Ark, err = cert("ark.pem"); err != nil {
		return nil, err
	}
	if s.Ask, err = cert("ask.pem"); err != nil {
		return nil, err
	}
	if s.Vcek, err = cert("vcek.pem"); err != nil {
		return nil, err
	}
	der, err := block("vcek.key.pem", "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, err
	}
	var ok bool
	if s.VcekKey, ok = k.(*ecdsa.PrivateKey); !ok {
		return nil, errors.New("vcek.key.pem: not an ECDSA key")
	}
	if pub, ok := s.Vcek.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&s.VcekKey.PublicKey) {
		return nil, errors.New("vcek.key.pem does not match vcek.pem")
	}
	return &s, nil
}

// WriteSimRoots writes the test-only AMD ARK and ASK certificates (PEM
// CERTIFICATE blocks, ARK first) that sign sim-snp evidence, for
// `kettle verify --trust-roots FILE`. Never trust them in production.
func WriteSimRoots(w io.Writer) error {
	s, err := simChain()
	if err != nil {
		return err
	}
	for _, c := range [][]byte{s.Ark.Raw, s.Ask.Raw} {
		if err := pem.Encode(w, &pem.Block{Type: "CERTIFICATE", Bytes: c}); err != nil {
			return fmt.Errorf("attest: write sim roots: %w", err)
		}
	}
	return nil
}

// simMeasurement is the sim-snp launch measurement: recognisable, and not
// anything real hardware would produce.
var simMeasurement = sha512.Sum384([]byte("kettle sim-snp: test-only, not a TEE"))

// WithSimMeasurement makes sim-snp reports carry m as their MEASUREMENT
// (for example the launch digest of a test IGVM file, so that
// `kettle verify --igvm` can be exercised without hardware). Other
// attesters ignore it.
func WithSimMeasurement(m [48]byte) Option {
	return func(o *options) { o.simMeasurement = &m }
}

// simReport makes a signed v3 SNP report for rd64 with launch measurement
// meas: VMPL 0, guest policy without DEBUG (SMT allowed), Milan CPUID, zero
// TCB and CHIP_ID matching the test-only VCEK's extensions.
func simReport(rd64 [64]byte, meas [48]byte) ([]byte, error) {
	s, err := simChain()
	if err != nil {
		return nil, err
	}
	r := make([]byte, abi.ReportSize)
	binary.LittleEndian.PutUint32(r[0x00:], 3) // version
	binary.LittleEndian.PutUint64(r[0x08:], abi.SnpPolicyToBytes(abi.SnpPolicy{SMT: true, ABIMajor: 1}))
	binary.LittleEndian.PutUint32(r[0x34:], 1) // ECDSA P-384 with SHA-384
	binary.LittleEndian.PutUint64(r[0x40:], 1) // platform info: SMT enabled
	copy(r[0x50:0x90], rd64[:])
	copy(r[0x90:0xC0], meas[:])
	r[0x188], r[0x189], r[0x18A] = 0x19, 0x01, 0x01 // Milan B1
	h := sha512.Sum384(abi.SignedComponent(r))
	R, S, err := ecdsa.Sign(rand.Reader, s.VcekKey, h[:])
	if err != nil {
		return nil, fmt.Errorf("sim-snp: sign report: %w", err)
	}
	if err := abi.SetSignature(R, S, r); err != nil {
		return nil, fmt.Errorf("sim-snp: set signature: %w", err)
	}
	return r, nil
}

// newSimSNP is the snp attester fed by the simulated signer.
func newSimSNP(o *options) (*snpAttester, error) {
	s, err := simChain()
	if err != nil {
		return nil, err
	}
	table := &abi.CertTable{Entries: []abi.CertTableEntry{
		{GUID: mustGUID(abi.VcekGUID), RawCert: s.Vcek.Raw},
		{GUID: mustGUID(abi.AskGUID), RawCert: s.Ask.Raw},
		{GUID: mustGUID(abi.ArkGUID), RawCert: s.Ark.Raw},
	}}
	certs := table.Marshal()
	meas := simMeasurement
	if o.simMeasurement != nil {
		meas = *o.simMeasurement
	}
	return &snpAttester{
		o:   o,
		src: "sim-snp (go-sev-guest test-only AMD keys)",
		get: func(rd [64]byte) ([]byte, []byte, error) {
			r, err := simReport(rd, meas)
			return r, certs, err
		},
		warning: "sim-snp: evidence is signed with go-sev-guest's TEST-ONLY AMD keys; it proves nothing about this machine",
	}, nil
}
