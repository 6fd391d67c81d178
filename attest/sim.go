package attest

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha512"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/google/go-sev-guest/abi"
	sevtesting "github.com/google/go-sev-guest/testing"
)

// sim-snp: real SNP evidence (envelope platform "snp") signed by
// go-sev-guest's test-only AMD keys. Only a verifier given WriteSimRoots'
// output as trust roots accepts it.

// simProductName is the product the test-only chain is issued for; the
// reports carry the matching CPUID (Milan B1: family 0x19, model 0x01).
const simProductName = "Milan-B1"

// simChainTime fixes the test-only chain's validity (ARK/ASK 2024-01-01 +
// 25 years, VCEK until 2031-01-01) so that roots written by one process verify
// evidence made by another.
var simChainTime = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

var (
	simOnce   sync.Once
	simSigner *sevtesting.AmdSigner
	simErr    error
)

func simChain() (*sevtesting.AmdSigner, error) {
	simOnce.Do(func() {
		simSigner, simErr = sevtesting.DefaultTestOnlyCertChain(simProductName, simChainTime)
		if simErr != nil {
			simErr = fmt.Errorf("attest: sim-snp: test-only AMD chain: %w", simErr)
		}
	})
	return simSigner, simErr
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
	R, S, err := ecdsa.Sign(rand.Reader, s.Keys.Vcek, h[:])
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
