package gomod

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testdata/modcache holds github.com/google/uuid@v1.6.0 exactly as the Go
// module proxy served it; its h1 hashes are the ones go.sum files everywhere
// record for it.
const uuidDir = "testdata/modcache/cache/download/github.com/google/uuid/@v"

func TestHashZipGolden(t *testing.T) {
	got, err := HashZip(filepath.Join(uuidDir, "v1.6.0.zip"))
	if err != nil {
		t.Fatal(err)
	}
	if got != "NIvaJDMOsjHA8n1jAhLSgzrAzy1Hgr+hNrb57e+94F0=" {
		t.Errorf("zip h1 %s", got)
	}
	got, err = HashGoMod(filepath.Join(uuidDir, "v1.6.0.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if got != "TIyPZe4MgqvfeYDBFedMoGGpEw/LqOeaOT+nhxU+yHo=" {
		t.Errorf("go.mod h1 %s", got)
	}
}

func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if fi.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, fi.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestVerifyCache(t *testing.T) {
	good, err := ParseSum([]byte(uuidSum))
	if err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	copyTree(t, "testdata/modcache", cache)
	n, err := VerifyCache(cache, good, nil)
	if err != nil || n != 1 {
		t.Fatalf("VerifyCache = %d, %v", n, err)
	}

	if n, err := VerifyCache(filepath.Join(t.TempDir(), "empty"), good, nil); err != nil || n != 0 {
		t.Fatalf("empty cache: %d, %v", n, err)
	}

	wrong, _ := ParseSum([]byte(strings.Replace(uuidSum, "NIva", "NIvb", 1)))
	if _, err := VerifyCache(cache, wrong, nil); !errors.Is(err, ErrMismatch) {
		t.Fatalf("tampered zip hash: %v, want ErrMismatch", err)
	}
	wrongMod, _ := ParseSum([]byte(strings.Replace(uuidSum, "TIyP", "TIyQ", 1)))
	if _, err := VerifyCache(cache, wrongMod, nil); !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), "/go.mod") {
		t.Fatalf("tampered go.mod hash: %v, want ErrMismatch", err)
	}
	onlyMod, _ := ParseSum([]byte("github.com/google/uuid v1.6.0/go.mod h1:TIyPZe4MgqvfeYDBFedMoGGpEw/LqOeaOT+nhxU+yHo=\n"))
	if _, err := VerifyCache(cache, onlyMod, nil); !errors.Is(err, ErrUnpinned) {
		t.Fatalf("unpinned zip: %v, want ErrUnpinned", err)
	}

	// A module whose content changed after go checked it.
	zip := filepath.Join(cache, "cache/download/github.com/google/uuid/@v/v1.6.0.zip")
	b, _ := os.ReadFile(zip)
	b[len(b)/2] ^= 1
	os.WriteFile(zip, b, 0o644)
	if _, err := VerifyCache(cache, good, nil); err == nil {
		t.Fatal("corrupted zip accepted")
	}
}
