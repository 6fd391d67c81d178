package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
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

// simSNPMeasured is simSNP (no debug) with MEASUREMENT = meas.
func simSNPMeasured(t *testing.T, meas []byte, rootsFile string) func([]byte) []byte {
	return func(prov []byte) []byte {
		signer, err := sevtest.DefaultTestOnlyCertChain("Milan-B1", time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(prov)
		resp := sevtest.CreateRawReport(&sevtest.TestReportOptions{ReportData: sum[:], FMS: abi.FmsToCpuid1Eax(0x19, 1, 1), Version: 3})
		rep := resp[:abi.ReportSize]
		binary.LittleEndian.PutUint64(rep[8:], binary.LittleEndian.Uint64(rep[8:])&^(1<<19))
		copy(rep[0x90:0xC0], meas)
		r, s, err := signer.Sign(rep[:0x2A0])
		if err != nil {
			t.Fatal(err)
		}
		abi.SetSignature(r, s, rep)
		var roots bytes.Buffer
		pem.Encode(&roots, &pem.Block{Type: "CERTIFICATE", Bytes: signer.Ark.Raw})
		pem.Encode(&roots, &pem.Block{Type: "CERTIFICATE", Bytes: signer.Ask.Raw})
		os.WriteFile(rootsFile, roots.Bytes(), 0o644)
		ev, _ := json.Marshal(map[string]any{"platform": "snp", "evidence": map[string]any{
			"attestation_report": base64.StdEncoding.EncodeToString(rep),
			"cert_chain":         map[string]any{"vcek": base64.StdEncoding.EncodeToString(signer.Vcek.Raw)},
		}})
		return ev
	}
}

// TestVerifyCLIIGVM: --igvm and --image exit 0 when they match, 1 on a
// mismatch (showing both values), 2 naming the file when it is unreadable
// or malformed, and --image needs --igvm.
func TestVerifyCLIIGVM(t *testing.T) {
	tmp := t.TempDir()
	img := veritytest.Make(t, tmp, "disk.raw", "sha256", 2)
	other := veritytest.Make(t, tmp, "other.raw", "sha512", 2)
	guest := filepath.Join(tmp, "guest.igvm")
	os.WriteFile(guest, igvmtest.GuestBytes("console=hvc0 roothash="+img.RootHash), 0o644)
	f, _ := igvm.Parse(igvmtest.GuestBytes("console=hvc0 roothash=" + img.RootHash))
	m, err := f.SNPLaunchDigest(igvm.QEMU)
	if err != nil {
		t.Fatal(err)
	}
	changed := filepath.Join(tmp, "changed.igvm")
	g := igvmtest.Guest("console=hvc0 roothash=" + img.RootHash)
	g.Directives[1].Data = append([]byte(nil), g.Directives[1].Data...)
	g.Directives[1].Data[4000] ^= 1
	b, _ := g.Marshal()
	os.WriteFile(changed, b, 0o644)
	gm, _ := g.SNPLaunchDigest(igvm.QEMU)
	garbage := filepath.Join(tmp, "garbage.bin")
	os.WriteFile(garbage, []byte("not an igvm file"), 0o644)

	roots := filepath.Join(tmp, "roots.pem")
	dir := copyKex(t, nil, simSNPMeasured(t, m.Digest[:], roots))
	for _, tc := range []struct {
		name       string
		args       []string
		want       int
		out, error []string
	}{
		{"igvm matches", []string{"--igvm", guest}, exitOK, []string{"Launch measurement is the IGVM file's SEV-SNP launch digest", m.Digest.String()}, nil},
		{"igvm and image match", []string{"--igvm", guest, "--image", img.Path}, exitOK, []string{"roothash=", img.RootHash, "re-hashed"}, nil},
		{"changed page", []string{"--igvm", changed}, exitFailed, []string{m.Digest.String(), gm.Digest.String()}, nil},
		{"other image", []string{"--igvm", guest, "--image", other.Path}, exitFailed, []string{other.RootHash, img.RootHash}, nil},
		{"direct loader", []string{"--igvm", guest, "--igvm-loader", "direct"}, exitFailed, []string{"direct loader"}, nil},
		{"missing igvm", []string{"--igvm", filepath.Join(tmp, "nope.igvm")}, exitBadArgs, nil, []string{"nope.igvm"}},
		{"malformed igvm", []string{"--igvm", garbage}, exitBadArgs, nil, []string{garbage, "malformed"}},
		{"malformed image", []string{"--igvm", guest, "--image", garbage}, exitBadArgs, nil, []string{garbage}},
		{"image without igvm", []string{"--image", img.Path}, exitBadArgs, nil, []string{"--image needs --igvm"}},
		{"bad loader", []string{"--igvm", guest, "--igvm-loader", "xen"}, exitBadArgs, nil, []string{"--igvm-loader"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, append(append([]string{"--trust-roots", roots}, tc.args...), dir)...)
			if code != tc.want {
				t.Fatalf("exit %d, want %d\n%s\n%s", code, tc.want, stdout, stderr)
			}
			for _, s := range tc.out {
				if !strings.Contains(stdout, s) {
					t.Errorf("stdout lacks %q:\n%s", s, stdout)
				}
			}
			for _, s := range tc.error {
				if !strings.Contains(stderr, s) {
					t.Errorf("stderr lacks %q:\n%s", s, stderr)
				}
			}
		})
	}
}

func TestSimMeasurementFlag(t *testing.T) {
	var f simMeasurementFlag
	if o, err := f.options("insecure"); err != nil || o != nil {
		t.Fatal("unset flag gives options")
	}
	for _, bad := range []string{"", "zz", strings.Repeat("ab", 47), strings.Repeat("ab", 49)} {
		if err := f.Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
	if err := f.Set(strings.Repeat("AB", 48)); err != nil || f.String() != strings.Repeat("ab", 48) {
		t.Fatalf("Set: %v %s", err, f.String())
	}
	if _, err := f.options("snp"); err == nil {
		t.Fatal("--sim-measurement accepted with --attester snp")
	}
	if o, err := f.options("sim-snp"); err != nil || len(o) != 1 {
		t.Fatalf("options: %v %d", err, len(o))
	}
	_ = context.Background
}
