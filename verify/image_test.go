package verify

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	sevtest "github.com/google/go-sev-guest/testing"

	"github.com/kettle-build/kettle/igvm"
	"github.com/kettle-build/kettle/igvm/igvmtest"
	"github.com/kettle-build/kettle/verity/veritytest"
)

// simSNPMeasured is simSNP with the report's MEASUREMENT set to meas.
func simSNPMeasured(t testing.TB, reportData []byte, meas []byte) ([]byte, *TrustRoots) {
	t.Helper()
	signer, err := sevtest.DefaultTestOnlyCertChain("Milan-B1", time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	resp := sevtest.CreateRawReport(&sevtest.TestReportOptions{ReportData: reportData, FMS: abi.FmsToCpuid1Eax(0x19, 0x01, 0x01), Version: 3})
	rep := resp[:abi.ReportSize]
	binary.LittleEndian.PutUint64(rep[0x08:], binary.LittleEndian.Uint64(rep[0x08:])&^(1<<19))
	copy(rep[0x90:0xC0], meas)
	r, s, err := signer.Sign(rep[:0x2A0])
	if err != nil {
		t.Fatal(err)
	}
	if err := abi.SetSignature(r, s, rep); err != nil {
		t.Fatal(err)
	}
	ev := envelope(t, PlatformSNP, map[string]any{
		"attestation_report": base64.StdEncoding.EncodeToString(rep),
		"cert_chain":         map[string]any{"vcek": base64.StdEncoding.EncodeToString(signer.Vcek.Raw)},
	})
	var roots bytes.Buffer
	for _, c := range [][]byte{signer.Ark.Raw, signer.Ask.Raw} {
		pem.Encode(&roots, &pem.Block{Type: "CERTIFICATE", Bytes: c})
	}
	tr, err := ParseTrustRoots(roots.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return ev, tr
}

func findCheck(r *Report, name string) (Check, bool) {
	for _, c := range r.Checks {
		if c.Name == name {
			return c, true
		}
	}
	return Check{}, false
}

// imageFixture: a real verity image, an IGVM whose UKI command line carries
// its root hash, and a sim-snp bundle attesting that IGVM's launch digest.
type imageFixture struct {
	dir, igvmPath, imagePath string
	digest                   igvm.Digest
	roots                    *TrustRoots
}

func newImageFixture(t *testing.T) imageFixture {
	t.Helper()
	tmp := t.TempDir()
	img := veritytest.Make(t, tmp, "disk.raw", "sha256", 2)
	b := igvmtest.GuestBytes("console=hvc0 roothash=" + img.RootHash)
	p := filepath.Join(tmp, "guest.igvm")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := igvm.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	m, err := f.SNPLaunchDigest(igvm.QEMU)
	if err != nil {
		t.Fatal(err)
	}
	var roots *TrustRoots
	dir, _ := writeBundle(t, nil, func(prov []byte) []byte {
		ev, tr := simSNPMeasured(t, reportData(prov, nil), m.Digest[:])
		roots = tr
		return ev
	})
	return imageFixture{dir: dir, igvmPath: p, imagePath: img.Path, digest: m.Digest, roots: roots}
}

func TestBundleIGVM(t *testing.T) {
	fx := newImageFixture(t)
	r := mustBundle(t, fx.dir, WithTrustRoots(fx.roots), WithIGVM(fx.igvmPath))
	c, ok := findCheck(r, checkIGVM)
	if !r.Passed() || !ok || !c.OK || !strings.Contains(c.Detail, fx.digest.String()) {
		t.Fatalf("matching IGVM:\n%s", dump(t, r))
	}
	for _, w := range r.Warnings {
		if strings.Contains(w, "--measurement") {
			t.Errorf("image warning despite --igvm: %s", w)
		}
	}

	// One changed byte of one measured page: a different digest, a failed
	// row showing both values.
	f := igvmtest.Guest("console=hvc0 roothash=" + strings.Repeat("00", 32))
	for i, h := range f.Directives {
		if h.Type == igvm.TypePageData && h.Data != nil {
			d := append([]byte(nil), h.Data...)
			d[100] ^= 1
			f.Directives[i].Data = d
			break
		}
	}
	b, _ := f.Marshal()
	changed := filepath.Join(t.TempDir(), "changed.igvm")
	os.WriteFile(changed, b, 0o644)
	r = mustBundle(t, fx.dir, WithTrustRoots(fx.roots), WithIGVM(changed))
	c, _ = findCheck(r, checkIGVM)
	if r.Passed() || c.OK || !strings.Contains(c.Detail, fx.digest.String()) || !strings.Contains(c.Detail, "launch digest of "+changed) {
		t.Fatalf("changed IGVM:\n%s", dump(t, r))
	}
	// The direct loader measures the same file differently (zero pages).
	r = mustBundle(t, fx.dir, WithTrustRoots(fx.roots), WithIGVM(fx.igvmPath), WithIGVMLoader(igvm.Direct))
	if c, _ := findCheck(r, checkIGVM); r.Passed() || c.OK || !strings.Contains(c.Detail, "direct loader") {
		t.Fatalf("direct loader:\n%s", dump(t, r))
	}
	// Not genuine (embedded roots): skipped, not passed.
	r = mustBundle(t, fx.dir, WithIGVM(fx.igvmPath))
	if c, _ := findCheck(r, checkIGVM); c.OK || !c.Skipped {
		t.Fatalf("non-genuine evidence: %+v", c)
	}
}

func TestBundleIGVMInsecure(t *testing.T) {
	fx := newImageFixture(t)
	dir, _ := writeBundle(t, nil, func(p []byte) []byte { return insecureEvidence(t, reportData(p, nil)) })
	r := mustBundle(t, dir, WithAllowInsecureUnsafe(), WithIGVM(fx.igvmPath))
	if c, _ := findCheck(r, checkIGVM); r.Passed() || c.OK || !strings.Contains(c.Detail, "the evidence is insecure") {
		t.Fatalf("insecure:\n%s", dump(t, r))
	}
}

func TestBundleImage(t *testing.T) {
	fx := newImageFixture(t)
	r := mustBundle(t, fx.dir, WithTrustRoots(fx.roots), WithIGVM(fx.igvmPath), WithImage(fx.imagePath))
	c, ok := findCheck(r, checkImage)
	if !r.Passed() || !ok || !c.OK || !strings.Contains(c.Detail, "re-hashed") {
		t.Fatalf("matching image:\n%s", dump(t, r))
	}
	// Another image (another root hash): fails naming both.
	other := veritytest.Make(t, t.TempDir(), "other.raw", "sha512", 2)
	r = mustBundle(t, fx.dir, WithTrustRoots(fx.roots), WithIGVM(fx.igvmPath), WithImage(other.Path))
	c, _ = findCheck(r, checkImage)
	if r.Passed() || c.OK || !strings.Contains(c.Detail, other.RootHash) {
		t.Fatalf("other image:\n%s", dump(t, r))
	}
	// The data partition changed: root hash still equal, re-hash fails.
	fh, _ := os.OpenFile(fx.imagePath, os.O_RDWR, 0)
	fh.WriteAt([]byte("tampered"), 1<<20+8192)
	fh.Close()
	r = mustBundle(t, fx.dir, WithTrustRoots(fx.roots), WithIGVM(fx.igvmPath), WithImage(fx.imagePath))
	if c, _ := findCheck(r, checkImage); r.Passed() || c.OK || !strings.Contains(c.Detail, "hashes to root") {
		t.Fatalf("tampered data:\n%s", dump(t, r))
	}
}

func TestBundleImageInputs(t *testing.T) {
	fx := newImageFixture(t)
	tmp := t.TempDir()
	garbage := filepath.Join(tmp, "garbage")
	os.WriteFile(garbage, []byte("IGVM not really"), 0o644)
	noSNP := filepath.Join(tmp, "tdx.igvm")
	b, _ := (&igvm.File{Revision: 2, Platforms: []igvm.Platform{{CompatibilityMask: 1, Type: igvm.PlatformTDX, Version: 1}},
		Directives: []igvm.Header{{Type: igvm.TypePageData, GPA: 0x1000, CompatibilityMask: 1, Data: make([]byte, 4096)}}}).Marshal()
	os.WriteFile(noSNP, b, 0o644)
	noCmdline := filepath.Join(tmp, "nocmd.igvm")
	f := igvmtest.Guest("quiet")
	b, _ = f.Marshal()
	os.WriteFile(noCmdline, b, 0o644)
	for _, tc := range []struct {
		name string
		opts []BundleOption
		want string
	}{
		{"missing igvm", []BundleOption{WithIGVM(filepath.Join(tmp, "missing.igvm"))}, "missing.igvm"},
		{"garbage igvm", []BundleOption{WithIGVM(garbage)}, garbage},
		{"no SNP platform", []BundleOption{WithIGVM(noSNP)}, noSNP},
		{"no roothash", []BundleOption{WithIGVM(noCmdline), WithImage(fx.imagePath)}, noCmdline},
		{"missing image", []BundleOption{WithIGVM(fx.igvmPath), WithImage(filepath.Join(tmp, "missing.raw"))}, "missing.raw"},
		{"image not GPT", []BundleOption{WithIGVM(fx.igvmPath), WithImage(garbage)}, garbage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Bundle(t.Context(), fx.dir, append(tc.opts, WithTrustRoots(fx.roots))...)
			if !errors.Is(err, ErrUnreadable) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrUnreadable naming %s", err, tc.want)
			}
		})
	}
	if _, err := Bundle(t.Context(), fx.dir, WithImage(fx.imagePath), anything); !errors.Is(err, ErrOption) {
		t.Fatalf("image without igvm: %v", err)
	}
	if _, err := Bundle(t.Context(), fx.dir, WithIGVM(fx.igvmPath), anything); !errors.Is(err, ErrOption) {
		t.Fatalf("igvm with no-expectations: %v", err)
	}
}
