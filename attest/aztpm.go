package attest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
	"github.com/kettle-build/kettle/abi"
)

// Azure vTPM handles (fixed by the Azure CVM paravisor).
const (
	AzureAKHandle        = tpm2.TPMHandle(0x81000003)
	AzureHCLReportIndex  = tpm2.TPMHandle(0x01400001)
	AzureReportDataIndex = tpm2.TPMHandle(0x01400002)
	// AzureAssetTag is /sys/class/dmi/id/chassis_asset_tag on Azure VMs.
	AzureAssetTag = "7783-7084-3265-9085-8269-3286-77"
	// azureMaxNonce is the Azure vTPM's TPM2B_DATA limit for qualifyingData.
	azureMaxNonce  = 50
	nvChunk        = 1024 // TPM_PT_NV_BUFFER_MAX on the vTPM and the simulator
	azureUserDataN = 64   // NV 0x01400002 holds pad64(report data)
	quoteAttempts  = 3
)

// azAttester makes az-snp and az-tdx evidence from the Azure vTPM.
type azAttester struct {
	platform string // PlatformAzSNP or PlatformAzTDX
	o        *options
}

// azMu serializes vTPM use across attesters: the NV write → HCL report read
// sequence of az-tdx is machine-wide state.
var azMu sync.Mutex

func (a *azAttester) Platform() string { return a.platform }

// openTPM returns the injected TPM or opens the device. close is a no-op for
// an injected TPM.
func openTPM(o *options) (t transport.TPM, closeFn func(), err error) {
	if o.tpm != nil {
		return o.tpm, func() {}, nil
	}
	var errs []error
	for _, name := range []string{"tpmrm0", "tpm0"} {
		p := filepath.Join(o.devRoot, name)
		if _, err := os.Stat(p); err != nil {
			errs = append(errs, err)
			continue
		}
		tc, err := linuxtpm.Open(p)
		if err != nil {
			return nil, nil, deviceError(p, err, "the Azure vTPM")
		}
		return tc, func() { tc.Close() }, nil
	}
	return nil, nil, deviceError(filepath.Join(o.devRoot, "tpmrm0"), errors.Join(errs...), "the Azure vTPM")
}

// probe checks at start-up that the vTPM and the HCL report are reachable
// and of the right kind.
func (a *azAttester) probe() error {
	azMu.Lock()
	defer azMu.Unlock()
	t, closeFn, err := openTPM(a.o)
	if err != nil {
		return err
	}
	defer closeFn()
	raw, err := nvReadAll(t, AzureHCLReportIndex)
	if err != nil {
		return fmt.Errorf("attest: %s: read HCL report (NV %#x): %w", a.platform, uint32(AzureHCLReportIndex), err)
	}
	hcl, err := ParseHCLReport(raw)
	if err != nil {
		return fmt.Errorf("attest: %s: %w", a.platform, err)
	}
	return a.checkType(hcl)
}

func (a *azAttester) checkType(h *HCLReport) error {
	want := uint32(hclReportTypeSNP)
	if a.platform == PlatformAzTDX {
		want = hclReportTypeTDX
	}
	if h.ReportType != want {
		return fmt.Errorf("attest: %s: the HCL report is of type %d (%s), not %d: use --attester %s",
			a.platform, h.ReportType, hclTypeName(h.ReportType), want, azPlatformOf(h.ReportType))
	}
	return nil
}

func hclTypeName(t uint32) string {
	switch t {
	case hclReportTypeSNP:
		return "SEV-SNP"
	case hclReportTypeTDX:
		return "TDX"
	}
	return "unknown"
}

func azPlatformOf(t uint32) string {
	if t == hclReportTypeTDX {
		return PlatformAzTDX
	}
	return PlatformAzSNP
}

func (a *azAttester) Attest(ctx context.Context, rd [ReportDataSize]byte) ([]byte, error) {
	ev, err := a.attest(ctx, rd)
	if err != nil {
		return nil, attestFailed(a.platform, err)
	}
	return ev, nil
}

func (a *azAttester) attest(ctx context.Context, rd [ReportDataSize]byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	azMu.Lock()
	defer azMu.Unlock()
	t, closeFn, err := openTPM(a.o)
	if err != nil {
		return nil, err
	}
	defer closeFn()

	var hclRaw []byte
	if a.platform == PlatformAzTDX {
		// The HCL regenerates the TD report with user-data = pad64(rd),
		// binding the data into the hardware report too.
		var ud [azureUserDataN]byte
		copy(ud[:], rd[:])
		if err := nvWriteUserData(t, ud[:]); err != nil {
			return nil, fmt.Errorf("write report data to NV %#x: %w", uint32(AzureReportDataIndex), err)
		}
		hclRaw, err = a.waitHCL(ctx, t, hex.EncodeToString(ud[:]))
		if err != nil {
			return nil, err
		}
	} else {
		hclRaw, err = nvReadAll(t, AzureHCLReportIndex)
		if err != nil {
			return nil, fmt.Errorf("read HCL report (NV %#x): %w", uint32(AzureHCLReportIndex), err)
		}
	}
	hcl, err := ParseHCLReport(hclRaw)
	if err != nil {
		return nil, err
	}
	if err := a.checkType(hcl); err != nil {
		return nil, err
	}
	runtime, err := hcl.Runtime()
	if err != nil {
		return nil, err
	}
	akN, err := runtime.AKModulus()
	if err != nil {
		return nil, err
	}
	if a.platform == PlatformAzSNP {
		// The SNP report binds the runtime data (and so the AK); without
		// this binding the evidence would not verify anywhere.
		sum := sha256.Sum256(hcl.RuntimeData)
		if !bytes.Equal(hcl.TEEReport[0x50:0x70], sum[:]) {
			return nil, errors.New("the HCL's SNP report does not bind its runtime data (REPORT_DATA[0:32] != sha256(runtime data))")
		}
	}
	q, err := tpmQuote(t, rd[:], akN)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	switch a.platform {
	case PlatformAzTDX:
		tdr, err := hcl.TDReport()
		if err != nil {
			return nil, err
		}
		quote, err := fetchTDQuote(ctx, a.o, tdr)
		if err != nil {
			return nil, err
		}
		return abi.Marshal(a.platform, abi.AzureEvidence{
			Version: 1, TPMQuote: q, HCLReport: b64url.EncodeToString(hclRaw), TDQuote: b64url.EncodeToString(quote),
		})
	default:
		vcek, err := fetchAzureVCEK(ctx, a.o)
		if err != nil {
			return nil, err
		}
		return abi.Marshal(a.platform, abi.AzureEvidence{
			Version: 1, TPMQuote: q, HCLReport: b64url.EncodeToString(hclRaw), VCEK: b64url.EncodeToString(vcek),
		})
	}
}

// waitHCL polls the HCL report until its runtime data carries userData (the
// paravisor regenerates it after the NV write; on real hosts this is
// immediate, but nothing documents that it is synchronous).
func (a *azAttester) waitHCL(ctx context.Context, t transport.TPM, userData string) ([]byte, error) {
	deadline := a.o.now().Add(a.o.hclTimeout)
	for {
		raw, err := nvReadAll(t, AzureHCLReportIndex)
		if err != nil {
			return nil, fmt.Errorf("read HCL report (NV %#x): %w", uint32(AzureHCLReportIndex), err)
		}
		got := ""
		if h, err := ParseHCLReport(raw); err == nil {
			if rt, err := h.Runtime(); err == nil {
				got = rt.UserData
			}
		}
		if strings.EqualFold(got, userData) {
			return raw, nil
		}
		if !a.o.now().Before(deadline) {
			return nil, fmt.Errorf("the HCL report did not pick up the report data within %s (user-data %.16q…)", a.o.hclTimeout, got)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(a.o.hclPoll):
		}
	}
}

var ownerAuth = tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}

// nvReadAll reads a whole NV index with owner authorization.
func nvReadAll(t transport.TPM, idx tpm2.TPMHandle) ([]byte, error) {
	pubRsp, err := tpm2.NVReadPublic{NVIndex: idx}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("NV_ReadPublic: %w", err)
	}
	pub, err := pubRsp.NVPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("NV public area: %w", err)
	}
	size, chunk := int(pub.DataSize), nvBufferMax(t)
	out := make([]byte, 0, size)
	for len(out) < size {
		n := min(chunk, size-len(out))
		rsp, err := tpm2.NVRead{
			AuthHandle: ownerAuth,
			NVIndex:    tpm2.NamedHandle{Handle: idx, Name: pubRsp.NVName},
			Size:       uint16(n),
			Offset:     uint16(len(out)),
		}.Execute(t)
		if err != nil {
			return nil, fmt.Errorf("NV_Read at %d: %w", len(out), err)
		}
		if len(rsp.Data.Buffer) == 0 {
			return nil, fmt.Errorf("NV_Read at %d: empty response", len(out))
		}
		out = append(out, rsp.Data.Buffer...)
	}
	return out[:size], nil
}

// nvBufferMax is the TPM's TPM_PT_NV_BUFFER_MAX, capped at nvChunk.
func nvBufferMax(t transport.TPM) int {
	rsp, err := tpm2.GetCapability{
		Capability:    tpm2.TPMCapTPMProperties,
		Property:      uint32(tpm2.TPMPTNVBufferMax),
		PropertyCount: 1,
	}.Execute(t)
	if err != nil {
		return nvChunk
	}
	props, err := rsp.CapabilityData.Data.TPMProperties()
	if err != nil || len(props.TPMProperty) == 0 || props.TPMProperty[0].Property != tpm2.TPMPTNVBufferMax {
		return nvChunk
	}
	if v := int(props.TPMProperty[0].Value); v > 0 && v < nvChunk {
		return v
	}
	return nvChunk
}

// nvWriteUserData writes data to NV 0x01400002, defining the index (owner
// read/write, exactly len(data) bytes) when it is missing or of another size.
func nvWriteUserData(t transport.TPM, data []byte) error {
	idx := AzureReportDataIndex
	pubRsp, err := tpm2.NVReadPublic{NVIndex: idx}.Execute(t)
	if err == nil {
		pub, perr := pubRsp.NVPublic.Contents()
		if perr == nil && int(pub.DataSize) != len(data) {
			if _, err := (tpm2.NVUndefineSpace{
				AuthHandle: ownerAuth,
				NVIndex:    tpm2.NamedHandle{Handle: idx, Name: pubRsp.NVName},
			}).Execute(t); err != nil {
				return fmt.Errorf("NV_UndefineSpace of a %d-byte index: %w", pub.DataSize, err)
			}
			err = errors.New("redefine")
		}
	}
	if err != nil {
		def := tpm2.NVDefineSpace{
			AuthHandle: ownerAuth,
			PublicInfo: tpm2.New2B(tpm2.TPMSNVPublic{
				NVIndex: idx,
				NameAlg: tpm2.TPMAlgSHA256,
				// As Azure's own tooling (az-cvm-vtpm) defines it.
				Attributes: tpm2.TPMANV{
					OwnerWrite: true,
					OwnerRead:  true,
					NT:         tpm2.TPMNTOrdinary,
				},
				DataSize: uint16(len(data)),
			}),
		}
		if _, err := def.Execute(t); err != nil {
			return fmt.Errorf("NV_DefineSpace: %w", err)
		}
		if pubRsp, err = (tpm2.NVReadPublic{NVIndex: idx}).Execute(t); err != nil {
			return fmt.Errorf("NV_ReadPublic: %w", err)
		}
	}
	if _, err := (tpm2.NVWrite{
		AuthHandle: ownerAuth,
		NVIndex:    tpm2.NamedHandle{Handle: idx, Name: pubRsp.NVName},
		Data:       tpm2.TPM2BMaxNVBuffer{Buffer: data},
	}).Execute(t); err != nil {
		return fmt.Errorf("NV_Write: %w", err)
	}
	return nil
}

var allPCRs = tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
	{Hash: tpm2.TPMAlgSHA256, PCRSelect: []byte{0xff, 0xff, 0xff}},
}}

// tpmQuote signs nonce (unpadded) and SHA-256 PCRs 0–23 with the AK, reads
// the PCRs, and checks its own output the way a verifier will: the AK is
// the one in the HCL runtime data, extraData is the nonce and the PCR values
// hash to the quoted digest (retrying when a PCR moved in between).
func tpmQuote(t transport.TPM, nonce, akModulus []byte) (*abi.TPMQuote, error) {
	if len(nonce) > azureMaxNonce {
		return nil, fmt.Errorf("report data is %d bytes; the Azure vTPM takes at most %d", len(nonce), azureMaxNonce)
	}
	ak, err := tpm2.ReadPublic{ObjectHandle: AzureAKHandle}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("read the attestation key %#x: %w", uint32(AzureAKHandle), err)
	}
	akPub, err := ak.OutPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("attestation key public area: %w", err)
	}
	rsaN, err := akPub.Unique.RSA()
	if err != nil {
		return nil, fmt.Errorf("attestation key %#x is not RSA: %w", uint32(AzureAKHandle), err)
	}
	if !bytes.Equal(bytes.TrimLeft(rsaN.Buffer, "\x00"), bytes.TrimLeft(akModulus, "\x00")) {
		return nil, fmt.Errorf("attestation key %#x differs from HCLAkPub in the HCL report", uint32(AzureAKHandle))
	}
	for attempt := 1; ; attempt++ {
		q, err := tpm2.Quote{
			SignHandle:     tpm2.AuthHandle{Handle: AzureAKHandle, Name: ak.Name, Auth: tpm2.PasswordAuth(nil)},
			QualifyingData: tpm2.TPM2BData{Buffer: nonce},
			InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
			PCRSelect:      allPCRs,
		}.Execute(t)
		if err != nil {
			return nil, fmt.Errorf("TPM2_Quote: %w", err)
		}
		msg := q.Quoted.Bytes()
		sig, err := q.Signature.Signature.RSASSA()
		if err != nil {
			return nil, fmt.Errorf("quote signature is not RSASSA: %w", err)
		}
		attest, err := q.Quoted.Contents()
		if err != nil {
			return nil, fmt.Errorf("parse TPMS_ATTEST: %w", err)
		}
		if !bytes.Equal(attest.ExtraData.Buffer, nonce) {
			return nil, errors.New("the quote's extraData differs from the report data")
		}
		info, err := attest.Attested.Quote()
		if err != nil {
			return nil, fmt.Errorf("TPMS_ATTEST is not a quote: %w", err)
		}
		pcrs, err := readPCRs(t)
		if err != nil {
			return nil, err
		}
		h := sha256.New()
		for _, p := range pcrs {
			h.Write(p)
		}
		if !bytes.Equal(h.Sum(nil), info.PCRDigest.Buffer) {
			if attempt < quoteAttempts {
				continue // a PCR was extended between quote and read
			}
			return nil, errors.New("PCR values keep changing between TPM2_Quote and TPM2_PCR_Read")
		}
		hexPCRs := make([]string, len(pcrs))
		for i, p := range pcrs {
			hexPCRs[i] = hex.EncodeToString(p)
		}
		return &abi.TPMQuote{
			Signature: hex.EncodeToString(sig.Sig.Buffer),
			Message:   hex.EncodeToString(msg),
			PCRs:      hexPCRs,
		}, nil
	}
}

// readPCRs reads SHA-256 PCRs 0–23 (a TPM returns at most 8 per call).
func readPCRs(t transport.TPM) ([][]byte, error) {
	out := make([][]byte, 24)
	for i := range 24 {
		if out[i] != nil {
			continue
		}
		sel := make([]byte, 3)
		for j := i; j < 24 && j < i+8; j++ {
			if out[j] == nil {
				sel[j/8] |= 1 << (j % 8)
			}
		}
		rsp, err := tpm2.PCRRead{PCRSelectionIn: tpm2.TPMLPCRSelection{
			PCRSelections: []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA256, PCRSelect: sel}},
		}}.Execute(t)
		if err != nil {
			return nil, fmt.Errorf("TPM2_PCR_Read: %w", err)
		}
		// The response lists the PCRs it returned, in index order.
		var got []int
		for _, s := range rsp.PCRSelectionOut.PCRSelections {
			if s.Hash != tpm2.TPMAlgSHA256 {
				continue
			}
			for b, v := range s.PCRSelect {
				for bit := range 8 {
					if v&(1<<bit) != 0 {
						got = append(got, b*8+bit)
					}
				}
			}
		}
		if len(got) != len(rsp.PCRValues.Digests) || len(got) == 0 {
			return nil, fmt.Errorf("TPM2_PCR_Read returned %d values for %d PCRs", len(rsp.PCRValues.Digests), len(got))
		}
		for k, idx := range got {
			if idx >= 24 {
				return nil, fmt.Errorf("TPM2_PCR_Read returned PCR %d", idx)
			}
			d := rsp.PCRValues.Digests[k].Buffer
			if len(d) != sha256.Size {
				return nil, fmt.Errorf("PCR %d is %d bytes", idx, len(d))
			}
			out[idx] = d
		}
		if out[i] == nil {
			return nil, fmt.Errorf("the TPM has no SHA-256 PCR %d", i)
		}
	}
	return out, nil
}

// deviceError turns an open/stat failure into a message that names the
// device and what to do about it.
func deviceError(path string, err error, what string) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("attest: no %s at %s: this machine is not that kind of confidential VM, or its driver is not loaded; choose another --attester (auto detects what is present): %w",
			what, path, ErrNoDevice)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("attest: %s at %s: permission denied: run kettle as root or give its user read-write access to the device: %w",
			what, path, ErrPermission)
	}
	return fmt.Errorf("attest: %s at %s: %w", what, path, err)
}
