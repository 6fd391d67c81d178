package hcl

import (
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"
)

var fixtures = filepath.Join("..", "testdata", "attestation")

func TestParseFixtures(t *testing.T) {
	for _, tc := range []struct {
		file     string
		typ      uint32
		runtime  int
		userData bool
	}{
		{"az_snp/hcl-report.bin", TypeSNP, 1110, false},
		{"az_tdx/hcl-report.bin", TypeTDX, 0, true},
	} {
		b, err := os.ReadFile(filepath.Join(fixtures, tc.file))
		if err != nil {
			t.Fatal(err)
		}
		r, err := Parse(b)
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		if r.ReportType != tc.typ || (tc.runtime != 0 && len(r.RuntimeData) != tc.runtime) {
			t.Errorf("%s: type %d runtime %d bytes", tc.file, r.ReportType, len(r.RuntimeData))
		}
		if tc.typ == TypeSNP {
			// The SNP report's REPORT_DATA (report offset 0x50) binds the runtime data.
			sum := sha256.Sum256(r.RuntimeData)
			if string(r.TEEReport[0x50:0x70]) != string(sum[:]) {
				t.Errorf("%s: runtime data hash is not in REPORT_DATA", tc.file)
			}
		}
		rd, err := ParseRuntimeData(r.RuntimeData)
		if err != nil {
			t.Fatal(err)
		}
		ak, err := rd.AttestationKey()
		if err != nil || ak.N.BitLen() != 2048 || ak.E != 65537 {
			t.Errorf("%s: AK %v %v", tc.file, ak, err)
		}
	}
}

func TestParseRejects(t *testing.T) {
	b, _ := os.ReadFile(filepath.Join(fixtures, "az_snp/hcl-report.bin"))
	for name, mut := range map[string]func([]byte) []byte{
		"short":       func(b []byte) []byte { return b[:100] },
		"magic":       func(b []byte) []byte { b[0] = 'X'; return b },
		"report type": func(b []byte) []byte { b[0x4C8] = 3; return b },
		"hash type":   func(b []byte) []byte { b[0x4CC] = 2; return b },
		"var size":    func(b []byte) []byte { b[0x4D2] = 0xff; return b },
		"empty var":   func(b []byte) []byte { b[0x4D0], b[0x4D1] = 0, 0; return b },
	} {
		if _, err := Parse(mut(append([]byte(nil), b...))); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzHCLReport(f *testing.F) {
	for _, name := range []string{"az_snp/hcl-report.bin", "az_tdx/hcl-report.bin"} {
		b, err := os.ReadFile(filepath.Join(fixtures, name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Parse(b)
		if err != nil {
			return
		}
		if len(r.TEEReport) != 1184 || len(r.RuntimeData) == 0 {
			t.Fatalf("inconsistent parse: %d %d", len(r.TEEReport), len(r.RuntimeData))
		}
		rd, err := ParseRuntimeData(r.RuntimeData)
		if err != nil {
			return
		}
		rd.AttestationKey()
		rd.UserDataBytes()
	})
}
