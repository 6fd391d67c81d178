package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	sevtest "github.com/google/go-sev-guest/testing"

	"github.com/kettle-build/kettle/verify"
)

var kexBundle = filepath.Join("..", "..", "verify", "testdata", "kettle-v1", "kex")

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := runVerify(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// copyKex copies the kex bundle; edit may change provenance.json, and
// evidence (when set) replaces evidence.json given the provenance bytes.
func copyKex(t *testing.T, edit func(prov string) string, evidence func(prov []byte) []byte) string {
	t.Helper()
	dir := t.TempDir()
	for _, rel := range []string{"provenance.json", "evidence.json", "artifacts/kex"} {
		b, err := os.ReadFile(filepath.Join(kexBundle, rel))
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Dir(filepath.Join(dir, rel)), 0o755)
		if rel == "provenance.json" && edit != nil {
			b = []byte(edit(string(b)))
		}
		if rel == "evidence.json" && evidence != nil {
			prov, _ := os.ReadFile(filepath.Join(dir, "provenance.json"))
			b = evidence(prov)
		}
		if err := os.WriteFile(filepath.Join(dir, rel), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func insecure(prov []byte) []byte {
	sum := sha256.Sum256(prov)
	rd := append(sum[:], make([]byte, 16)...)
	return []byte(`{"platform":"insecure","evidence":{"report_data":"` + hex.EncodeToString(rd) + `"}}`)
}

// simSNP returns a function making sim-snp evidence (go-sev-guest test keys)
// for a provenance, and writes the test roots to rootsFile.
func simSNP(t *testing.T, debug bool, rootsFile string) func([]byte) []byte {
	return func(prov []byte) []byte {
		signer, err := sevtest.DefaultTestOnlyCertChain("Milan-B1", time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(prov)
		resp := sevtest.CreateRawReport(&sevtest.TestReportOptions{ReportData: sum[:], FMS: abi.FmsToCpuid1Eax(0x19, 1, 1), Version: 3})
		rep := resp[:abi.ReportSize]
		if !debug {
			binary.LittleEndian.PutUint64(rep[8:], binary.LittleEndian.Uint64(rep[8:])&^(1<<19))
		}
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

func TestVerifyCLIKex(t *testing.T) {
	code, out, stderr := runCLI(t, kexBundle)
	if code != exitOK {
		t.Fatalf("exit %d\n%s%s", code, out, stderr)
	}
	for _, want := range []string{"Build ID    build-20260520-215239-dde1b50e", "Built at    2026-05-20T21:52:39.233053+00:00",
		"Built with  rustc 1.93.1", "Git commit  0fc9cfa2d7cf98bf1d6c370a5359cd4ac451540a", "✅ Evidence is genuine", "✅ Artifact `kex`", "Verification PASSED"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = runCLI(t, "--json", kexBundle)
	var rep struct {
		Passed  bool   `json:"passed"`
		BuildID string `json:"build_id"`
		Checks  []struct {
			Name string `json:"name"`
			OK   bool   `json:"ok"`
		} `json:"checks"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != exitOK || !rep.Passed || rep.BuildID == "" || len(rep.Checks) < 5 {
		t.Errorf("--json: exit %d err %v %+v\n%s", code, err, rep, out)
	}
}

func TestVerifyCLIExitCodes(t *testing.T) {
	tampered := copyKex(t, func(p string) string { return strings.Replace(p, "cargo build", "cargo buile", 1) }, nil)
	tests := []struct {
		name string
		args []string
		want int
		out  string
	}{
		{"nonce of 16 zero bytes", []string{"--nonce", strings.Repeat("00", 16), kexBundle}, exitOK, "✅ Nonce matches"},
		{"flags after the directory", []string{kexBundle, "--nonce", strings.Repeat("00", 15) + "01"}, exitFailed, "⛔ Nonce matches"},
		{"two directories", []string{kexBundle, kexBundle}, exitBadArgs, ""},
		{"directory after --", []string{"--nonce", strings.Repeat("00", 16), "--", kexBundle}, exitOK, "✅ Nonce matches"},
		{"nonce as a UUID", []string{"--nonce", "00000000-0000-0000-0000-000000000000", kexBundle}, exitOK, "✅ Nonce matches"},
		{"other nonce", []string{"--nonce", strings.Repeat("00", 15) + "01", kexBundle}, exitFailed, "⛔ Nonce matches"},
		{"short nonce", []string{"--nonce", "01", kexBundle}, exitFailed, "Verification FAILED"},
		{"bad nonce hex", []string{"--nonce", "zz", kexBundle}, exitBadArgs, ""},
		{"nonce too long", []string{"--nonce", strings.Repeat("00", 17), kexBundle}, exitBadArgs, ""},
		{"tampered provenance", []string{tampered}, exitFailed, "⛔ Attested checksum matches provenance.json"},
		{"missing directory", []string{filepath.Join(t.TempDir(), "none")}, exitBadArgs, ""},
		{"no directory", nil, exitBadArgs, ""},
		{"--at before the VCEK", []string{"--at", "2000-01-01", kexBundle}, exitFailed, "⛔ Evidence is genuine"},
		{"--at inside the validity", []string{"--at", "2026-06-01T00:00:00Z", kexBundle}, exitOK, ""},
		{"--at malformed", []string{"--at", "yesterday", kexBundle}, exitBadArgs, ""},
		{"--online is accepted (no fetch needed)", []string{"--online", kexBundle}, exitOK, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, stderr := runCLI(t, tc.args...)
			if code != tc.want || !strings.Contains(out, tc.out) {
				t.Errorf("exit %d (want %d)\n%s%s", code, tc.want, out, stderr)
			}
		})
	}
}

func TestVerifyCLIEnv(t *testing.T) {
	t.Setenv("KETTLE_NONCE", strings.Repeat("ff", 16))
	if code, out, _ := runCLI(t, kexBundle); code != exitFailed {
		t.Errorf("KETTLE_NONCE ignored: exit %d\n%s", code, out)
	}
}

// TestVerifyCLIPolicyFlags: every policy flag, accept and reject.
func TestVerifyCLIPolicyFlags(t *testing.T) {
	ev, err := os.ReadFile(filepath.Join(kexBundle, "evidence.json"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := verify.Evidence(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	meas, pcr7 := c.Measurement.String(), c.PCRs[7].String()
	tmp := t.TempDir()
	roots := filepath.Join(tmp, "roots.pem")
	debugRoots := filepath.Join(tmp, "debug-roots.pem")
	withURI := copyKex(t, func(p string) string {
		return strings.Replace(p, `"uri": ""`, `"uri": "https://github.com/x/kex"`, 1)
	}, insecure)
	sim := copyKex(t, nil, simSNP(t, false, roots))
	simDebug := copyKex(t, nil, simSNP(t, true, debugRoots))
	policy := func(body string) string {
		f := filepath.Join(t.TempDir(), "policy.json")
		os.WriteFile(f, []byte(body), 0o644)
		return f
	}
	other := strings.Repeat("ab", 48)
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"--builder-id accept", []string{"--builder-id", "https://lunal.dev/kettle-tee/v1", kexBundle}, exitOK},
		{"--builder-id reject", []string{"--builder-id", "https://example.com/b", kexBundle}, exitFailed},
		{"--source-uri accept", []string{"--allow-insecure", "--source-uri", "https://github.com/x/kex", withURI}, exitOK},
		{"--source-uri reject", []string{"--source-uri", "https://github.com/x/kex", kexBundle}, exitFailed},
		{"--git-commit accept", []string{"--git-commit", "0fc9cfa2d7cf98bf1d6c370a5359cd4ac451540a", kexBundle}, exitOK},
		{"--git-commit reject", []string{"--git-commit", strings.Repeat("1", 40), kexBundle}, exitFailed},
		{"--git-commit malformed", []string{"--git-commit", "0fc9cfa", kexBundle}, exitBadArgs},
		{"--measurement accept (comma list)", []string{"--measurement", other + "," + meas, kexBundle}, exitOK},
		{"--measurement accept (repeated)", []string{"--measurement", other, "--measurement", meas, kexBundle}, exitOK},
		{"--measurement reject", []string{"--measurement", other, kexBundle}, exitFailed},
		{"--pcr accept", []string{"--pcr", "7=" + pcr7, kexBundle}, exitOK},
		{"--pcr reject", []string{"--pcr", "7=" + strings.Repeat("00", 32), kexBundle}, exitFailed},
		{"--pcr malformed", []string{"--pcr", "seven=00", kexBundle}, exitBadArgs},
		{"--min-tcb accept", []string{"--min-tcb", "bl=0,tee=0,snp=0,ucode=0", kexBundle}, exitOK},
		{"--min-tcb reject", []string{"--min-tcb", "snp=255", kexBundle}, exitFailed},
		{"--min-tcb malformed", []string{"--min-tcb", "recent", kexBundle}, exitBadArgs},
		{"--allow-insecure absent", []string{withURI}, exitFailed},
		{"--trust-roots accept (sim-snp)", []string{"--trust-roots", roots, sim}, exitOK},
		{"--trust-roots absent (sim-snp)", []string{sim}, exitFailed},
		{"--trust-roots unreadable", []string{"--trust-roots", filepath.Join(tmp, "none.pem"), sim}, exitBadArgs},
		{"--allow-debug accept", []string{"--trust-roots", debugRoots, "--allow-debug", simDebug}, exitOK},
		{"--allow-debug absent", []string{"--trust-roots", debugRoots, simDebug}, exitFailed},
		{"--policy accept", []string{"--policy", policy(`{"builder-id":"https://lunal.dev/kettle-tee/v1","measurement":["` + meas + `"],"pcr":{"7":"` + pcr7 + `"}}`), kexBundle}, exitOK},
		{"--policy reject", []string{"--policy", policy(`{"git-commit":"` + strings.Repeat("2", 40) + `"}`), kexBundle}, exitFailed},
		{"--policy allow-insecure", []string{"--policy", policy(`{"allow-insecure":true}`), withURI}, exitOK},
		{"--policy unknown key", []string{"--policy", policy(`{"builderid":"x"}`), kexBundle}, exitBadArgs},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, stderr := runCLI(t, tc.args...)
			if code != tc.want {
				t.Errorf("exit %d, want %d\n%s%s", code, tc.want, out, stderr)
			}
		})
	}
	// The insecure rejection says why.
	if _, out, _ := runCLI(t, withURI); !strings.Contains(out, "without a TEE") {
		t.Errorf("insecure rejection does not say why:\n%s", out)
	}
}
