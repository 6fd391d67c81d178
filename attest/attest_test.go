package attest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/configfs/faketsm"
	sevabi "github.com/google/go-sev-guest/abi"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	sevtesting "github.com/google/go-sev-guest/testing"
	sevverify "github.com/google/go-sev-guest/verify"
	tdxtesting "github.com/google/go-tdx-guest/testing"
	"github.com/google/go-tpm/tpm2"
	"github.com/kettle-build/kettle/abi"
	"github.com/kettle-build/kettle/attest/attesttest"
	"github.com/kettle-build/kettle/failure"
)

var quiet = WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))

func testRD(nonce string) [ReportDataSize]byte {
	return ReportData([]byte(`{"_type":"https://in-toto.io/Statement/v1"}`), []byte(nonce))
}

// fixture names a file of testdata/: evidence captured on real hardware
// (testdata/README.md).
func fixture(parts ...string) string {
	return filepath.Join(append([]string{"testdata"}, parts...)...)
}

// decodeEnvelope writes ev to a file, reads it back and decodes it strictly.
func decodeEnvelope[T any](t *testing.T, ev []byte, platform string) *T {
	t.Helper()
	p := filepath.Join(t.TempDir(), "evidence.json")
	if err := os.WriteFile(p, ev, 0o644); err != nil {
		t.Fatal(err)
	}
	back, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(back, ev) {
		t.Fatalf("read back: %v", err)
	}
	env, err := parseEnvelope(back)
	if err != nil {
		t.Fatal(err)
	}
	if env.Platform != platform {
		t.Fatalf("platform %q, want %q", env.Platform, platform)
	}
	var body T
	dec := json.NewDecoder(bytes.NewReader(env.Evidence))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		t.Fatalf("decode %s evidence: %v", platform, err)
	}
	if bytes.HasSuffix(ev, []byte("\n")) || !json.Valid(ev) {
		t.Fatalf("evidence must be compact JSON without newline: %q", ev[len(ev)-5:])
	}
	return &body
}

func TestInsecure(t *testing.T) {
	a, err := New(context.Background(), "insecure", quiet)
	if err != nil {
		t.Fatal(err)
	}
	rd := testRD("0123456789abcdef")
	ev, err := a.Attest(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"platform":"insecure","evidence":{"report_data":"` + hex.EncodeToString(rd[:]) + `"}}`
	if string(ev) != want {
		t.Fatalf("got %s\nwant %s", ev, want)
	}
	if WarningOf(a) == "" {
		t.Fatal("insecure must carry a warning")
	}
}

func TestNewUnknown(t *testing.T) {
	_, err := New(context.Background(), "sgx", quiet)
	if !errors.Is(err, ErrUnknownAttester) {
		t.Fatalf("err = %v", err)
	}
}

// verifySNPCrypto checks an SNP report the way a verifier does, with the
// given PEM roots: VCEK → ASK → ARK, report signature, report data.
func verifySNPCrypto(t *testing.T, report, vcekDER, roots []byte, wantRD [64]byte) {
	t.Helper()
	vcek, err := x509.ParseCertificate(vcekDER)
	if err != nil {
		t.Fatal(err)
	}
	var certs []*x509.Certificate
	for rest := roots; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	if len(certs) != 2 || !strings.HasPrefix(certs[0].Subject.CommonName, "ARK-") {
		t.Fatalf("roots: want ARK then ASK, got %d certs", len(certs))
	}
	if err := certs[1].CheckSignatureFrom(certs[0]); err != nil {
		t.Fatalf("ASK not signed by ARK: %v", err)
	}
	if err := vcek.CheckSignatureFrom(certs[1]); err != nil {
		t.Fatalf("VCEK not signed by ASK: %v", err)
	}
	if err := sevverify.SnpReportSignature(report, vcek); err != nil {
		t.Fatalf("report signature: %v", err)
	}
	if !bytes.Equal(report[0x50:0x90], wantRD[:]) {
		t.Fatal("REPORT_DATA mismatch")
	}
	p, err := sevabi.ReportToProto(report)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := sevabi.ParseSnpPolicy(p.GetPolicy())
	if err != nil {
		t.Fatal(err)
	}
	if pol.Debug || p.GetVmpl() != 0 {
		t.Fatalf("policy debug=%v vmpl=%d", pol.Debug, p.GetVmpl())
	}
}

func pad64(rd [ReportDataSize]byte) (out [64]byte) {
	copy(out[:], rd[:])
	return out
}

func TestSimSNP(t *testing.T) {
	a, err := New(context.Background(), "sim-snp", quiet)
	if err != nil {
		t.Fatal(err)
	}
	if a.Platform() != PlatformSNP || WarningOf(a) == "" {
		t.Fatalf("platform %q warning %q", a.Platform(), WarningOf(a))
	}
	rd := testRD("nonce-sim")
	ev, err := a.Attest(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	body := decodeEnvelope[abi.SNPEvidence](t, ev, PlatformSNP)
	report, _ := b64std.DecodeString(body.AttestationReport)
	if body.CertChain == nil || body.CertChain.ASK == nil || body.CertChain.ARK == nil {
		t.Fatal("sim-snp must embed its chain")
	}
	vcek, _ := b64std.DecodeString(*body.CertChain.VCEK)
	var roots bytes.Buffer
	if err := WriteSimRoots(&roots); err != nil {
		t.Fatal(err)
	}
	verifySNPCrypto(t, report, vcek, roots.Bytes(), pad64(rd))
	// The chain made here (fixed keys, names and dates) also verifies under
	// attesttest's independently built roots: another process's roots work.
	verifySNPCrypto(t, report, vcek, attesttest.RootsPEM(attesttest.Signer(t)), pad64(rd))
	if binary.LittleEndian.Uint32(report) != 3 || report[0x188] != 0x19 {
		t.Fatal("want a v3 Milan report")
	}
}

func TestSNPQuoteProvider(t *testing.T) {
	s := attesttest.Signer(t)
	rd := testRD("qp")
	dev := attesttest.SNPDevice(s, pad64(rd))
	a, err := New(context.Background(), "snp", WithSNPQuoteProvider(&sevtesting.QuoteProvider{Device: dev}), quiet)
	if err != nil {
		t.Fatal(err)
	}
	checkSNP(t, a, rd, s, true)
}

func TestSNPDeviceFallback(t *testing.T) {
	s := attesttest.Signer(t)
	rd := testRD("dev")
	a, err := New(context.Background(), "snp",
		WithSNPDevice(attesttest.SNPDevice(s, pad64(rd))),
		WithSysRoot(t.TempDir()), // no configfs-tsm
		quiet)
	if err != nil {
		t.Fatal(err)
	}
	checkSNP(t, a, rd, s, true)
}

func TestSNPConfigFS(t *testing.T) {
	s := attesttest.Signer(t)
	sub := faketsm.ReportV7(0)
	orig, origMake := sub.ReadAttr, sub.MakeEntry
	// faketsm serves read-only attributes only after a write; the kernel
	// shows provider at once.
	sub.MakeEntry = func() *faketsm.ReportEntry {
		e := origMake()
		e.ROAttrs = map[string][]byte{"provider": []byte("sev_guest\n")}
		return e
	}
	var inblobs [][]byte
	sub.ReadAttr = func(e *faketsm.ReportEntry, attr string) ([]byte, error) {
		switch attr {
		case "provider":
			return []byte("sev_guest\n"), nil
		case "outblob":
			var rd [64]byte
			copy(rd[:], e.InAttrs["inblob"].Value)
			inblobs = append(inblobs, e.InAttrs["inblob"].Value)
			return attesttest.SignedSNPReport(t, s, rd, attesttest.ReportOptions{}), nil
		case "auxblob":
			return attesttest.CertTable(s), nil
		}
		return orig(e, attr)
	}
	fs := &faketsm.Client{Subsystems: map[string]configfsi.Client{"report": sub}}
	if d := Detect(WithConfigFS(fs), WithSysRoot(t.TempDir()), WithDevRoot(t.TempDir())); d.Platform != PlatformSNP {
		t.Fatalf("Detect = %v", d)
	}
	a, err := New(context.Background(), "auto", WithConfigFS(fs), WithSysRoot(t.TempDir()), quiet)
	if err != nil {
		t.Fatal(err)
	}
	rd := testRD("configfs")
	checkSNP(t, a, rd, s, false)
	want := pad64(rd)
	if len(inblobs) != 1 || !bytes.Equal(inblobs[0], want[:]) {
		t.Fatalf("inblob = %x, want pad64(report data)", inblobs)
	}
}

func checkSNP(t *testing.T, a Attester, rd [ReportDataSize]byte, s *sevtesting.AmdSigner, keyed bool) {
	t.Helper()
	ev, err := a.Attest(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	body := decodeEnvelope[abi.SNPEvidence](t, ev, PlatformSNP)
	report, err := b64std.DecodeString(body.AttestationReport)
	if err != nil || len(report) != sevabi.ReportSize {
		t.Fatalf("report: %d bytes, %v", len(report), err)
	}
	if body.CertChain == nil {
		t.Fatal("no cert_chain")
	}
	vcek, _ := b64std.DecodeString(*body.CertChain.VCEK)
	verifySNPCrypto(t, report, vcek, attesttest.RootsPEM(s), pad64(rd))
	if !keyed {
		return
	}
	// Report data the mock has no answer for fails cleanly.
	if _, err := a.Attest(context.Background(), testRD("other")); err == nil {
		t.Fatal("attesting data the device has no answer for must fail")
	} else if failure.KindOf(err) != failure.AttestationFailed {
		t.Fatalf("kind %v", failure.KindOf(err))
	}
}

func TestSNPNoDevice(t *testing.T) {
	dev := t.TempDir()
	_, err := New(context.Background(), "snp", WithDevRoot(dev), WithSysRoot(t.TempDir()), quiet)
	if !errors.Is(err, ErrNoDevice) || !strings.Contains(err.Error(), filepath.Join(dev, "sev-guest")) {
		t.Fatalf("err = %v", err)
	}
	_, err = New(context.Background(), "tdx", WithDevRoot(dev), WithSysRoot(t.TempDir()), quiet)
	if !errors.Is(err, ErrNoDevice) || !strings.Contains(err.Error(), "tdx_guest") {
		t.Fatalf("err = %v", err)
	}
	_, err = New(context.Background(), "az-snp", WithDevRoot(dev), quiet)
	if !errors.Is(err, ErrNoDevice) || !strings.Contains(err.Error(), "tpmrm0") {
		t.Fatalf("err = %v", err)
	}
}

func TestDeviceErrorMessages(t *testing.T) {
	err := deviceError("/dev/sev-guest", &os.PathError{Op: "open", Path: "/dev/sev-guest", Err: os.ErrPermission}, "the SEV-SNP guest device")
	if !errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), "/dev/sev-guest") || !strings.Contains(err.Error(), "root") {
		t.Fatalf("err = %v", err)
	}
}

func TestTDXMockQuoteProvider(t *testing.T) {
	// go-tdx-guest's canned quote is genuinely Intel-signed but binds other
	// REPORT_DATA than its test input: key the mock by what it binds.
	tcs := tdxtesting.TestCases()[:1]
	bound, err := TDXQuoteReportData(tcs[0].Quote)
	if err != nil {
		t.Fatal(err)
	}
	copy(tcs[0].Input[:], bound)
	qp, err := tdxtesting.TcQuoteProvider(tcs)
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(context.Background(), "tdx", WithTDXQuoteProvider(qp), WithCCELPath(fixture("attestation", "tdx_ccel_live.bin")), quiet)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := a.(*tdxAttester).attest64(context.Background(), tcs[0].Input)
	if err != nil {
		t.Fatal(err)
	}
	body := decodeEnvelope[abi.TDXEvidence](t, ev, PlatformTDX)
	q, _ := b64std.DecodeString(body.Quote)
	if !bytes.Equal(q, tcs[0].Quote) {
		t.Fatal("quote differs from the provider's")
	}
	el, _ := b64std.DecodeString(body.CCEventLog)
	want, _ := os.ReadFile(fixture("attestation", "tdx_ccel_live.bin"))
	if !bytes.Equal(el, want) {
		t.Fatal("cc_eventlog differs from the CCEL table")
	}
	// Attest pads the 48-byte report data; the canned quote binds other
	// data, so the attester's own check refuses it.
	if _, err := a.Attest(context.Background(), testRD("x")); err == nil {
		t.Fatal("want an error for a quote that does not bind the report data")
	}
}

func TestTDXQuoteReportDataFixtures(t *testing.T) {
	for _, name := range []string{"tdx_quote_4.dat", "tdx_quote_5.dat", "tdx_quote_live.dat"} {
		q, err := os.ReadFile(fixture("attestation", name))
		if err != nil {
			t.Fatal(err)
		}
		rd, err := TDXQuoteReportData(q)
		if err != nil || len(rd) != 64 {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

func TestAzSNP(t *testing.T) {
	v := attesttest.NewAzureVTPM(t, false)
	imds := attesttest.NewIMDS(t, v.Signer, nil)
	sys := t.TempDir()
	writeAssetTag(t, sys)
	if d := Detect(WithTPM(v), WithSysRoot(sys), WithDevRoot(t.TempDir())); d.Platform != PlatformAzSNP {
		t.Fatalf("Detect = %v", d)
	}
	if _, err := New(context.Background(), "az-tdx", WithTPM(v), quiet); err == nil || !strings.Contains(err.Error(), "az-snp") {
		t.Fatalf("az-tdx on an SNP vTPM: %v", err)
	}
	a, err := New(context.Background(), "auto", WithTPM(v), WithSysRoot(sys), WithIMDS(imds.URL, imds.Client()), quiet)
	if err != nil {
		t.Fatal(err)
	}
	rd := testRD("az-snp-nonce")
	ev, err := a.Attest(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	body := decodeEnvelope[abi.AzureEvidence](t, ev, PlatformAzSNP)
	if body.Version != 1 || len(body.TPMQuote.PCRs) != 24 {
		t.Fatalf("version %d, %d PCRs", body.Version, len(body.TPMQuote.PCRs))
	}
	checkTPMQuote(t, body.TPMQuote, v.AKModulus(), rd[:])
	hcl, err := b64url.DecodeString(body.HCLReport)
	if err != nil || !bytes.Equal(hcl, v.HCL) {
		t.Fatalf("hcl_report differs from NV 0x01400001 (%v)", err)
	}
	h, err := ParseHCLReport(hcl)
	if err != nil {
		t.Fatal(err)
	}
	vcek, err := b64url.DecodeString(body.VCEK)
	if err != nil || !bytes.Equal(vcek, v.Signer.Vcek.Raw) {
		t.Fatalf("vcek differs from IMDS's (%v)", err)
	}
	var snpRD [64]byte
	sum := sha256.Sum256(h.RuntimeData)
	copy(snpRD[:], sum[:])
	verifySNPCrypto(t, h.TEEReport[:sevabi.ReportSize], vcek, attesttest.RootsPEM(v.Signer), snpRD)
}

func writeAssetTag(t *testing.T, sys string) {
	t.Helper()
	p := filepath.Join(sys, "class/dmi/id")
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p, "chassis_asset_tag"), []byte(AzureAssetTag+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// checkTPMQuote verifies the quote like a verifier: signature with the AK,
// TPMS_ATTEST type, extraData, PCR digest.
func checkTPMQuote(t *testing.T, q *abi.TPMQuote, akN, wantExtra []byte) {
	t.Helper()
	msg, _ := hex.DecodeString(q.Message)
	sig, _ := hex.DecodeString(q.Signature)
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(akN), E: 65537}
	h := sha256.Sum256(msg)
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, h[:], sig); err != nil {
		t.Fatalf("quote signature: %v", err)
	}
	att, err := tpm2.Unmarshal[tpm2.TPMSAttest](msg)
	if err != nil {
		t.Fatal(err)
	}
	if att.Type != tpm2.TPMSTAttestQuote || !bytes.Equal(att.ExtraData.Buffer, wantExtra) {
		t.Fatalf("type %v extraData %x", att.Type, att.ExtraData.Buffer)
	}
	qi, _ := att.Attested.Quote()
	d := sha256.New()
	for _, p := range q.PCRs {
		b, _ := hex.DecodeString(p)
		d.Write(b)
	}
	if !bytes.Equal(d.Sum(nil), qi.PCRDigest.Buffer) {
		t.Fatal("PCR digest mismatch")
	}
	if sel := qi.PCRSelect.PCRSelections; len(sel) != 1 || sel[0].Hash != tpm2.TPMAlgSHA256 || !bytes.Equal(sel[0].PCRSelect, []byte{0xff, 0xff, 0xff}) {
		t.Fatalf("PCR selection %+v", sel)
	}
}

func TestAzTDX(t *testing.T) {
	v := attesttest.NewAzureVTPM(t, true)
	quote := tdxtesting.TestCases()[0].Quote
	imds := attesttest.NewIMDS(t, nil, quote)
	sys := t.TempDir()
	writeAssetTag(t, sys)
	if d := Detect(WithTPM(v), WithSysRoot(sys)); d.Platform != PlatformAzTDX {
		t.Fatalf("Detect = %v", d)
	}
	a, err := New(context.Background(), "az-tdx", WithTPM(v), WithIMDS(imds.URL, imds.Client()),
		WithHCLTimeout(2*time.Second, 10*time.Millisecond), quiet)
	if err != nil {
		t.Fatal(err)
	}
	for i, nonce := range []string{"first", "second"} {
		rd := testRD(nonce)
		ev, err := a.Attest(context.Background(), rd)
		if err != nil {
			t.Fatal(err)
		}
		body := decodeEnvelope[abi.AzureEvidence](t, ev, PlatformAzTDX)
		checkTPMQuote(t, body.TPMQuote, v.AKModulus(), rd[:])
		hcl, _ := b64url.DecodeString(body.HCLReport)
		h, err := ParseHCLReport(hcl)
		if err != nil {
			t.Fatal(err)
		}
		rt, _ := h.Runtime()
		want := pad64(rd)
		if !strings.EqualFold(rt.UserData, hex.EncodeToString(want[:])) {
			t.Fatalf("user-data %s, want pad64(report data)", rt.UserData)
		}
		tdq, _ := b64url.DecodeString(body.TDQuote)
		if !bytes.Equal(tdq, quote) {
			t.Fatal("td_quote differs from IMDS's")
		}
		if v.Writes != i+1 || len(imds.Reports) != i+1 || !bytes.Equal(imds.Reports[i], v.TDReport) {
			t.Fatalf("writes %d, IMDS reports %d: the TDREPORT posted must be the regenerated one", v.Writes, len(imds.Reports))
		}
	}
}

func TestAzTDXStaleHCL(t *testing.T) {
	v := attesttest.NewAzureVTPM(t, true)
	v.TDX = false // the "paravisor" stops regenerating the report
	imds := attesttest.NewIMDS(t, nil, []byte("q"))
	a := &azAttester{platform: PlatformAzTDX, o: newOptions([]Option{WithTPM(v), WithIMDS(imds.URL, nil), WithHCLTimeout(50*time.Millisecond, 10*time.Millisecond), quiet})}
	_, err := a.Attest(context.Background(), testRD("stale"))
	if err == nil || !strings.Contains(err.Error(), "did not pick up") {
		t.Fatalf("err = %v", err)
	}
}

func TestDetectFallbacks(t *testing.T) {
	sys, dev := t.TempDir(), t.TempDir()
	d := Detect(WithSysRoot(sys), WithDevRoot(dev))
	if d.Platform != PlatformInsecure || len(d.Reasons) < 3 {
		t.Fatalf("Detect = %v", d)
	}
	writeAssetTag(t, sys) // Azure, but no vTPM
	if err := os.WriteFile(filepath.Join(dev, "tdx_guest"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	d = Detect(WithSysRoot(sys), WithDevRoot(dev))
	if d.Platform != PlatformTDX || !strings.Contains(d.String(), "no confidential vTPM") {
		t.Fatalf("Detect = %v", d)
	}
	a, err := New(context.Background(), "auto", WithSysRoot(t.TempDir()), WithDevRoot(t.TempDir()), quiet)
	if err != nil || a.Platform() != PlatformInsecure {
		t.Fatalf("auto without TEE: %v, %v", a, err)
	}
}

// TestEnvelopeMatchesPeer re-encodes the peer's evidence with kettle's types:
// the bytes must be identical (field order, encodings).
func TestEnvelopeMatchesPeer(t *testing.T) {
	for _, tc := range []struct {
		file string
		typ  func() any
	}{
		{"kettle-v1/kex/evidence.json", func() any { return new(abi.AzureEvidence) }},
		{"attestation/az_snp/live-evidence.json", func() any { return new(abi.AzureEvidence) }},
		{"attestation/az_tdx/evidence-v1.json", func() any { return new(abi.AzureEvidence) }},
	} {
		raw, err := os.ReadFile(fixture(strings.Split(tc.file, "/")...))
		if err != nil {
			t.Fatal(err)
		}
		var compact bytes.Buffer
		json.Compact(&compact, raw)
		env, err := parseEnvelope(compact.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		body := tc.typ()
		dec := json.NewDecoder(bytes.NewReader(env.Evidence))
		dec.DisallowUnknownFields()
		if err := dec.Decode(body); err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		// evidence-v1 files pad base64url; kettle writes it unpadded.
		switch b := body.(type) {
		case *abi.AzureEvidence:
			b.HCLReport, b.VCEK, b.TDQuote = trimPad(b.HCLReport), trimPad(b.VCEK), trimPad(b.TDQuote)
		}
		got, err := abi.Marshal(env.Platform, body)
		if err != nil {
			t.Fatal(err)
		}
		want := strings.NewReplacer("=\"", "\"").Replace(compact.String())
		if string(got) != want {
			t.Errorf("%s: re-encoded evidence differs from the peer's", tc.file)
		}
	}
}

// TestRoundTrip writes each platform's evidence to a file and reads it back.
func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	rd := testRD("round-trip")
	sim, _ := New(context.Background(), "sim-snp", quiet)
	ins, _ := New(context.Background(), "insecure", quiet)
	for _, a := range []Attester{sim, ins} {
		ev, err := a.Attest(context.Background(), rd)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, a.Platform()+".json")
		if err := os.WriteFile(p, ev, 0o644); err != nil {
			t.Fatal(err)
		}
		back, _ := os.ReadFile(p)
		env, err := parseEnvelope(back)
		if err != nil || env.Platform != a.Platform() {
			t.Fatalf("%s: %v", a.Platform(), err)
		}
		again, _ := abi.Marshal(env.Platform, env.Evidence)
		if !bytes.Equal(again, ev) {
			t.Fatalf("%s: round trip changed the bytes", a.Platform())
		}
	}
}

func TestIMDSRetries(t *testing.T) {
	defer func(d time.Duration) { httpBackoff = d }(httpBackoff)
	httpBackoff = time.Millisecond
	s := attesttest.Signer(t)
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		if calls == 1 {
			http.Error(w, "throttled", http.StatusTooManyRequests)
			return
		}
		if r.Header.Get("Metadata") != "true" {
			http.Error(w, "no Metadata header", http.StatusBadRequest)
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"vcekCert": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Vcek.Raw}))})
	}))
	defer srv.Close()
	o := newOptions([]Option{WithIMDS(srv.URL, srv.Client())})
	der, err := fetchAzureVCEK(context.Background(), o)
	if err != nil || !bytes.Equal(der, s.Vcek.Raw) || calls != 2 {
		t.Fatalf("calls %d, err %v", calls, err)
	}
	// A 404 is final.
	calls = 0
	srv404 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { calls++; http.NotFound(w, r) }))
	defer srv404.Close()
	if _, err := fetchAzureVCEK(context.Background(), newOptions([]Option{WithIMDS(srv404.URL, nil)})); err == nil || calls != 1 {
		t.Fatalf("404: calls %d, err %v", calls, err)
	}
}

func TestKDSURL(t *testing.T) {
	r := make([]byte, sevabi.ReportSize)
	binary.LittleEndian.PutUint32(r, 3)
	r[0x188], r[0x189] = 0x19, 0xA0 // Genoa-family Zen 4c (go-sev-guest calls it Unknown)
	copy(r[0x180:], []byte{3, 0, 0, 0, 0, 0, 20, 209})
	r[0x1A0] = 0xAB
	u, err := kdsVCEKURL("https://kdsintf.amd.com", r)
	if err != nil {
		t.Fatal(err)
	}
	want := "https://kdsintf.amd.com/vcek/v1/Genoa/ab" + strings.Repeat("00", 63) + "?blSPL=3&teeSPL=0&snpSPL=20&ucodeSPL=209"
	if u != want {
		t.Fatalf("got  %s\nwant %s", u, want)
	}
	r[0x188], r[0x189] = 0x1A, 0x02 // Turin: FMC, BL, TEE, SNP … ucode; 8-byte chip id
	copy(r[0x180:], []byte{1, 2, 3, 4, 0, 0, 0, 5})
	if u, _ = kdsVCEKURL("https://kdsintf.amd.com", r); u != "https://kdsintf.amd.com/vcek/v1/Turin/ab00000000000000?fmcSPL=1&blSPL=2&teeSPL=3&snpSPL=4&ucodeSPL=5" {
		t.Fatalf("Turin: %s", u)
	}
	for i := range 64 {
		r[0x1A0+i] = 0
	}
	if _, err := kdsVCEKURL("https://kdsintf.amd.com", r); err == nil {
		t.Fatal("masked CHIP_ID must not be looked up")
	}
}

// rawQP is a sevclient.QuoteProvider serving one raw report, no certificates.
type rawQP struct{ report []byte }

func (rawQP) IsSupported() bool                      { return true }
func (q rawQP) GetRawQuote([64]byte) ([]byte, error) { return q.report, nil }
func (rawQP) Product() *spb.SevProduct               { return sevabi.DefaultSevProduct() }

func TestSNPVCEKFromKDS(t *testing.T) {
	rd := testRD("kds")
	report := attesttest.UnsignedSNPReport(pad64(rd), attesttest.ReportOptions{})
	report[0x1A0] = 0x42 // an unmasked CHIP_ID
	var paths []string
	kds := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths = append(paths, r.URL.RequestURI())
		w.Write([]byte("vcek-der"))
	}))
	defer kds.Close()
	a, err := New(context.Background(), "snp", WithSNPQuoteProvider(rawQP{report}), WithKDS(kds.URL, kds.Client()), quiet)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := a.Attest(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	want := `"cert_chain":{"vcek":"` + b64std.EncodeToString([]byte("vcek-der")) + `","ask":null,"ark":null}}}`
	if !strings.HasSuffix(string(ev), want) || len(paths) != 1 || !strings.HasPrefix(paths[0], "/vcek/v1/Milan/42") {
		t.Fatalf("evidence %s…, KDS paths %v", ev[len(ev)-80:], paths)
	}
	// Without KDS the evidence is still written, with a null cert_chain.
	a, _ = New(context.Background(), "snp", WithSNPQuoteProvider(rawQP{report}), WithKDS("", nil), quiet)
	ev, err = a.Attest(context.Background(), rd)
	if err != nil || !strings.HasSuffix(string(ev), `"cert_chain":null}}`) {
		t.Fatalf("%s, %v", ev[len(ev)-40:], err)
	}
}

func TestAzSNPTamperedHCL(t *testing.T) {
	v := attesttest.NewAzureVTPM(t, false)
	imds := attesttest.NewIMDS(t, v.Signer, nil)
	a, err := New(context.Background(), "az-snp", WithTPM(v), WithIMDS(imds.URL, imds.Client()), quiet)
	if err != nil {
		t.Fatal(err)
	}
	good := bytes.Clone(v.HCL)
	for name, mutate := range map[string]func([]byte){
		"runtime data": func(b []byte) { b[0x4D4+10] ^= 1 },                            // breaks the HCL binding
		"magic":        func(b []byte) { b[0] = 'X' },                                  // not an HCL report
		"report type":  func(b []byte) { binary.LittleEndian.PutUint32(b[0x4C8:], 4) }, // says TDX
	} {
		bad := bytes.Clone(good)
		mutate(bad)
		v.SetHCL(bad)
		if _, err := a.Attest(context.Background(), testRD(name)); err == nil {
			t.Errorf("%s: tampered HCL report accepted", name)
		}
	}
	v.SetHCL(good)
	if _, err := a.Attest(context.Background(), testRD("ok")); err != nil {
		t.Fatal(err)
	}
}

func TestAttestCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, name := range []string{"insecure", "sim-snp"} {
		a, _ := New(context.Background(), name, quiet)
		if _, err := a.Attest(ctx, testRD("c")); failure.KindOf(err) != failure.Canceled {
			t.Errorf("%s: kind %v (%v), want Canceled", name, failure.KindOf(err), err)
		}
	}
}

// parseEnvelope decodes evidence.json as a verifier would, without its
// platform policy (package verify has that).
func parseEnvelope(b []byte) (*abi.Envelope, error) {
	var env abi.Envelope
	if err := json.Unmarshal(b, &env); err != nil {
		return nil, err
	}
	if env.Platform == "" || len(env.Evidence) == 0 {
		return nil, errors.New("missing platform or evidence")
	}
	return &env, nil
}
