// Package attesttest simulates TEE hardware for tests: the go-tpm-tools TPM
// simulator provisioned like an Azure confidential VM's vTPM (AK at
// 0x81000003, HCL report in NV 0x01400001, PCRs extended, the az-tdx NV
// 0x01400002 → HCL regeneration), an Azure metadata service, and SNP reports
// signed by go-sev-guest's test-only AMD keys. Test-only: nothing here is
// trusted by a default verifier.
package attesttest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	labi "github.com/google/go-sev-guest/client/linuxabi"
	sevtesting "github.com/google/go-sev-guest/testing"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/simulator"
	"github.com/google/uuid"
)

// ChainTime and ProductName match attest's sim-snp chain, so that
// attest.WriteSimRoots' roots also verify everything signed here.
var ChainTime = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// ProductName is the AMD product of the test-only chain.
const ProductName = "Milan-B1"

// Signer returns go-sev-guest's test-only AMD chain (ARK, ASK, VCEK) for
// ProductName at ChainTime.
func Signer(tb testing.TB) *sevtesting.AmdSigner {
	tb.Helper()
	s, err := sevtesting.DefaultTestOnlyCertChain(ProductName, ChainTime)
	if err != nil {
		tb.Fatalf("test-only AMD chain: %v", err)
	}
	return s
}

// RootsPEM is the ARK and ASK of s as PEM (trust roots for a verifier).
func RootsPEM(s *sevtesting.AmdSigner) []byte {
	var b bytes.Buffer
	pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: s.Ark.Raw})
	pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: s.Ask.Raw})
	return b.Bytes()
}

// ReportOptions shape an SNP report.
type ReportOptions struct {
	Debug bool // set the guest policy DEBUG bit
	VMPL  uint32
}

// UnsignedSNPReport is a v3 Milan report for reportData with a zero
// signature (go-sev-guest's mock device signs what it serves).
func UnsignedSNPReport(reportData [64]byte, o ReportOptions) []byte {
	r := make([]byte, abi.ReportSize)
	binary.LittleEndian.PutUint32(r[0x00:], 3)
	binary.LittleEndian.PutUint64(r[0x08:], abi.SnpPolicyToBytes(abi.SnpPolicy{SMT: true, ABIMajor: 1, Debug: o.Debug}))
	binary.LittleEndian.PutUint32(r[0x30:], o.VMPL)
	binary.LittleEndian.PutUint32(r[0x34:], 1)
	binary.LittleEndian.PutUint64(r[0x40:], 1)
	copy(r[0x50:0x90], reportData[:])
	m := sha512.Sum384([]byte("attesttest measurement"))
	copy(r[0x90:0xC0], m[:])
	r[0x188], r[0x189], r[0x18A] = 0x19, 0x01, 0x01
	return r
}

// SignedSNPReport is UnsignedSNPReport signed by s's VCEK.
func SignedSNPReport(tb testing.TB, s *sevtesting.AmdSigner, reportData [64]byte, o ReportOptions) []byte {
	tb.Helper()
	r := UnsignedSNPReport(reportData, o)
	h := sha512.Sum384(abi.SignedComponent(r))
	R, S, err := ecdsa.Sign(rand.Reader, s.Keys.Vcek, h[:])
	if err != nil {
		tb.Fatal(err)
	}
	if err := abi.SetSignature(R, S, r); err != nil {
		tb.Fatal(err)
	}
	return r
}

// CertTable is s's VCEK, ASK and ARK in the AMD GUID table format.
func CertTable(s *sevtesting.AmdSigner) []byte {
	t := &abi.CertTable{Entries: []abi.CertTableEntry{
		{GUID: guid(abi.VcekGUID), RawCert: s.Vcek.Raw},
		{GUID: guid(abi.AskGUID), RawCert: s.Ask.Raw},
		{GUID: guid(abi.ArkGUID), RawCert: s.Ark.Raw},
	}}
	return t.Marshal()
}

// SNPDevice is go-sev-guest's mock /dev/sev-guest answering reportData with
// a (non-debug) report signed by s.
func SNPDevice(s *sevtesting.AmdSigner, reportData [64]byte) *sevtesting.Device {
	var resp labi.SnpReportRespABI
	copy(resp.Data[:], UnsignedSNPReport(reportData, ReportOptions{}))
	certs := CertTable(s)
	return &sevtesting.Device{
		ReportDataRsp: map[string]any{
			hex.EncodeToString(reportData[:]): &sevtesting.GetReportResponse{Resp: resp},
		},
		Certs:      certs,
		Signer:     s,
		SevProduct: abi.DefaultSevProduct(),
	}
}

// Azure HCL constants (see attest/hcl.go).
const (
	AKHandle        = tpm2.TPMHandle(0x81000003)
	HCLReportIndex  = tpm2.TPMHandle(0x01400001)
	ReportDataIndex = tpm2.TPMHandle(0x01400002)
	hclNVSize       = 2048 // the simulator's per-index limit
)

// VTPM is the TPM simulator provisioned like an Azure CVM vTPM.
type VTPM struct {
	transport.TPM // what the attester uses
	Sim           transport.TPMCloser
	Signer        *sevtesting.AmdSigner
	TDX           bool
	// HCL is the current NV 0x01400001 content (unpadded).
	mu       sync.Mutex
	HCL      []byte
	akN      []byte
	tb       testing.TB
	TDReport []byte // az-tdx: the current fake TDREPORT
	Writes   int    // az-tdx: NV 0x01400002 writes seen
}

// NewAzureVTPM opens the simulator (one per process at a time) and
// provisions it: a restricted RSA-2048 RSASSA-SHA256 AK persisted at
// 0x81000003, PCRs 0–7 and 14 extended, and an HCL report in NV 0x01400001
// whose TEE report binds sha256(runtime data JSON with the AK). tdx selects
// an az-tdx vTPM: writes to NV 0x01400002 regenerate the HCL report with that
// user-data, as Azure's paravisor does. The simulator closes at test end.
func NewAzureVTPM(tb testing.TB, tdx bool) *VTPM {
	tb.Helper()
	sim, err := simulator.OpenSimulator()
	if err != nil {
		tb.Fatalf("TPM simulator: %v", err)
	}
	tb.Cleanup(func() { sim.Close() })
	v := &VTPM{Sim: sim, TDX: tdx, tb: tb}
	v.TPM = hclTPM{v}
	if !tdx {
		v.Signer = Signer(tb)
	}
	ak, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHEndorsement,
		InPublic: tpm2.New2B(tpm2.TPMTPublic{
			Type:    tpm2.TPMAlgRSA,
			NameAlg: tpm2.TPMAlgSHA256,
			ObjectAttributes: tpm2.TPMAObject{
				FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
				UserWithAuth: true, Restricted: true, SignEncrypt: true, NoDA: true,
			},
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
				Scheme: tpm2.TPMTRSAScheme{
					Scheme:  tpm2.TPMAlgRSASSA,
					Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256}),
				},
				KeyBits: 2048,
			}),
		}),
	}.Execute(sim)
	if err != nil {
		tb.Fatalf("create AK: %v", err)
	}
	if _, err := (tpm2.EvictControl{
		Auth:             tpm2.TPMRHOwner,
		ObjectHandle:     &tpm2.NamedHandle{Handle: ak.ObjectHandle, Name: ak.Name},
		PersistentHandle: AKHandle,
	}).Execute(sim); err != nil {
		tb.Fatalf("persist AK: %v", err)
	}
	tpm2.FlushContext{FlushHandle: ak.ObjectHandle}.Execute(sim)
	pub, err := ak.OutPublic.Contents()
	if err != nil {
		tb.Fatal(err)
	}
	n, err := pub.Unique.RSA()
	if err != nil {
		tb.Fatal(err)
	}
	v.akN = n.Buffer
	for _, i := range []int{0, 1, 2, 3, 4, 5, 6, 7, 14} {
		d := sha256.Sum256([]byte(fmt.Sprintf("attesttest PCR %d", i)))
		if _, err := (tpm2.PCRExtend{
			PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(i), Auth: tpm2.PasswordAuth(nil)},
			Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: d[:]}}},
		}).Execute(sim); err != nil {
			tb.Fatalf("extend PCR %d: %v", i, err)
		}
	}
	v.defineNV(HCLReportIndex, hclNVSize)
	v.writeHCL(make([]byte, 64))
	return v
}

// AKModulus is the AK's RSA modulus.
func (v *VTPM) AKModulus() []byte { return v.akN }

// RuntimeJSON is the HCL runtime data for userData (64 bytes).
func (v *VTPM) RuntimeJSON(userData []byte) []byte {
	j, _ := json.Marshal(map[string]any{
		"keys": []map[string]any{{
			"kid": "HCLAkPub", "key_ops": []string{"sign"}, "kty": "RSA",
			"e": "AQAB", "n": base64.RawURLEncoding.EncodeToString(v.akN),
		}},
		"vm-configuration": map[string]any{"secure-boot": true, "tpm-enabled": true},
		"user-data":        strings.ToUpper(hex.EncodeToString(userData)),
	})
	return j
}

// writeHCL builds and stores the HCL report for userData.
func (v *VTPM) writeHCL(userData []byte) {
	tb := v.tb
	runtime := v.RuntimeJSON(userData)
	var rd [64]byte
	sum := sha256.Sum256(runtime)
	copy(rd[:], sum[:])
	tee := make([]byte, 1184)
	reportType, version := uint32(2), uint32(1)
	if v.TDX {
		reportType, version = 4, 2
		// A TDREPORT: REPORTMACSTRUCT (256 bytes) with REPORTDATA at 128.
		tdr := make([]byte, 1024)
		copy(tdr[0:8], []byte{0x81, 0, 0, 0, 0, 0, 0, 0})
		copy(tdr[128:192], rd[:])
		copy(tdr[256:], bytes.Repeat([]byte{0xAB}, 16))
		copy(tee, tdr)
		v.TDReport = tdr
	} else {
		copy(tee, SignedSNPReport(tb, v.Signer, rd, ReportOptions{}))
	}
	blob := make([]byte, 0x4D4+len(runtime))
	binary.LittleEndian.PutUint32(blob[0:], 0x414C4348)
	binary.LittleEndian.PutUint32(blob[4:], version)
	binary.LittleEndian.PutUint32(blob[8:], uint32(len(blob)))
	binary.LittleEndian.PutUint32(blob[12:], 2)
	copy(blob[0x20:], tee)
	binary.LittleEndian.PutUint32(blob[0x4C0:], uint32(20+len(runtime)))
	binary.LittleEndian.PutUint32(blob[0x4C4:], 1)
	binary.LittleEndian.PutUint32(blob[0x4C8:], reportType)
	binary.LittleEndian.PutUint32(blob[0x4CC:], 1)
	binary.LittleEndian.PutUint32(blob[0x4D0:], uint32(len(runtime)))
	copy(blob[0x4D4:], runtime)
	if len(blob) > hclNVSize {
		tb.Fatalf("HCL report is %d bytes, over the simulator's %d", len(blob), hclNVSize)
	}
	padded := make([]byte, hclNVSize) // trailing NULs, as on Azure
	copy(padded, blob)
	v.writeNV(HCLReportIndex, padded)
	v.mu.Lock()
	v.HCL = padded
	v.mu.Unlock()
}

// SetHCL overwrites NV 0x01400001 (for tamper tests); blob is padded to the
// index size.
func (v *VTPM) SetHCL(blob []byte) {
	padded := make([]byte, hclNVSize)
	copy(padded, blob)
	v.writeNV(HCLReportIndex, padded)
	v.mu.Lock()
	v.HCL = padded
	v.mu.Unlock()
}

var owner = tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}

func (v *VTPM) defineNV(idx tpm2.TPMHandle, size int) {
	if _, err := (tpm2.NVDefineSpace{
		AuthHandle: owner,
		PublicInfo: tpm2.New2B(tpm2.TPMSNVPublic{
			NVIndex: idx, NameAlg: tpm2.TPMAlgSHA256,
			Attributes: tpm2.TPMANV{OwnerWrite: true, OwnerRead: true, AuthRead: true, NT: tpm2.TPMNTOrdinary, NoDA: true},
			DataSize:   uint16(size),
		}),
	}).Execute(v.Sim); err != nil {
		v.tb.Fatalf("define NV %#x: %v", uint32(idx), err)
	}
}

func (v *VTPM) writeNV(idx tpm2.TPMHandle, data []byte) {
	for off := 0; off < len(data); off += 1024 {
		pub, err := tpm2.NVReadPublic{NVIndex: idx}.Execute(v.Sim)
		if err != nil {
			v.tb.Fatal(err)
		}
		end := min(off+1024, len(data))
		if _, err := (tpm2.NVWrite{
			AuthHandle: owner,
			NVIndex:    tpm2.NamedHandle{Handle: idx, Name: pub.NVName},
			Data:       tpm2.TPM2BMaxNVBuffer{Buffer: data[off:end]},
			Offset:     uint16(off),
		}).Execute(v.Sim); err != nil {
			v.tb.Fatalf("write NV %#x at %d: %v", uint32(idx), off, err)
		}
	}
}

func (v *VTPM) readNV(idx tpm2.TPMHandle) []byte {
	pub, err := tpm2.NVReadPublic{NVIndex: idx}.Execute(v.Sim)
	if err != nil {
		v.tb.Fatal(err)
	}
	p, _ := pub.NVPublic.Contents()
	rsp, err := tpm2.NVRead{
		AuthHandle: owner,
		NVIndex:    tpm2.NamedHandle{Handle: idx, Name: pub.NVName},
		Size:       p.DataSize,
	}.Execute(v.Sim)
	if err != nil {
		v.tb.Fatal(err)
	}
	return rsp.Data.Buffer
}

// hclTPM plays the paravisor: after a successful NV_Write to 0x01400002 on
// an az-tdx vTPM it regenerates the HCL report with that user-data.
type hclTPM struct{ v *VTPM }

func (h hclTPM) Send(cmd []byte) ([]byte, error) {
	rsp, err := h.v.Sim.Send(cmd)
	if err != nil || !h.v.TDX || len(cmd) < 18 || len(rsp) < 10 {
		return rsp, err
	}
	cc := binary.BigEndian.Uint32(cmd[6:10])
	nv := binary.BigEndian.Uint32(cmd[14:18])
	rc := binary.BigEndian.Uint32(rsp[6:10])
	if tpm2.TPMCC(cc) == tpm2.TPMCCNVWrite && tpm2.TPMHandle(nv) == ReportDataIndex && rc == 0 {
		h.v.Writes++
		h.v.writeHCL(h.v.readNV(ReportDataIndex))
	}
	return rsp, nil
}

// IMDS is a fake Azure instance metadata service: the THIM VCEK endpoint
// (for an az-snp VTPM) and /acc/tdquote (answering Quote).
type IMDS struct {
	*httptest.Server
	mu sync.Mutex
	// Quote is returned by /acc/tdquote.
	Quote []byte
	// Reports records the TDREPORTs posted to /acc/tdquote.
	Reports [][]byte
	// THIMCalls counts VCEK requests.
	THIMCalls int
}

// NewIMDS serves s's VCEK (s may be nil for az-tdx) and quote.
func NewIMDS(tb testing.TB, s *sevtesting.AmdSigner, quote []byte) *IMDS {
	m := &IMDS{Quote: quote}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metadata/THIM/amd/certification", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Metadata") != "true" {
			http.Error(w, "Required metadata header not specified", http.StatusBadRequest)
			return
		}
		if s == nil {
			http.NotFound(w, r)
			return
		}
		m.mu.Lock()
		m.THIMCalls++
		m.mu.Unlock()
		chain := string(RootsPEM(s))
		json.NewEncoder(w).Encode(map[string]string{
			"vcekCert":         string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Vcek.Raw})),
			"certificateChain": chain,
			"tcbm":             "0000000000000000",
		})
	})
	mux.HandleFunc("POST /acc/tdquote", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Report string `json:"report"`
		}
		body, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(body, &req); err != nil || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		rep, err := base64.RawURLEncoding.DecodeString(req.Report)
		if err != nil || len(rep) != 1024 {
			http.Error(w, "bad report", http.StatusBadRequest)
			return
		}
		m.mu.Lock()
		m.Reports = append(m.Reports, rep)
		q := m.Quote
		m.mu.Unlock()
		json.NewEncoder(w).Encode(map[string]string{"quote": base64.RawURLEncoding.EncodeToString(q)})
	})
	m.Server = httptest.NewServer(mux)
	tb.Cleanup(m.Close)
	return m
}

func guid(s string) uuid.UUID { return uuid.MustParse(s) }
