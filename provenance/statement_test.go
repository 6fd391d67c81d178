package provenance

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test -update to accept):\n%s", name, got)
	}
}

// TestRoundTripKex: the peer's own provenance parses and is written back
// byte for byte (key order, indentation, no trailing newline).
func TestRoundTripKex(t *testing.T) {
	for _, path := range []string{"testdata/kex-provenance.json"} {
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		s, err := Parse(want)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: round trip differs:\n%s", path, got)
		}
	}
}

func nixStatement() *Statement {
	finished := "2026-05-20T21:52:40.000001+00:00"
	return &Statement{
		Type: StatementType,
		Predicate: Predicate{
			BuildDefinition: BuildDefinition{
				BuildType: "https://kettle.build/buildtypes/nix@v1",
				ExternalParameters: ExternalParameters{
					BuildCommand: "nix build --no-link --json",
					Source: Source{
						Digest: Digest{"gitCommit": "", "gitTree": "4b825dc642cb6eb9a060e54bf8d69288fbee4904", "sha256": "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"},
						URI:    "",
					},
				},
				InternalParameters: InternalParameters{
					Evaluation:   &Evaluation{DerivationCount: 2, FetchCount: 1},
					FlakeInputs:  []FlakeInput{{Name: "greeting", NarHash: "sha256-qPDvMBmNC/Ca3wuNsL3ZDvRufBInwqLO+JdH/Br8yJs="}},
					LockfileHash: Digest{"sha256": "1cfa007a25df8a198414390b6402cfb7ed5dd2fd67e2c911ea0214d68f0fcf47"},
					Toolchain: Toolchain{
						{Name: "nix", Version: "nix (Nix) 2.8.0", SHA256: "6bbe4f5601b419b69ec2001b5e64c997770f620e1493ad7007b78e505457796f"},
						{Name: "kettle", Version: "0.1.0", SHA256: "2e8e398fce4dfb04f1dad4555908b48c08909a3a2dcb026d8a82874556e942ff"},
					},
					Sandbox: "none",
				},
				ResolvedDependencies: []Dependency{{
					Annotations: &Annotations{DrvPath: "/nix/store/7scgdbr8n3n3v2c7vy02z3cy7pvhv9vq-kettle-greeting-src.drv", OutputHashMode: "flat", URL: "https://example.com/<a&b>"},
					Digest:      Digest{"sha256": "65AafoUx3/XpH8FUdq852HFgHXK8zU1gNrJTlQ0rFo0="},
					Name:        "kettle-greeting-src",
					URI:         "pkg:nix-fetch/kettle-greeting-src?hash=sha256:65AafoUx3/XpH8FUdq852HFgHXK8zU1gNrJTlQ0rFo0=",
				}},
			},
			RunDetails: RunDetails{
				Builder:    Builder{ID: "https://kettle.build/builder/v1"},
				Byproducts: []Byproduct{{Digest: Digest{"sha256": "5752a4489fb58a3e650d986760852b42cef1b0882ad1f7abd74c7ada44fbdd17"}, Name: MerkleRootName}},
				Metadata:   Metadata{InvocationID: "build-20260520-215239-dde1b50e", StartedOn: "2026-05-20T21:52:39.233053+00:00", FinishedOn: &finished},
			},
		},
		PredicateType: PredicateType,
		Subject:       []Subject{{Digest: Digest{"sha256": "026655cedb5db912f96509f5e58d5090312d6fe74686c663d15ed4a10ff4a9ba"}, Name: "kettle-hello"}},
	}
}

// TestGoldenNix pins the serialization of every optional field (nix
// evaluation, flakeInputs, annotations, sandbox, an archive digest) and
// checks it parses back to the same bytes.
func TestGoldenNix(t *testing.T) {
	got, err := Marshal(nixStatement())
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "nix-provenance.golden.json", got)
	s, err := Parse(got)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := Marshal(s)
	if !bytes.Equal(again, got) {
		t.Fatal("parse/marshal is not the identity")
	}
}

func TestGoldenManifest(t *testing.T) {
	data, err := os.ReadFile("testdata/kex-provenance.json")
	if err != nil {
		t.Fatal(err)
	}
	s, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	got, err := MarshalManifest(NewManifest(s))
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "kex-manifest.golden.json", got)
	got, _ = MarshalManifest(NewManifest(nixStatement()))
	golden(t, "nix-manifest.golden.json", got)
}

func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile("testdata/kex-provenance.json"); err == nil {
		f.Add(b)
	}
	if b, err := Marshal(nixStatement()); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse(data)
		if err != nil {
			return
		}
		out, err := Marshal(s)
		if err != nil {
			return
		}
		s2, err := Parse(out)
		if err != nil {
			t.Fatalf("re-parse of our own output: %v", err)
		}
		out2, _ := Marshal(s2)
		if !bytes.Equal(out, out2) {
			t.Fatal("marshal not stable")
		}
		NewManifest(s)
	})
}
