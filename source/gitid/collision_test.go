package gitid

import (
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestCollisionDetected: the SHA-1 that gitid hashes objects and files
// with is collision-detecting, as git's sha1dc is: SHAttered's first PDF
// (testdata/shattered-1.pdf, from github.com/pjbgf/sha1cd's test data) is
// flagged, and an ordinary file is not.
func TestCollisionDetected(t *testing.T) {
	pdf, err := os.ReadFile(filepath.Join("testdata", "shattered-1.pdf"))
	if err != nil {
		t.Fatal(err)
	}
	h := SHA1.new()
	h.Write(pdf)
	if _, err := sum(h); !errors.Is(err, ErrCollision) {
		t.Fatalf("sum of shattered-1.pdf: %v, want ErrCollision", err)
	}
	h = SHA1.new()
	h.Write([]byte("hello\n"))
	if _, err := sum(h); err != nil {
		t.Fatal(err)
	}
	// As a blob the PDF is harmless (git's "blob <size>\0" header
	// shifts its colliding blocks) and git stores it: so does gitid.
	blob, err := objectID(SHA1, "blob", pdf)
	if err != nil || hex.EncodeToString(blob) != "ba9aaa145ccd24ef760cf31c74d8f7ca1a2e47b0" {
		t.Fatalf("blob id %x %v, want git hash-object's", blob, err)
	}
}
