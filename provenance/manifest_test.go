package provenance

import (
	"strings"
	"testing"
)

func TestPackageName(t *testing.T) {
	for uri, want := range map[string]string{
		"pkg:golang/github.com/google/uuid@v1.6.0":                       "github.com/google/uuid",
		"pkg:golang/golang.org/x/sys@v0.0.0-20240101000000-abcdef123456": "golang.org/x/sys",
		"pkg:npm/@types/node@20.1.0?checksum=sha512-abc":                 "@types/node",
		"pkg:npm/%40scope/name@1.0.0":                                    "@scope/name",
		"pkg:npm/left-pad@1.3.0?checksum=sha512-xyz":                     "left-pad",
		"pkg:cargo/serde@1.0.200?checksum=sha256:00":                     "serde",
		"pkg:nix-fetch/source.tar.gz?hash=sha256:AAAA":                   "source.tar.gz",
		"pkg:golang/example.com/m@v1.0.0#sub/dir":                        "example.com/m",
		"https://codeload.github.com/a/b/tar.gz/0123?x=1":                "https://codeload.github.com/a/b/tar.gz/0123",
		"pkg:broken":     "",
		"pkg:npm/@scope": "@scope",
	} {
		if got := PackageName(uri); got != want {
			t.Errorf("PackageName(%q) = %q, want %q", uri, got, want)
		}
	}
}

// TestManifestDependencies: every dependency has a name and a digest, Go
// modules included (the h1 hash, as go.sum writes it).
func TestManifestDependencies(t *testing.T) {
	s := &Statement{}
	s.Predicate.BuildDefinition.ResolvedDependencies = []Dependency{
		{Digest: Digest{"h1": "fW7wUEsnP6o0tPLbnBR2l0PkzeiTT3Tz+lLxqWbQ6eY="}, URI: "pkg:golang/github.com/google/uuid@v1.6.0"},
		{Digest: Digest{"sha512": "sha512-Zm9v"}, URI: "pkg:npm/@types/node@20.1.0?checksum=sha512-Zm9v"},
		{Digest: Digest{"sha256": strings.Repeat("ab", 32)}, Name: "serde", URI: "pkg:cargo/serde@1.0.0?checksum=sha256:" + strings.Repeat("ab", 32)},
		{Digest: Digest{"gitCommit": strings.Repeat("c", 40)}, Name: "g", URI: "pkg:cargo/g@0.1.0?vcs_url=git+https://h/g@" + strings.Repeat("c", 40)},
		{Digest: Digest{"sha1": "AAAA"}, Name: "old.tar", URI: "pkg:nix-fetch/old.tar?hash=sha1:AAAA"},
	}
	m := NewManifest(s)
	want := []ManifestDependency{
		{Name: "github.com/google/uuid", Digest: "h1:fW7wUEsnP6o0tPLbnBR2l0PkzeiTT3Tz+lLxqWbQ6eY=", URI: "pkg:golang/github.com/google/uuid@v1.6.0"},
		{Name: "@types/node", Digest: "sha512-Zm9v", URI: "pkg:npm/@types/node@20.1.0?checksum=sha512-Zm9v"},
		{Name: "serde", Digest: strings.Repeat("ab", 32), URI: s.Predicate.BuildDefinition.ResolvedDependencies[2].URI},
		{Name: "g", Digest: strings.Repeat("c", 40), URI: s.Predicate.BuildDefinition.ResolvedDependencies[3].URI},
		{Name: "old.tar", Digest: "sha1:AAAA", URI: "pkg:nix-fetch/old.tar?hash=sha1:AAAA"},
	}
	if len(m.Dependencies) != len(want) {
		t.Fatalf("%d dependencies", len(m.Dependencies))
	}
	for i, d := range m.Dependencies {
		if d != want[i] {
			t.Errorf("dependency %d = %+v, want %+v", i, d, want[i])
		}
		if d.Name == "" || d.Digest == "" {
			t.Errorf("dependency %d has no name or digest: %+v", i, d)
		}
	}
}

func FuzzPackageName(f *testing.F) {
	for _, s := range []string{"pkg:golang/a/b@v1", "pkg:npm/%40s/n@1?x", "pkg:", "pkg:/x/@/@", "https://x/y?z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, uri string) {
		name := PackageName(uri)
		if len(name) > len(uri) {
			t.Fatalf("name %q longer than %q", name, uri)
		}
	})
}
