// Package provenance models the in-toto Statement carrying SLSA v1
// provenance, in the peer's exact schema (reference/kettle-peer.md §C):
// struct field order is the serialization order, so a statement written by
// Marshal is byte-compatible with the peer's verifier.
package provenance

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Fixed type URIs of the statement.
const (
	StatementType = "https://in-toto.io/Statement/v1"
	PredicateType = "https://slsa.dev/provenance/v1"
	// MerkleRootName is the byproduct that holds the input Merkle root.
	MerkleRootName = "input_merkle_root"
)

// Digest maps an algorithm (sha256, sha512, gitCommit, gitTree) to a value.
// encoding/json writes map keys sorted, which is the peer's order for every
// digest it writes (gitCommit < gitTree; single-key elsewhere).
type Digest map[string]string

// Statement is the whole provenance.json document.
type Statement struct {
	Type          string    `json:"_type"`
	Predicate     Predicate `json:"predicate"`
	PredicateType string    `json:"predicateType"`
	Subject       []Subject `json:"subject"`
}

// Predicate is the SLSA provenance v1 predicate.
type Predicate struct {
	BuildDefinition BuildDefinition `json:"buildDefinition"`
	RunDetails      RunDetails      `json:"runDetails"`
}

// BuildDefinition records what was built and from which inputs.
type BuildDefinition struct {
	BuildType            string             `json:"buildType"`
	ExternalParameters   ExternalParameters `json:"externalParameters"`
	InternalParameters   InternalParameters `json:"internalParameters"`
	ResolvedDependencies []Dependency       `json:"resolvedDependencies"`
}

// ExternalParameters are the client-controlled inputs.
type ExternalParameters struct {
	BuildCommand string `json:"buildCommand"`
	Source       Source `json:"source"`
}

// Source identifies the source tree: git commit and tree (commit empty when
// the source was not a git checkout; then sha256 names the uploaded archive).
type Source struct {
	Digest Digest `json:"digest"`
	URI    string `json:"uri"`
}

// InternalParameters are the builder-controlled inputs.
type InternalParameters struct {
	Evaluation   *Evaluation  `json:"evaluation,omitempty"`   // nix only
	FlakeInputs  []FlakeInput `json:"flakeInputs,omitempty"`  // nix only
	LockfileHash Digest       `json:"lockfileHash,omitempty"` // absent: no lockfile (a Nix flake without inputs)
	Toolchain    Toolchain    `json:"toolchain"`
	// Sandbox is set only when the build ran without isolation
	// (`--sandbox=none`); absent means the bubblewrap sandbox was used.
	Sandbox string `json:"sandbox,omitempty"`
	// FetchHosts are the destinations the fetch phase asked kettle's
	// egress proxy for, sorted, refused ones marked; absent when it asked
	// for none.
	FetchHosts []FetchHost `json:"fetchHosts,omitempty"`
	// BuildConfig is the parsed kettle.toml the build followed (package
	// buildcfg); absent without one.
	BuildConfig json.RawMessage `json:"buildConfig,omitempty"`
}

// FetchHost is one destination of the fetch phase ("host:port").
type FetchHost struct {
	Address string `json:"address"`
	Refused bool   `json:"refused,omitempty"`
}

// Evaluation summarises a Nix evaluation.
type Evaluation struct {
	DerivationCount int `json:"derivationCount"`
	FetchCount      int `json:"fetchCount"`
}

// FlakeInput is one root input of flake.lock.
type FlakeInput struct {
	Name    string `json:"name"`
	NarHash string `json:"narHash"`
}

// Dependency is one resolved input, as a package URL with a digest.
type Dependency struct {
	Annotations *Annotations `json:"annotations,omitempty"` // nix only
	Digest      Digest       `json:"digest"`
	Name        string       `json:"name,omitempty"`
	URI         string       `json:"uri"`
}

// Annotations describe a Nix fixed-output derivation.
type Annotations struct {
	DrvPath        string `json:"drvPath"`
	OutputHashMode string `json:"outputHashMode,omitempty"`
	URL            string `json:"url,omitempty"`
	URLs           string `json:"urls,omitempty"`
}

// RunDetails records who built it and when.
type RunDetails struct {
	Builder    Builder     `json:"builder"`
	Byproducts []Byproduct `json:"byproducts"`
	Metadata   Metadata    `json:"metadata"`
}

// Builder identifies the build platform.
type Builder struct {
	ID string `json:"id"`
}

// Byproduct is a named digest produced by the build.
type Byproduct struct {
	Digest Digest `json:"digest"`
	Name   string `json:"name"`
}

// Metadata times one invocation.
type Metadata struct {
	InvocationID string  `json:"invocationId"`
	StartedOn    string  `json:"startedOn"`
	FinishedOn   *string `json:"finishedOn"`
}

// Subject is one artifact.
type Subject struct {
	Digest Digest `json:"digest"`
	Name   string `json:"name"`
}

// Tool is one toolchain binary: its --version text and the sha256 of the file.
type Tool struct {
	Name    string
	Version string
	SHA256  string
}

// Toolchain is an ordered list of tools, serialised as a JSON object in list
// order (the peer writes e.g. cargo, rustc, kettle: not alphabetical).
type Toolchain []Tool

type toolJSON struct {
	Digest  Digest `json:"digest"`
	Version string `json:"version"`
}

// MarshalJSON writes {"<name>":{"digest":{"sha256":…},"version":…},…} in order.
func (t Toolchain) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, tool := range t {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := json.Marshal(tool.Name)
		if err != nil {
			return nil, err
		}
		v, err := marshalNoEscape(toolJSON{Digest{"sha256": tool.SHA256}, tool.Version})
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON reads the object keeping its key order.
func (t *Toolchain) UnmarshalJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("toolchain: want object")
	}
	var out Toolchain
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		name, _ := tok.(string)
		var v toolJSON
		if err := dec.Decode(&v); err != nil {
			return fmt.Errorf("toolchain %q: %w", name, err)
		}
		out = append(out, Tool{Name: name, Version: v.Version, SHA256: v.Digest["sha256"]})
	}
	if _, err := dec.Token(); err != nil {
		return err
	}
	*t = out
	return nil
}

// Get returns the named tool.
func (t Toolchain) Get(name string) (Tool, bool) {
	for _, tool := range t {
		if tool.Name == name {
			return tool, true
		}
	}
	return Tool{}, false
}

func marshalNoEscape(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// Marshal writes s as the peer does (serde_json pretty): 2-space indent, no
// HTML escaping, no trailing newline. These bytes are what gets attested.
func Marshal(s *Statement) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(s); err != nil {
		return nil, fmt.Errorf("marshal provenance: %w", err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// Parse reads a provenance.json document.
func Parse(data []byte) (*Statement, error) {
	var s Statement
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("parse provenance: %w", err)
	}
	return &s, nil
}
