package verify

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", "golden", name)
	if *update {
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run with -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file:\n%s", name, got)
	}
}

func TestGoldenKex(t *testing.T) {
	r := mustBundle(t, kexDir, WithNonce(make([]byte, 16)), WithNow(pinned))
	var b bytes.Buffer
	if err := WriteTable(&b, r); err != nil {
		t.Fatal(err)
	}
	golden(t, "kex.txt", b.Bytes())
	j, err := r.JSON()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "kex.json", j)

	dir := copyBundle(t)
	os.WriteFile(filepath.Join(dir, ArtifactsDir, "extra"), nil, 0o644)
	r = mustBundle(t, dir, WithNonce([]byte{1}), WithNow(pinned), WithPolicy(Policy{BuilderID: "https://example.com/b"}))
	r.Dir = "kex-tampered"
	b.Reset()
	WriteTable(&b, r)
	golden(t, "kex-failed.txt", b.Bytes())
}
