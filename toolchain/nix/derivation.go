package nix

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/kettle-build/kettle/provenance"
)

// ErrDerivation is wrapped by every problem with Nix's derivation JSON or
// a flake.lock.
var ErrDerivation = errors.New("invalid nix derivation data")

// StoreDir is the Nix store.
const StoreDir = "/nix/store"

// Derivation is the part of one `nix derivation show` entry kettle uses.
type Derivation struct {
	Path    string // full store path of the .drv
	Name    string
	Outputs map[string]Output
	Env     map[string]string
}

// Output is one output of a derivation. Hash is set for fixed-output
// derivations: hex (older Nix, with HashAlgo "sha256", "r:sha256",
// "text:sha256") or SRI (newer Nix, with Method).
type Output struct {
	Path     string `json:"path"`
	HashAlgo string `json:"hashAlgo"`
	Hash     string `json:"hash"`
	Method   string `json:"method"`
}

type drvJSON struct {
	Name    string            `json:"name"`
	Outputs map[string]Output `json:"outputs"`
	Env     map[string]any    `json:"env"`
}

// Graph is the parsed output of `nix derivation show [--recursive]`.
type Graph struct {
	Derivations  []Derivation // in drv-path order
	TopLevelKeys int          // number of top-level keys of the JSON
}

// ParseGraph reads both formats: the old one (an object keyed by drv path)
// and the new one ({"derivations": {<drv basename>: …}, "version": N}).
func ParseGraph(data []byte) (*Graph, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDerivation, err)
	}
	g := &Graph{TopLevelKeys: len(top)}
	drvs := top
	if raw, ok := top["derivations"]; ok {
		if err := json.Unmarshal(raw, &drvs); err != nil {
			return nil, fmt.Errorf("%w: derivations: %v", ErrDerivation, err)
		}
	}
	for key, raw := range drvs {
		if !strings.HasSuffix(key, ".drv") {
			continue
		}
		var d drvJSON
		if err := json.Unmarshal(raw, &d); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrDerivation, key, err)
		}
		path := key
		if !strings.HasPrefix(path, "/") {
			path = StoreDir + "/" + path
		}
		env := map[string]string{}
		for k, v := range d.Env {
			switch v := v.(type) {
			case string:
				env[k] = v
			case []any: // structured attrs
				var parts []string
				for _, p := range v {
					if s, ok := p.(string); ok {
						parts = append(parts, s)
					}
				}
				env[k] = strings.Join(parts, ",")
			}
		}
		name := d.Name
		if name == "" {
			name = env["name"]
		}
		if name == "" {
			name = "unknown"
		}
		g.Derivations = append(g.Derivations, Derivation{Path: path, Name: name, Outputs: d.Outputs, Env: env})
	}
	sort.Slice(g.Derivations, func(i, j int) bool { return g.Derivations[i].Path < g.Derivations[j].Path })
	return g, nil
}

// Fetch is one fixed-output derivation: an input pinned by its hash.
type Fetch struct {
	Name    string
	DrvPath string
	Algo    string // sha256, sha512, sha1, md5
	Hash    string // standard base64, as in SRI
	Mode    string // flat, nar, text (empty when unknown)
	URL     string
	URLs    string
}

// URI is the peer's package URL of the fetch.
func (f Fetch) URI() string { return "pkg:nix-fetch/" + f.Name + "?hash=" + f.Algo + ":" + f.Hash }

// Leaf is the fetch's input Merkle leaf (reference §D.1).
func (f Fetch) Leaf() string { return "fetch:" + f.Name + ":" + f.Algo + ":" + f.Hash }

// Dependency is the fetch's resolvedDependencies entry.
func (f Fetch) Dependency() provenance.Dependency {
	return provenance.Dependency{
		Annotations: &provenance.Annotations{DrvPath: f.DrvPath, OutputHashMode: f.Mode, URL: f.URL, URLs: f.URLs},
		Digest:      provenance.Digest{f.Algo: f.Hash},
		Name:        f.Name,
		URI:         f.URI(),
	}
}

// Fetches returns the fixed-output derivations of g sorted by name (ties in
// drv-path order), each hash normalised to algo + base64.
func (g *Graph) Fetches() ([]Fetch, error) {
	var out []Fetch
	for _, d := range g.Derivations {
		names := make([]string, 0, len(d.Outputs))
		for n := range d.Outputs {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			o := d.Outputs[n]
			if o.Hash == "" {
				continue
			}
			algo, b64, mode, err := normaliseHash(o)
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %v", ErrDerivation, d.Name, err)
			}
			out = append(out, Fetch{Name: d.Name, DrvPath: d.Path, Algo: algo, Hash: b64, Mode: mode, URL: d.Env["url"], URLs: d.Env["urls"]})
			break // the first output with a hash, as the peer
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

var hashSizes = map[string]int{"md5": 16, "sha1": 20, "sha256": 32, "sha512": 64}

// normaliseHash turns an output's hash (SRI, hex or nix base32) into the
// algorithm and standard base64 of the digest.
func normaliseHash(o Output) (algo, b64, mode string, err error) {
	mode = o.Method
	algo = o.HashAlgo
	switch {
	case strings.HasPrefix(algo, "r:"):
		algo, mode = algo[2:], "nar"
	case strings.HasPrefix(algo, "text:"):
		algo, mode = algo[5:], "text"
	case algo != "" && mode == "":
		mode = "flat"
	}
	h := o.Hash
	if a, rest, ok := strings.Cut(h, "-"); ok { // SRI
		if algo != "" && algo != a {
			return "", "", "", fmt.Errorf("hash algorithm %q does not match %q", a, algo)
		}
		algo = a
		size, known := hashSizes[algo]
		raw, err := base64.StdEncoding.DecodeString(rest)
		if !known || err != nil || len(raw) != size {
			return "", "", "", fmt.Errorf("malformed hash %q", h)
		}
		return algo, rest, mode, nil
	}
	if algo == "" {
		algo = "sha256"
	}
	size, known := hashSizes[algo]
	if !known {
		return "", "", "", fmt.Errorf("unknown hash algorithm %q", algo)
	}
	var raw []byte
	switch len(h) {
	case 2 * size:
		raw, err = hex.DecodeString(h)
	case (size*8 + 4) / 5:
		raw, err = decodeNix32(h, size)
	default:
		err = errors.New("wrong length")
	}
	if err != nil {
		return "", "", "", fmt.Errorf("malformed hash %q: %v", h, err)
	}
	return algo, base64.StdEncoding.EncodeToString(raw), mode, nil
}

const nix32Chars = "0123456789abcdfghijklmnpqrsvwxyz"

// decodeNix32 decodes Nix's base-32 (least significant digit last).
func decodeNix32(s string, size int) ([]byte, error) {
	out := make([]byte, size)
	n := len(s)
	for i := 0; i < n; i++ {
		c := strings.IndexByte(nix32Chars, s[n-1-i])
		if c < 0 {
			return nil, fmt.Errorf("invalid character %q", s[n-1-i])
		}
		b := i * 5
		j, k := b/8, uint(b%8)
		out[j] |= byte(c << k)
		if carry := c >> (8 - k); j+1 < size {
			out[j+1] |= byte(carry)
		} else if carry != 0 {
			return nil, errors.New("overflow")
		}
	}
	return out, nil
}

// FlakeInputs returns the root inputs of a flake.lock with their narHash,
// sorted by name; inputs that follow another (arrays) or have no narHash
// are left out, as the peer does.
func FlakeInputs(lock []byte) ([]provenance.FlakeInput, error) {
	var lf struct {
		Nodes map[string]struct {
			Inputs map[string]json.RawMessage `json:"inputs"`
			Locked *struct {
				NarHash string `json:"narHash"`
			} `json:"locked"`
		} `json:"nodes"`
		Root string `json:"root"`
	}
	dec := json.NewDecoder(bytes.NewReader(lock))
	if err := dec.Decode(&lf); err != nil {
		return nil, fmt.Errorf("%w: flake.lock: %v", ErrDerivation, err)
	}
	if lf.Root == "" {
		lf.Root = "root"
	}
	root, ok := lf.Nodes[lf.Root]
	if !ok {
		return nil, fmt.Errorf("%w: flake.lock has no root node", ErrDerivation)
	}
	var out []provenance.FlakeInput
	for name, raw := range root.Inputs {
		var key string
		if err := json.Unmarshal(raw, &key); err != nil {
			var obj struct {
				ID string `json:"id"`
			}
			if json.Unmarshal(raw, &obj) != nil || obj.ID == "" {
				continue // follows (an array) or unknown shape
			}
			key = obj.ID
		}
		node, ok := lf.Nodes[key]
		if !ok || node.Locked == nil || node.Locked.NarHash == "" {
			continue
		}
		out = append(out, provenance.FlakeInput{Name: name, NarHash: node.Locked.NarHash})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// MerkleLeaves are the peer's Nix leaves (§D.1): gitCommit, gitTree,
// lockfile hash, one "fetch:<name>:<algo>:<hash>" per fetch, nix hash and
// version.
func MerkleLeaves(gitCommit, gitTree, lockfileSHA256 string, fetches []Fetch, nix provenance.Tool) []string {
	l := []string{gitCommit, gitTree, lockfileSHA256}
	for _, f := range fetches {
		l = append(l, f.Leaf())
	}
	return append(l, nix.SHA256, nix.Version)
}
