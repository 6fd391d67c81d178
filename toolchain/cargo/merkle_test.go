package cargo

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/kettle-build/kettle/provenance"
)

// TestMerkleRootKex recomputes the peer's input_merkle_root of its kex
// bundle from the provenance alone (Cargo leaves, reference §D.1).
func TestMerkleRootKex(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "provenance", "testdata", "kex-provenance.json"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := provenance.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	bd := s.Predicate.BuildDefinition
	rustc, _ := bd.InternalParameters.Toolchain.Get("rustc")
	cargo, _ := bd.InternalParameters.Toolchain.Get("cargo")
	leaves := MerkleLeaves(bd.ExternalParameters.Source.Digest["gitCommit"], bd.ExternalParameters.Source.Digest["gitTree"],
		rustc, cargo, bd.InternalParameters.LockfileHash["sha256"], bd.ResolvedDependencies)
	if len(leaves) != 7 {
		t.Fatalf("%d leaves, want 7", len(leaves))
	}
	got, err := provenance.MerkleRoot(leaves)
	if err != nil {
		t.Fatal(err)
	}
	const want = "5752a4489fb58a3e650d986760852b42cef1b0882ad1f7abd74c7ada44fbdd17"
	if got != want || s.Predicate.RunDetails.Byproducts[0].Digest["sha256"] != want {
		t.Fatalf("root %s, want %s", got, want)
	}
}
