package attest

import (
	"bytes"
	"os"
	"testing"
)

// Fuzz targets for every parser of device or metadata-service output.

func FuzzParseHCLReport(f *testing.F) {
	for _, p := range []string{"az_snp/hcl-report.bin", "az_tdx/hcl-report.bin"} {
		b, err := os.ReadFile(fixture("attestation", p))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("HCLA"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHCLReport(b)
		if err != nil {
			return
		}
		if len(h.TEEReport) != hclTEEReportSize || len(h.RuntimeData) == 0 || bytes.HasSuffix(h.RuntimeData, []byte{0}) {
			t.Fatalf("bad parse: %d-byte TEE report, runtime %q", len(h.TEEReport), h.RuntimeData)
		}
		if rt, err := h.Runtime(); err == nil {
			rt.AKModulus()
		}
		h.TDReport()
	})
}

func FuzzTDXQuoteReportData(f *testing.F) {
	for _, p := range []string{"tdx_quote_4.dat", "tdx_quote_5.dat", "az_tdx/td-quote.bin"} {
		b, err := os.ReadFile(fixture("attestation", p))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		rd, err := TDXQuoteReportData(b)
		if err == nil && len(rd) != 64 {
			t.Fatalf("%d-byte report data", len(rd))
		}
	})
}

func FuzzParseIMDS(f *testing.F) {
	f.Add([]byte(`{"vcekCert":"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}`))
	f.Add([]byte(`{"quote":"BAACAIEAAAA"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseTHIMCertification(b)
		if q, err := ParseTDQuoteResponse(b); err == nil && len(q) < tdxQuoteHeaderSize {
			t.Fatal("short quote accepted")
		}
	})
}

func FuzzCertsFromTable(f *testing.F) {
	f.Add(make([]byte, 24))
	f.Fuzz(func(t *testing.T, b []byte) {
		certsFromTable(b)
	})
}
