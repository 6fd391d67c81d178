package verify

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// FuzzEvidence feeds arbitrary evidence.json to Evidence: it must never
// panic, and whatever it accepts must name a known platform.
func FuzzEvidence(f *testing.F) {
	for _, name := range []string{"az_snp/evidence-v1.json", "az_snp/live-evidence.json", "snp/live-evidence-genoa.json", "az_tdx/evidence-v1.json"} {
		f.Add(readFixture(f, name))
	}
	f.Add(envelope(f, PlatformAzTDX, readFixture(f, "az_tdx/live-evidence.json")))
	f.Add(tdxEnvelope(f, readFixture(f, "tdx_quote_live.dat")))
	f.Add([]byte(`{"platform":"insecure","evidence":{"report_data":"00"}}`))
	if b, err := os.ReadFile(filepath.Join(kexDir, EvidenceFile)); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Evidence(context.Background(), b, WithNow(pinned), WithAllowInsecureUnsafe(), anything)
		if err == nil {
			switch c.Platform {
			case PlatformAzSNP, PlatformAzTDX, PlatformSNP, PlatformTDX, PlatformGCPSNP, PlatformGCPTDX, PlatformDstack, PlatformInsecure:
			default:
				t.Fatalf("accepted platform %q", c.Platform)
			}
		}
	})
}
