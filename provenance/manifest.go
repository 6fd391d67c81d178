package provenance

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Manifest is manifest.json (SPEC §4): a human summary derived from the
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

// ManifestDependency is one resolved dependency; Digest is its sha256 (or
// sha512, or git commit) value, empty when it has none.
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
		var dig string
		for _, k := range []string{"sha256", "sha512", "gitCommit", "h1"} {
			if v, ok := d.Digest[k]; ok {
				dig = v
				break
			}
		}
		m.Dependencies = append(m.Dependencies, ManifestDependency{Name: d.Name, Digest: dig, URI: d.URI})
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
