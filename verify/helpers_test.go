package verify

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kettle-build/kettle/abi"
)

var (
	fixtures    = "testdata"
	attestation = filepath.Join(fixtures, "attestation")
	kexDir      = filepath.Join(fixtures, "kettle-v1", "kex")
	pinned      = time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
)

func readFixture(t testing.TB, parts ...string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(append([]string{attestation}, parts...)...))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func envelope(t testing.TB, platform string, ev any) []byte {
	t.Helper()
	raw, ok := ev.([]byte)
	if !ok {
		var err error
		if raw, err = json.Marshal(ev); err != nil {
			t.Fatal(err)
		}
	}
	b, err := json.Marshal(abi.Envelope{Platform: platform, Evidence: raw})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func snpEnvelope(t testing.TB, report []byte, certField string, cert []byte) []byte {
	chain := map[string]any{}
	if cert != nil {
		chain[certField] = base64.StdEncoding.EncodeToString(cert)
	}
	return envelope(t, PlatformSNP, map[string]any{
		"attestation_report": base64.StdEncoding.EncodeToString(report),
		"cert_chain":         chain,
	})
}

func tdxEnvelope(t testing.TB, quote []byte) []byte {
	return envelope(t, PlatformTDX, map[string]any{"quote": base64.StdEncoding.EncodeToString(quote)})
}

// anything is for tests that check genuineness or consistency only.
var anything = WithoutExpectationsUnsafe()
