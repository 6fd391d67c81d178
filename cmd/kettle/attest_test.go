package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kettle-build/kettle/internal/testenv"
)

// TestAttestSimSNPRoundTrip builds a real Cargo project with `kettle attest
// --attester sim-snp --sim-roots-out`, then checks that `kettle verify`
// accepts the bundle only with those roots and the right nonce.
func TestAttestSimSNPRoundTrip(t *testing.T) {
	testenv.NeedTool(t, "cargo")
	dir := t.TempDir()
	src := filepath.Join("..", "..", "testdata", "projects", "cargo-workspace")
	if out, err := exec.Command("cp", "-a", src+"/.", dir).CombinedOutput(); err != nil {
		t.Fatalf("copy project: %v\n%s", err, out)
	}
	roots := filepath.Join(t.TempDir(), "sim-roots.pem")
	nonce := "00112233445566778899aabbccddeeff"
	var out, errb bytes.Buffer
	code := runBuild(context.Background(), "attest", []string{
		"--sandbox", "none", "--attester", "sim-snp", "--sim-roots-out", roots, "--nonce", nonce, dir,
	}, &out, &errb)
	if code != exitOK {
		t.Fatalf("kettle attest exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
	}
	if !strings.Contains(errb.String(), "WARNING") {
		t.Errorf("sim-snp attest event carries no warning:\n%s", errb.String())
	}
	if _, err := os.Stat(roots); err != nil {
		t.Fatalf("--sim-roots-out wrote nothing: %v", err)
	}
	result := filepath.Join(dir, "kettle-build")
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"test roots and nonce", []string{"--trust-roots", roots, "--nonce", nonce, result}, exitOK},
		{"embedded roots", []string{"--nonce", nonce, result}, exitFailed},
		{"wrong nonce", []string{"--trust-roots", roots, "--nonce", "ff112233445566778899aabbccddeeff", result}, exitFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tc.args...)
			if code != tc.want {
				t.Fatalf("kettle verify %v: exit %d, want %d\n%s\n%s", tc.args, code, tc.want, stdout, stderr)
			}
		})
	}
}
