package verify

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kettle-build/kettle/provenance"
)

// copyBundle copies the kex result directory into a temporary one.
func copyBundle(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for _, rel := range []string{ProvenanceFile, EvidenceFile, filepath.Join(ArtifactsDir, "kex")} {
		b, err := os.ReadFile(filepath.Join(kexDir, rel))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, rel)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, rel), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func firstFailed(r *Report) string {
	for _, c := range r.Checks {
		if !c.OK {
			return c.Name
		}
	}
	return ""
}

func mustBundle(t testing.TB, dir string, opts ...BundleOption) *Report {
	t.Helper()
	r, err := Bundle(context.Background(), dir, opts...)
	if err != nil {
		t.Fatalf("Bundle: %v", err)
	}
	return r
}

func dump(t testing.TB, r *Report) string {
	var b bytes.Buffer
	WriteTable(&b, r)
	return b.String()
}

func TestBundleKex(t *testing.T) {
	r := mustBundle(t, kexDir, anything)
	if !r.Passed() {
		t.Fatalf("kex bundle failed:\n%s", dump(t, r))
	}
	if r.BuildID != "build-20260520-215239-dde1b50e" || r.GitCommit != "0fc9cfa2d7cf98bf1d6c370a5359cd4ac451540a" ||
		!strings.HasPrefix(r.Toolchain, "rustc 1.93.1") || r.Platform != PlatformAzSNP || r.Nonce != strings.Repeat("0", 32) {
		t.Errorf("header: %+v", r)
	}
	if r := mustBundle(t, kexDir, WithNonce(make([]byte, 16))); !r.Passed() {
		t.Errorf("--nonce of 16 zero bytes failed:\n%s", dump(t, r))
	}
	for _, n := range [][]byte{{1}, bytes.Repeat([]byte{0xff}, 16), append(make([]byte, 15), 1)} {
		r := mustBundle(t, kexDir, WithNonce(n))
		if got := firstFailed(r); got != "Nonce matches the attestation" {
			t.Errorf("nonce %x: first failed check %q", n, got)
		}
	}
}

func TestBundleTamper(t *testing.T) {
	flip := func(rel string, find, repl string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			p := filepath.Join(dir, rel)
			b, _ := os.ReadFile(p)
			i := bytes.Index(b, []byte(find))
			if i < 0 {
				t.Fatalf("%q not in %s", find, rel)
			}
			copy(b[i:], repl)
			os.WriteFile(p, b, 0o644)
		}
	}
	tests := []struct {
		name   string
		mutate func(t *testing.T, dir string)
		want   string // the first failing check (prefix)
	}{
		{"provenance byte", flip(ProvenanceFile, `"cargo build"`, `"cargo buile"`), "Attested checksum matches"},
		{"provenance byte breaking JSON", flip(ProvenanceFile, `"_type"`, `'_type"`), "Provenance is an in-toto"},
		{"evidence: TPM signature byte", flip(EvidenceFile, `"signature":"1c6e`, `"signature":"1c6f`), "Evidence is genuine"},
		{"evidence: TPM message byte", flip(EvidenceFile, `"message":"ff54`, `"message":"ff55`), "Evidence is genuine"},
		{"evidence: PCR byte", flip(EvidenceFile, `"pcrs":["`, `"pcrs":["f`), "Evidence is genuine"},
		{"evidence: HCL report byte", flip(EvidenceFile, `"hcl_report":"SENMQQ`, `"hcl_report":"SENMQA`), "Evidence is genuine"},
		{"evidence: VCEK byte", flip(EvidenceFile, `"vcek":"MII`, `"vcek":"MIJ`), "Evidence is genuine"},
		{"artifact byte", func(t *testing.T, dir string) {
			p := filepath.Join(dir, ArtifactsDir, "kex")
			b, _ := os.ReadFile(p)
			b[len(b)/2] ^= 1
			os.WriteFile(p, b, 0o644)
		}, "Artifact `kex`"},
		{"artifact missing", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, ArtifactsDir, "kex")) }, "Artifact `kex`"},
		{"extra unlisted artifact", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, ArtifactsDir, "backdoor"), []byte("x"), 0o755)
		}, "No unlisted files"},
		{"extra unlisted artifact in a subdirectory", func(t *testing.T, dir string) {
			os.MkdirAll(filepath.Join(dir, ArtifactsDir, "lib"), 0o755)
			os.WriteFile(filepath.Join(dir, ArtifactsDir, "lib", "x.so"), []byte("x"), 0o755)
		}, "No unlisted files"},
		{"artifact replaced by a symlink", func(t *testing.T, dir string) {
			p := filepath.Join(dir, ArtifactsDir, "kex")
			os.Rename(p, filepath.Join(dir, "elsewhere"))
			os.Symlink(filepath.Join(dir, "elsewhere"), p)
		}, "Artifact `kex`"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyBundle(t)
			if r := mustBundle(t, dir, anything); !r.Passed() {
				t.Fatalf("copy does not pass:\n%s", dump(t, r))
			}
			tc.mutate(t, dir)
			r := mustBundle(t, dir, anything)
			if r.Passed() {
				t.Fatalf("tampered bundle passed:\n%s", dump(t, r))
			}
			if got := firstFailed(r); !strings.HasPrefix(got, tc.want) {
				t.Errorf("first failed check %q, want %q\n%s", got, tc.want, dump(t, r))
			}
		})
	}
}

func TestBundleUnreadable(t *testing.T) {
	dir := copyBundle(t)
	os.Remove(filepath.Join(dir, EvidenceFile))
	for _, d := range []string{dir, filepath.Join(t.TempDir(), "nope"), filepath.Join(kexDir, ProvenanceFile)} {
		if _, err := Bundle(context.Background(), d, anything); !errors.Is(err, ErrUnreadable) {
			t.Errorf("%s: %v, want ErrUnreadable", d, err)
		}
	}
}

// writeBundle writes a result directory whose provenance is the kex one with
// mutate applied, and whose evidence is made by makeEvidence from the
// provenance bytes.
func writeBundle(t testing.TB, mutate func(*provenance.Statement), makeEvidence func(prov []byte) []byte) (string, []byte) {
	t.Helper()
	dir := copyBundle(t)
	raw, _ := os.ReadFile(filepath.Join(dir, ProvenanceFile))
	s, err := provenance.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if mutate != nil {
		mutate(s)
	}
	prov, err := provenance.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, ProvenanceFile), prov, 0o644)
	os.WriteFile(filepath.Join(dir, EvidenceFile), makeEvidence(prov), 0o644)
	return dir, prov
}

func insecureEvidence(t testing.TB, rd []byte) []byte {
	return envelope(t, PlatformInsecure, map[string]string{"report_data": hex.EncodeToString(rd)})
}

func reportData(prov, nonce []byte) []byte {
	sum := sha256.Sum256(prov)
	rd := make([]byte, 48)
	copy(rd, sum[:])
	copy(rd[32:], nonce)
	return rd
}

func TestBundleInsecure(t *testing.T) {
	dir, _ := writeBundle(t, nil, func(p []byte) []byte { return insecureEvidence(t, reportData(p, nil)) })
	r := mustBundle(t, dir, anything)
	if got := firstFailed(r); got != "Evidence: none — the build ran without a TEE" || !strings.Contains(r.Checks[0].Detail, "without a TEE") ||
		!strings.Contains(r.Checks[0].Detail, "--allow-insecure") {
		t.Errorf("insecure evidence: first failed %q detail %q", got, r.Checks[0].Detail)
	}
	r = mustBundle(t, dir, WithAllowInsecureUnsafe(), WithNonce(make([]byte, 16)))
	if !r.Passed() || len(r.Warnings) == 0 || r.Attested {
		t.Errorf("insecure evidence with allow-insecure:\n%s", dump(t, r))
	}
	// Accepted, but never shown as genuine: the evidence row and every row
	// that trusts the unsigned report data are warnings, not ✅.
	table := dump(t, r)
	for _, c := range r.Checks {
		attested := strings.HasPrefix(c.Name, "Evidence") || strings.HasPrefix(c.Name, "Attested") || strings.HasPrefix(c.Name, "Nonce")
		if attested != c.Warning {
			t.Errorf("check %q: warning %v", c.Name, c.Warning)
		}
	}
	for _, bad := range []string{"✅ Evidence", "genuine", "✅ Attested", "✅ Nonce"} {
		if strings.Contains(table, bad) {
			t.Errorf("insecure table shows %q:\n%s", bad, table)
		}
	}
	for _, want := range []string{"⚠️  Evidence: none — the build ran without a TEE (accepted: --allow-insecure)", "WITHOUT A TEE", "insecure (no TEE"} {
		if !strings.Contains(table, want) {
			t.Errorf("insecure table lacks %q:\n%s", want, table)
		}
	}
}

// TestBundleFullChecksum: a provenance whose sha256 ends in 0x00 (the peer
// strips trailing zeros and rejects these) passes, and a binding that differs
// only in that last byte fails.
func TestBundleFullChecksum(t *testing.T) {
	var id string
	for i := 0; ; i++ {
		id = fmt.Sprintf("build-zero-%d", i)
		s, _ := provenance.Parse(mustRead(t, filepath.Join(kexDir, ProvenanceFile)))
		s.Predicate.RunDetails.Metadata.InvocationID = id
		b, _ := provenance.Marshal(s)
		if sum := sha256.Sum256(b); sum[31] == 0 {
			break
		}
	}
	setID := func(s *provenance.Statement) { s.Predicate.RunDetails.Metadata.InvocationID = id }
	dir, _ := writeBundle(t, setID, func(p []byte) []byte { return insecureEvidence(t, reportData(p, nil)) })
	if r := mustBundle(t, dir, WithAllowInsecureUnsafe(), anything); !r.Passed() {
		t.Errorf("checksum ending in 0x00:\n%s", dump(t, r))
	}
	dir, _ = writeBundle(t, setID, func(p []byte) []byte {
		rd := reportData(p, nil)
		rd[31] = 1
		return insecureEvidence(t, rd)
	})
	if got := firstFailed(mustBundle(t, dir, WithAllowInsecureUnsafe(), anything)); got != "Attested checksum matches provenance.json" {
		t.Errorf("last checksum byte changed: first failed %q", got)
	}
}

func mustRead(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBundleCompactBinding: the peer's older releases bound only the 32-byte
// sha256 of the compact JSON.
func TestBundleCompactBinding(t *testing.T) {
	dir, _ := writeBundle(t, nil, func(p []byte) []byte {
		var c bytes.Buffer
		json.Compact(&c, p)
		sum := sha256.Sum256(c.Bytes())
		return insecureEvidence(t, sum[:])
	})
	r := mustBundle(t, dir, WithAllowInsecureUnsafe(), anything)
	if !r.Passed() || !strings.Contains(r.Checks[2].Detail, "compact") {
		t.Fatalf("compact 32-byte binding:\n%s", dump(t, r))
	}
	if got := firstFailed(mustBundle(t, dir, WithAllowInsecureUnsafe(), WithNonce(make([]byte, 16)))); got != "Nonce matches the attestation" {
		t.Errorf("nonce against a 32-byte binding: first failed %q", got)
	}
}

// TestBundleSimSNP: evidence signed by go-sev-guest's test-only AMD keys
// verifies only with those roots given explicitly.
func TestBundleSimSNP(t *testing.T) {
	nonce := []byte("0123456789abcdef")
	for _, product := range []string{"Milan-B1", "Genoa-B1"} {
		t.Run(product, func(t *testing.T) {
			var roots []byte
			dir, _ := writeBundle(t, nil, func(p []byte) []byte {
				ev, r := simSNP(t, product, reportData(p, nonce), false)
				roots = r
				return ev
			})
			tr, err := ParseTrustRoots(roots)
			if err != nil {
				t.Fatal(err)
			}
			if r := mustBundle(t, dir, WithTrustRoots(tr), WithNonce(nonce)); !r.Passed() {
				t.Errorf("sim-snp with test roots:\n%s", dump(t, r))
			}
			r := mustBundle(t, dir, anything)
			if got := firstFailed(r); !strings.HasPrefix(got, "Evidence is genuine") {
				t.Errorf("sim-snp with the embedded roots: first failed %q", got)
			}
			if _, err := Evidence(context.Background(), mustRead(t, filepath.Join(dir, EvidenceFile)), anything); !errors.Is(err, ErrChain) {
				t.Errorf("sim-snp with the embedded roots: %v, want ErrChain", err)
			}
			if got := firstFailed(mustBundle(t, dir, WithTrustRoots(tr), WithNonce([]byte("another nonce")))); got != "Nonce matches the attestation" {
				t.Errorf("wrong nonce: %q", got)
			}
		})
	}
}

func TestBundleBuildConfig(t *testing.T) {
	dir := copyBundle(t)
	os.MkdirAll(filepath.Join(dir, BuildConfigDir), 0o755)
	lock := filepath.Join(dir, BuildConfigDir, "Cargo.lock")
	// The kex provenance records lockfileHash 1cfa007a…; no lockfile content is
	// at hand, so a mismatch must be reported, and a matching file must pass.
	os.WriteFile(lock, []byte("not the lockfile"), 0o644)
	if got := firstFailed(mustBundle(t, dir, anything)); got != "Lockfile in build-config/ matches lockfileHash" {
		t.Errorf("wrong lockfile: first failed %q", got)
	}
	d2, _ := writeBundle(t, func(s *provenance.Statement) {
		sum := sha256.Sum256([]byte("lock"))
		s.Predicate.BuildDefinition.InternalParameters.LockfileHash = provenance.Digest{"sha256": hex.EncodeToString(sum[:])}
	}, func(p []byte) []byte { return insecureEvidence(t, reportData(p, nil)) })
	os.MkdirAll(filepath.Join(d2, BuildConfigDir), 0o755)
	os.WriteFile(filepath.Join(d2, BuildConfigDir, "Cargo.lock"), []byte("lock"), 0o644)
	if r := mustBundle(t, d2, WithAllowInsecureUnsafe(), anything); !r.Passed() {
		t.Errorf("matching lockfile:\n%s", dump(t, r))
	}
}

func TestBundleProjectDir(t *testing.T) {
	dir := copyBundle(t)
	proj := t.TempDir()
	if err := os.Rename(dir, filepath.Join(proj, "kettle-build")); err != nil {
		t.Fatal(err)
	}
	r := mustBundle(t, proj, anything)
	if !r.Passed() || r.Dir != filepath.Join(proj, "kettle-build") {
		t.Errorf("project dir: %s\n%s", r.Dir, dump(t, r))
	}
}
