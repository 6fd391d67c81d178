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

// TestVerifyCLIEnvIgnored: no KETTLE_<FLAG> variable changes what
// `kettle verify` accepts: not the trust roots, the clock, --allow-*, a
// policy file, nor an expectation. Each is set to what would flip the
// verdict if it were read.
func TestVerifyCLIEnvIgnored(t *testing.T) {
	tmp := t.TempDir()
	roots := filepath.Join(tmp, "roots.pem")
	debugRoots := filepath.Join(tmp, "debug-roots.pem")
	insecureDir := copyKex(t, nil, insecure)
	sim := copyKex(t, nil, simSNP(t, false, roots))
	simDebug := copyKex(t, nil, simSNP(t, true, debugRoots))
	policy := filepath.Join(tmp, "policy.json")
	os.WriteFile(policy, []byte(`{"allow-insecure":true,"allow-debug":true}`), 0o644)

	// Without the variables: rejected, rejected, rejected, passes.
	for _, dir := range []string{insecureDir, sim, simDebug} {
		if code, out, _ := runCLI(t, dir); code != exitFailed {
			t.Fatalf("%s: exit %d before setting the environment\n%s", dir, code, out)
		}
	}
	for k, v := range map[string]string{
		"KETTLE_ALLOW_INSECURE": "true", "KETTLE_ALLOW_DEBUG": "true", "KETTLE_TRUST_ROOTS": roots,
		"KETTLE_POLICY": policy, "KETTLE_AT": "2000-01-01", "KETTLE_ONLINE": "true",
		"KETTLE_NONCE": strings.Repeat("ff", 16), "KETTLE_GIT_COMMIT": strings.Repeat("1", 40),
		"KETTLE_GIT_TREE": strings.Repeat("2", 40), "KETTLE_SOURCE_SHA256": strings.Repeat("3", 64),
		"KETTLE_BUILDER_ID": "https://example.com/b", "KETTLE_MEASUREMENT": strings.Repeat("ab", 48),
		"KETTLE_JSON": "true",
	} {
		t.Setenv(k, v)
	}
	for _, dir := range []string{insecureDir, sim} {
		code, out, _ := runCLI(t, dir)
		if code != exitFailed || !strings.Contains(out, "Verification FAILED") {
			t.Errorf("%s: the environment weakened verification: exit %d\n%s", dir, code, out)
		}
	}
	if code, out, _ := runCLI(t, "--trust-roots", debugRoots, simDebug); code != exitFailed || !strings.Contains(out, "debug") {
		t.Errorf("KETTLE_ALLOW_DEBUG honoured: exit %d\n%s", code, out)
	}
	// Nor do variables add or change expectations (nonce, commit, clock…):
	// the kex bundle passes as if they were not there.
	if code, out, _ := runCLI(t, "--nonce", strings.Repeat("00", 16), kexBundle); code != exitOK || strings.HasPrefix(out, "{") {
		t.Errorf("a KETTLE_ variable changed the verdict on kex: exit %d\n%s", code, out)
	}
	// The flags themselves still work.
	if code, out, stderr := runCLI(t, "--allow-insecure", "--nonce", strings.Repeat("00", 16), insecureDir); code != exitOK {
		t.Errorf("--allow-insecure: exit %d\n%s%s", code, out, stderr)
	}
}

// TestVerifyCLINoExpectations: verifying without any expectation works,
// with a prominent warning naming the flags; any expectation silences it.
func TestVerifyCLINoExpectations(t *testing.T) {
	code, out, stderr := runCLI(t, kexBundle)
	if code != exitOK || !strings.Contains(stderr, "WARNING: nothing is expected of this build") ||
		!strings.Contains(stderr, "--source-sha256") || !strings.Contains(out, "nothing was expected of this build") {
		t.Errorf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	for _, args := range [][]string{
		{"--nonce", strings.Repeat("00", 16)}, {"--git-commit", "0fc9cfa2d7cf98bf1d6c370a5359cd4ac451540a"},
		{"--git-tree", "40097e700eabf1c2cfacd538ab1d921678419862"}, {"--builder-id", "https://lunal.dev/kettle-tee/v1"},
	} {
		code, out, stderr := runCLI(t, append(args, kexBundle)...)
		if code != exitOK || strings.Contains(stderr, "WARNING") || strings.Contains(out, "nothing was expected") {
			t.Errorf("%v: exit %d\n%s%s", args, code, out, stderr)
		}
	}
	// --min-tcb bounds the TCB but does not say which build: still warned.
	if _, _, stderr := runCLI(t, "--min-tcb", "bl=0", kexBundle); !strings.Contains(stderr, "WARNING") {
		t.Errorf("--min-tcb alone: no warning\n%s", stderr)
	}
}

// TestVerifyCLIMessages: what the CLI prints names flags, never the Go
// API (WithAllowInsecureUnsafe and friends).
func TestVerifyCLIMessages(t *testing.T) {
	tmp := t.TempDir()
	roots := filepath.Join(tmp, "debug-roots.pem")
	simDebug := copyKex(t, nil, simSNP(t, true, roots))
	ins := copyKex(t, nil, insecure)
	var all strings.Builder
	for _, args := range [][]string{
		{ins}, {"--allow-insecure", ins}, {"--json", ins}, {"--trust-roots", roots, simDebug}, {kexBundle},
		{"--source-sha256", "zz", kexBundle}, {"--git-tree", "abc", kexBundle}, {"-h"},
	} {
		_, out, stderr := runCLI(t, args...)
		all.WriteString(out + stderr)
	}
	for _, bad := range []string{"Unsafe", "With", "verify.", "Option"} {
		if strings.Contains(all.String(), bad) {
			t.Errorf("output names the Go API (%q):\n%s", bad, all.String())
		}
	}
	if !strings.Contains(all.String(), "--allow-insecure") || !strings.Contains(all.String(), "--allow-debug") {
		t.Errorf("the refusals do not name their flags:\n%s", all.String())
	}
}

// TestVerifyCLIPolicyFlags: every policy flag, accept and reject.
func TestVerifyCLIPolicyFlags(t *testing.T) {
	ev, err := os.ReadFile(filepath.Join(kexBundle, "evidence.json"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := verify.Evidence(context.Background(), ev, verify.WithoutExpectationsUnsafe())
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
	archiveSum := strings.Repeat("d8", 32)
	withArchive := copyKex(t, func(p string) string {
		return strings.Replace(p, `"gitTree": "40097e700eabf1c2cfacd538ab1d921678419862"`,
			`"gitTree": "40097e700eabf1c2cfacd538ab1d921678419862",`+"\n          "+`"sha256": "`+archiveSum+`"`, 1)
	}, insecure)
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
		{"--git-tree accept", []string{"--git-tree", "40097E700EABF1C2CFACD538AB1D921678419862", kexBundle}, exitOK},
		{"--git-tree reject", []string{"--git-tree", strings.Repeat("1", 40), kexBundle}, exitFailed},
		{"--git-tree malformed", []string{"--git-tree", "40097e7", kexBundle}, exitBadArgs},
		{"--source-sha256 accept", []string{"--allow-insecure", "--source-sha256", archiveSum, withArchive}, exitOK},
		{"--source-sha256 reject", []string{"--allow-insecure", "--source-sha256", strings.Repeat("00", 32), withArchive}, exitFailed},
		{"--source-sha256 reject (a git build has no archive)", []string{"--source-sha256", archiveSum, kexBundle}, exitFailed},
		{"--source-sha256 malformed", []string{"--source-sha256", archiveSum[:63], kexBundle}, exitBadArgs},
		{"--policy source-sha256 and git-tree accept", []string{"--allow-insecure", "--policy", policy(`{"source-sha256":"` + archiveSum + `","git-tree":"40097e700eabf1c2cfacd538ab1d921678419862"}`), withArchive}, exitOK},
		{"--policy source-sha256 reject", []string{"--allow-insecure", "--policy", policy(`{"source-sha256":"` + strings.Repeat("11", 32) + `"}`), withArchive}, exitFailed},
		{"--policy and a flag disagree: both checked", []string{"--git-commit", "0fc9cfa2d7cf98bf1d6c370a5359cd4ac451540a", "--policy", policy(`{"git-commit":"` + strings.Repeat("3", 40) + `"}`), kexBundle}, exitFailed},
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
