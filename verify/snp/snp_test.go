package snp

import (
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var fixtures = filepath.Join("..", "testdata", "attestation", "snp")

func load(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtures, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFixtures(t *testing.T) {
	pinned := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	today := time.Now()
	tests := []struct {
		report, key string
		now         time.Time
		wantErr     error
		gen         Generation
	}{
		{"live-report-v5-genoa.bin", "live-vcek-genoa.der", today, nil, Genoa},
		{"test-report.bin", "test-vcek.der", today, nil, Milan},
		{"test-report.bin", "test-vcek-invalid-legacy.der", today, ErrChain, ""},
		{"test-report.bin", "test-vcek-invalid-new.der", today, ErrChain, ""},
		{"test-vlek-report.bin", "test-vlek.der", pinned, nil, ""},
		{"test-vlek-report.bin", "test-vlek.der", today, ErrChain, ""},
	}
	for _, tc := range tests {
		t.Run(tc.report+"+"+tc.key+"@"+tc.now.Format("2006-01-02"), func(t *testing.T) {
			r, err := Parse(load(t, tc.report))
			if err != nil {
				t.Fatal(err)
			}
			key, err := x509.ParseCertificate(load(t, tc.key))
			if err != nil {
				t.Fatal(err)
			}
			res, err := Verify(r, key, DefaultRoots(), tc.now)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("Verify = %v, want %v", err, tc.wantErr)
			}
			if err == nil && tc.gen != "" && res.Generation != tc.gen {
				t.Errorf("generation %s, want %s", res.Generation, tc.gen)
			}
			t.Logf("v%d vmpl=%d debug=%v fam=%x model=%x err=%v", r.Version, r.VMPL, r.Debug(), r.Family, r.Model, err)
		})
	}
}

// TestWrongVCEK: a VCEK for another chip fails the chain, the signature and
// the HW_ID check, each on its own.
func TestWrongVCEK(t *testing.T) {
	r, err := Parse(load(t, "test-report.bin"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"test-vcek-invalid-legacy.der", "test-vcek-invalid-new.der"} {
		t.Run(name, func(t *testing.T) {
			key, err := x509.ParseCertificate(load(t, name))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := VerifyChain(key, DefaultRoots(), time.Now()); !errors.Is(err, ErrChain) {
				t.Errorf("chain: %v", err)
			}
			if err := VerifySignature(r, key); !errors.Is(err, ErrSignature) {
				t.Errorf("signature: %v", err)
			}
			if err := CheckEndorsement(r, &Chain{Key: key}, Milan); !errors.Is(err, ErrTCB) {
				t.Errorf("HW_ID/TCB: %v", err)
			}
		})
	}
}

func FuzzSNPReport(f *testing.F) {
	for _, name := range []string{"live-report-v5-genoa.bin", "test-report.bin", "test-vlek-report.bin"} {
		f.Add(load(f, name))
	}
	key, err := x509.ParseCertificate(load(f, "live-vcek-genoa.der"))
	if err != nil {
		f.Fatal(err)
	}
	ch := &Chain{Key: key}
	genoa := load(f, "live-report-v5-genoa.bin")
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Parse(b)
		if err != nil {
			return
		}
		g := r.Generation()
		_ = DecodeTCB(g, r.ReportedTCB).String()
		CheckEndorsement(r, ch, g)
		// Bytes after the signature (0x330..) are neither signed nor used.
		if VerifySignature(r, key) == nil && string(b[:0x330]) != string(genoa[:0x330]) {
			t.Fatal("a changed report verifies")
		}
	})
}

// TestChainCache: a remembered chain is reused only inside its validity.
func TestChainCache(t *testing.T) {
	roots, err := ParseRoots(mustPEM(t))
	if err != nil {
		t.Fatal(err)
	}
	key, _ := x509.ParseCertificate(load(t, "test-vlek.der"))
	valid := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	if _, err := VerifyChain(key, roots, valid); err != nil {
		t.Fatal(err)
	}
	if _, ok := roots.cached(key, valid); !ok {
		t.Fatal("chain not remembered")
	}
	if _, err := VerifyChain(key, roots, time.Now()); !errors.Is(err, ErrChain) {
		t.Errorf("expired VLEK verified from the cache: %v", err)
	}
}

func mustPEM(t *testing.T) []byte {
	t.Helper()
	var all []byte
	ents, _ := rootFS.ReadDir("roots")
	for _, e := range ents {
		b, _ := rootFS.ReadFile("roots/" + e.Name())
		all = append(all, b...)
	}
	return all
}
