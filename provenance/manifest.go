package provenance

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// Manifest is manifest.json (docs/api.md#the-result-tarball): a human summary derived from the
// provenance, in the field order of the peer's Python-era file (reference
// §D.3) plus the artifacts. It is not attested; provenance.json is.
type Manifest struct {
	GitCommit       string               `json:"git_commit"`
	GitTree         string               `json:"git_tree"`
	ArchiveSHA256   string               `json:"archive_sha256,omitempty"`
	SourceURI       string               `json:"source_uri"`
	BuildType       string               `json:"build_type"`
	BuildCommand    string               `json:"build_command"`
	LockfileHash    string               `json:"lockfile_hash"`
	Toolchain       ManifestToolchain    `json:"toolchain"`
	InputMerkleRoot string               `json:"input_merkle_root"`
	Dependencies    []ManifestDependency `json:"dependencies"`
	Artifacts       []ManifestArtifact   `json:"artifacts"`
	InvocationID    string               `json:"invocation_id"`
	StartedOn       string               `json:"started_on"`
	FinishedOn      string               `json:"finished_on"`
}

// ManifestToolchain is written as {"<tool>_hash": sha256, "<tool>_version": …}
// in toolchain order.
type ManifestToolchain []Tool

// MarshalJSON writes the tools in order.
func (t ManifestToolchain) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, tool := range t {
		if i > 0 {
			b.WriteByte(',')
		}
		for j, kv := range [][2]string{{tool.Name + "_hash", tool.SHA256}, {tool.Name + "_version", tool.Version}} {
			if j > 0 {
				b.WriteByte(',')
			}
			k, err := marshalNoEscape(kv[0])
			if err != nil {
				return nil, err
			}
			v, err := marshalNoEscape(kv[1])
			if err != nil {
				return nil, err
			}
			b.Write(k)
			b.WriteByte(':')
			b.Write(v)
		}
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// ManifestDependency is one resolved dependency. Name is the provenance's
// name or, when it has none, the package name of its URI (pkg:golang/M@V →
// M, pkg:npm/@s/n@V → @s/n). Digest is its sha256 value, else the sha512
// integrity, the Go module hash as go.sum writes it ("h1:…"), the git
// commit, or another algorithm as "algo:value"; empty only when it has none.
type ManifestDependency struct {
	Name   string `json:"name"`
	Digest string `json:"digest"`
	URI    string `json:"uri"`
}

// ManifestArtifact is one subject.
type ManifestArtifact struct {
	Name string `json:"name"`
	Hash string `json:"hash"`
}

// NewManifest derives the manifest from a statement.
func NewManifest(s *Statement) *Manifest {
	bd := s.Predicate.BuildDefinition
	rd := s.Predicate.RunDetails
	m := &Manifest{
		GitCommit:     bd.ExternalParameters.Source.Digest["gitCommit"],
		GitTree:       bd.ExternalParameters.Source.Digest["gitTree"],
		ArchiveSHA256: bd.ExternalParameters.Source.Digest["sha256"],
		SourceURI:     bd.ExternalParameters.Source.URI,
		BuildType:     bd.BuildType,
		BuildCommand:  bd.ExternalParameters.BuildCommand,
		LockfileHash:  bd.InternalParameters.LockfileHash["sha256"],
		Toolchain:     ManifestToolchain(bd.InternalParameters.Toolchain),
		Dependencies:  []ManifestDependency{},
		Artifacts:     []ManifestArtifact{},
		InvocationID:  rd.Metadata.InvocationID,
		StartedOn:     rd.Metadata.StartedOn,
	}
	if rd.Metadata.FinishedOn != nil {
		m.FinishedOn = *rd.Metadata.FinishedOn
	}
	for _, b := range rd.Byproducts {
		if b.Name == MerkleRootName {
			m.InputMerkleRoot = b.Digest["sha256"]
		}
	}
	for _, d := range bd.ResolvedDependencies {
		name := d.Name
		if name == "" {
			name = PackageName(d.URI)
		}
		m.Dependencies = append(m.Dependencies, ManifestDependency{Name: name, Digest: manifestDigest(d.Digest), URI: d.URI})
	}
	for _, sub := range s.Subject {
		m.Artifacts = append(m.Artifacts, ManifestArtifact{Name: sub.Name, Hash: sub.Digest["sha256"]})
	}
	return m
}

// MarshalManifest writes m as pretty JSON (2-space indent) ending in a newline.
func MarshalManifest(m *Manifest) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(m); err != nil {
		return nil, fmt.Errorf("marshal manifest: %w", err)
	}
	return b.Bytes(), nil
}

// manifestDigest picks one digest of a dependency for the manifest.
func manifestDigest(d Digest) string {
	for _, k := range []string{"sha256", "sha512", "gitCommit"} {
		if v, ok := d[k]; ok && v != "" {
			return v
		}
	}
	if v, ok := d["h1"]; ok && v != "" {
		return "h1:" + strings.TrimPrefix(v, "h1:") // go.sum's notation
	}
	keys := make([]string, 0, len(d))
	for k, v := range d {
		if v != "" {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return ""
	}
	slices.Sort(keys)
	return keys[0] + ":" + d[keys[0]]
}

// PackageName is the package name of a package URL without its version,
// qualifiers and subpath ("pkg:golang/github.com/a/b@v1.0.0" →
// "github.com/a/b", "pkg:npm/%40scope/name@1.0.0" → "@scope/name",
// "pkg:nix-fetch/src.tar.gz?hash=…" → "src.tar.gz"). Another URI is
// returned without its query and fragment.
func PackageName(uri string) string {
	rest, ok := strings.CutPrefix(uri, "pkg:")
	if !ok {
		if i := strings.IndexAny(uri, "?#"); i >= 0 {
			uri = uri[:i]
		}
		return uri
	}
	if i := strings.IndexAny(rest, "?#"); i >= 0 {
		rest = rest[:i]
	}
	_, path, ok := strings.Cut(strings.TrimLeft(rest, "/"), "/") // drop the type
	if !ok {
		return ""
	}
	// The version follows the last '@' that is not the first character
	// of a path segment (an npm scope is "@scope").
	for i := len(path) - 1; i > 0; i-- {
		if path[i] == '@' && path[i-1] != '/' {
			path = path[:i]
			break
		}
	}
	if p, err := url.PathUnescape(path); err == nil {
		path = p
	}
	return path
}
