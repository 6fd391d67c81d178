package attest

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/kettle-build/kettle/internal/testenv"
)

// TestSimChainEmbedded: the embedded test-only chain is whole (ASK signed by
// ARK, VCEK by ASK, the key matches the VCEK) and issued for simProductName.
func TestSimChainEmbedded(t *testing.T) {
	s, err := simChain()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Ask.CheckSignatureFrom(s.Ark); err != nil {
		t.Errorf("ASK not signed by ARK: %v", err)
	}
	if err := s.Vcek.CheckSignatureFrom(s.Ask); err != nil {
		t.Errorf("VCEK not signed by ASK: %v", err)
	}
	if !strings.Contains(s.Ark.Subject.CommonName, "Milan") {
		t.Errorf("ARK subject %q is not for %s", s.Ark.Subject.CommonName, simProductName)
	}
}

// TestBinaryDoesNotLinkSevTesting: go-sev-guest/testing parses its test keys
// in package init; the kettle binary must not link it (kettle verify's
// start-up time, issue 16).
func TestBinaryDoesNotLinkSevTesting(t *testing.T) {
	testenv.NeedTool(t, "go")
	out, err := exec.Command("go", "list", "-deps", "github.com/kettle-build/kettle/cmd/kettle").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "github.com/google/go-sev-guest/testing") {
			t.Errorf("cmd/kettle links %s", p)
		}
	}
}
