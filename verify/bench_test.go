package verify

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkBundleKexNoHash is docs/benchmarks.md's budget: verifying the kex az-snp
// bundle (read both documents, the whole evidence chain, statement, checksum)
// without artifact hashing. Budget: ≤ 3 ms/op.
func BenchmarkBundleKexNoHash(b *testing.B) {
	ctx := context.Background()
	skip := bundleOpt(func(o *options) error { o.skipArtifacts = true; return nil })
	for b.Loop() {
		r, err := Bundle(ctx, kexDir, skip, WithNonce(make([]byte, 16)))
		if err != nil || !r.Passed() {
			b.Fatal(err, r.Failed())
		}
	}
}

// BenchmarkBundleKexNoHashCold is the same with the verified-chain cache
// emptied before every verification (a process verifying one bundle).
func BenchmarkBundleKexNoHashCold(b *testing.B) {
	ctx := context.Background()
	skip := bundleOpt(func(o *options) error { o.skipArtifacts = true; return nil })
	amd := DefaultTrustRoots().AMD()
	for b.Loop() {
		amd.ResetCache()
		r, err := Bundle(ctx, kexDir, skip, WithNonce(make([]byte, 16)))
		if err != nil || !r.Passed() {
			b.Fatal(err, r.Failed())
		}
	}
}

// BenchmarkBundleKex is the full verification, artifact hashing included.
func BenchmarkBundleKex(b *testing.B) {
	ctx := context.Background()
	for b.Loop() {
		if r, err := Bundle(ctx, kexDir, anything); err != nil || !r.Passed() {
			b.Fatal(err)
		}
	}
}

func BenchmarkEvidenceAzSNP(b *testing.B) {
	ev := mustRead(b, filepath.Join(kexDir, EvidenceFile))
	ctx := context.Background()
	for b.Loop() {
		if _, err := Evidence(ctx, ev, anything); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEvidenceTDX(b *testing.B) {
	ev := tdxEnvelope(b, readFixture(b, "tdx_quote_live.dat"))
	ctx := context.Background()
	for b.Loop() {
		if _, err := Evidence(ctx, ev, anything); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHashArtifact measures artifact hashing throughput (docs/benchmarks.md:
// ≥ 1 GB/s) on a 256 MiB file.
func BenchmarkHashArtifact(b *testing.B) {
	const size = 256 << 20
	p := filepath.Join(b.TempDir(), "artifact")
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	rand.Read(buf)
	for i := 0; i < size/len(buf); i++ {
		f.Write(buf)
	}
	f.Close()
	ctx := context.Background()
	HashFile(ctx, p) // warm the page cache
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		if _, err := HashFile(ctx, p); err != nil {
			b.Fatal(err)
		}
	}
}
