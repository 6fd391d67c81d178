package verify

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/kettle-build/kettle/provenance"
	"github.com/kettle-build/kettle/verify/snp"
)

// Policy is what a verifier expects beyond genuineness. Each field applies
// only when set. The JSON keys are the flag names of `kettle verify`.
type Policy struct {
	// BuilderID must equal runDetails.builder.id.
	BuilderID string `json:"builder-id,omitempty"`
	// SourceURI must equal externalParameters.source.uri.
	SourceURI string `json:"source-uri,omitempty"`
	// GitCommit must equal the source's gitCommit (full hash, any case).
	GitCommit string `json:"git-commit,omitempty"`
	// GitTree must equal the source's gitTree (full hash, any case).
	GitTree string `json:"git-tree,omitempty"`
	// SourceSHA256 must equal the source's sha256 digest: the sha256 of the
	// uploaded source archive.
	SourceSHA256 string `json:"source-sha256,omitempty"`
	// Measurements is an allow-list (hex) of launch measurements: SNP
	// MEASUREMENT or TDX MRTD.
	Measurements []string `json:"measurement,omitempty"`
	// PCRs maps a PCR index to its required SHA-256 value (hex); Azure only.
	PCRs map[int]string `json:"pcr,omitempty"`
	// MinTCB is a minimum TCB: for SNP "bl=N,tee=N,snp=N,ucode=N[,fmc=N]" or
	// a 16-hex-digit TCB_VERSION (decoded per generation); for TDX the
	// 32-hex-digit TEE_TCB_SVN, compared component by component.
	MinTCB string `json:"min-tcb,omitempty"`
	// AllowDebug and AllowInsecure are WithAllowDebugUnsafe and
	// WithAllowInsecureUnsafe.
	AllowDebug    bool `json:"allow-debug,omitempty"`
	AllowInsecure bool `json:"allow-insecure,omitempty"`
}

// HasExpectations reports whether p expects something of the build itself
// (builder, source, commit, tree, archive digest, measurement or PCR), as
// opposed to only bounding the TCB or relaxing checks.
func (p Policy) HasExpectations() bool {
	return len(p.provenanceFields()) > 0 || len(p.Measurements) > 0 || len(p.PCRs) > 0
}

// provenanceFields names the fields set that concern the provenance.
func (p Policy) provenanceFields() []string {
	var out []string
	for _, kv := range [][2]string{{keyBuilderID, p.BuilderID}, {keySourceURI, p.SourceURI},
		{keyGitCommit, p.GitCommit}, {keyGitTree, p.GitTree}, {keySourceSHA256, p.SourceSHA256}} {
		if kv[1] != "" {
			out = append(out, kv[0])
		}
	}
	return out
}

// mergeEvidence combines the evidence fields of p and q: measurement lists
// are joined; a PCR or min-tcb given twice with different values is an
// ErrOption (a requirement is never silently replaced).
func (p Policy) mergeEvidence(q Policy) (Policy, error) {
	out := Policy{Measurements: append(slices.Clip(p.Measurements), q.Measurements...), MinTCB: p.MinTCB}
	if q.MinTCB != "" {
		if p.MinTCB != "" && !strings.EqualFold(p.MinTCB, q.MinTCB) {
			return p, optErr("two different min-tcb values: %q and %q", p.MinTCB, q.MinTCB)
		}
		out.MinTCB = q.MinTCB
	}
	if len(p.PCRs)+len(q.PCRs) > 0 {
		out.PCRs = map[int]string{}
		for k, v := range p.PCRs {
			out.PCRs[k] = v
		}
		for k, v := range q.PCRs {
			if old, ok := out.PCRs[k]; ok && !strings.EqualFold(old, v) {
				return p, optErr("two different values for PCR %d", k)
			}
			out.PCRs[k] = v
		}
	}
	return out, nil
}

// Validate checks the syntax of every field.
func (p Policy) Validate() error {
	for _, m := range p.Measurements {
		if b, err := hex.DecodeString(m); err != nil || len(b) != 48 {
			return fmt.Errorf("%w: measurement %q is not 48 bytes of hex", ErrPolicy, m)
		}
	}
	for i, v := range p.PCRs {
		if i < 0 || i > 23 {
			return fmt.Errorf("%w: PCR index %d out of range 0..23", ErrPolicy, i)
		}
		if b, err := hex.DecodeString(v); err != nil || len(b) != 32 {
			return fmt.Errorf("%w: PCR %d value is not 32 bytes of hex", ErrPolicy, i)
		}
	}
	for _, kv := range [][2]string{{keyGitCommit, p.GitCommit}, {keyGitTree, p.GitTree}, {keySourceSHA256, p.SourceSHA256}} {
		if kv[1] != "" {
			if err := checkHexField(kv[0], strings.ToLower(kv[1])); err != nil {
				return err
			}
		}
	}
	if p.MinTCB != "" {
		if _, err := parseMinTCB(p.MinTCB); err != nil {
			return err
		}
	}
	return nil
}

// LoadPolicy reads a JSON policy file (keys as the flags: "builder-id",
// "source-uri", "git-commit", "git-tree", "source-sha256", "measurement"
// [list], "pcr" {"N": hex},
// "min-tcb", "allow-debug", "allow-insecure"). Unknown keys are an error, so
// a typo cannot silently drop a requirement.
func LoadPolicy(path string) (Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Policy{}, fmt.Errorf("%w: policy: %w", ErrUnreadable, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var p Policy
	if err := dec.Decode(&p); err != nil {
		return Policy{}, fmt.Errorf("%w: policy %s: %w", ErrUnreadable, path, err)
	}
	if err := p.Validate(); err != nil {
		return Policy{}, err
	}
	return p, nil
}

type minTCB struct {
	parts *snp.TCB
	raw   *uint64
	svn   []byte
}

func parseMinTCB(s string) (*minTCB, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "=") {
		var t snp.TCB
		for _, kv := range strings.Split(s, ",") {
			k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
			n, err := strconv.ParseUint(v, 10, 8)
			if err != nil {
				return nil, fmt.Errorf("%w: min-tcb %q: %s is not 0..255", ErrPolicy, s, k)
			}
			switch k {
			case "bl":
				t.Bootloader = uint8(n)
			case "tee":
				t.TEE = uint8(n)
			case "snp":
				t.SNP = uint8(n)
			case "ucode", "microcode":
				t.Microcode = uint8(n)
			case "fmc":
				t.FMC = uint8(n)
			default:
				return nil, fmt.Errorf("%w: min-tcb %q: unknown component %q (bl, tee, snp, ucode, fmc)", ErrPolicy, s, k)
			}
		}
		return &minTCB{parts: &t}, nil
	}
	h := strings.TrimPrefix(strings.ToLower(s), "0x")
	switch len(h) {
	case 16:
		v, err := strconv.ParseUint(h, 16, 64)
		if err == nil {
			return &minTCB{raw: &v}, nil
		}
	case 32:
		b, err := hex.DecodeString(h)
		if err == nil {
			return &minTCB{svn: b}, nil
		}
	}
	return nil, fmt.Errorf("%w: min-tcb %q: want bl=N,tee=N,snp=N,ucode=N[,fmc=N], a 16-hex-digit SNP TCB_VERSION or a 32-hex-digit TDX TEE_TCB_SVN", ErrPolicy, s)
}

// evidencePolicy evaluates the policy fields that concern the evidence.
func evidencePolicy(c *Claims, p Policy) []Check {
	var out []Check
	if len(p.Measurements) > 0 {
		ch := Check{Name: "Launch measurement is in the allow-list"}
		got := hex.EncodeToString(c.Measurement)
		ch.OK = len(c.Measurement) > 0 && slices.ContainsFunc(p.Measurements, func(m string) bool { return strings.EqualFold(m, got) })
		if len(c.Measurement) == 0 {
			ch.Detail = "the evidence has no launch measurement (platform " + c.Platform + ")"
		} else {
			ch.Detail = "measurement " + got
		}
		out = append(out, ch)
	}
	idx := make([]int, 0, len(p.PCRs))
	for i := range p.PCRs {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	for _, i := range idx {
		ch := Check{Name: fmt.Sprintf("PCR[%d] matches the policy", i)}
		got, ok := c.PCRs[i]
		switch {
		case c.PCRs == nil:
			ch.Detail = "the evidence has no TPM PCRs (platform " + c.Platform + ")"
		case !ok:
			ch.Detail = "the TPM quote does not cover this PCR"
		default:
			ch.OK = strings.EqualFold(got.String(), p.PCRs[i])
			ch.Detail = "PCR value " + got.String()
		}
		out = append(out, ch)
	}
	if p.MinTCB != "" {
		out = append(out, minTCBCheck(c, p.MinTCB))
	}
	return out
}

func minTCBCheck(c *Claims, s string) Check {
	ch := Check{Name: "TCB is at least " + s}
	m, err := parseMinTCB(s)
	if err != nil {
		ch.Detail = err.Error()
		return ch
	}
	switch {
	case c.snpTCB != nil:
		want := m.parts
		if m.raw != nil {
			t := snp.DecodeTCB(c.snpTCB.gen, *m.raw)
			want = &t
		}
		if want == nil {
			ch.Detail = "min-tcb is a TDX TEE_TCB_SVN but the evidence is SEV-SNP"
			return ch
		}
		ch.OK = c.snpTCB.tcb.AtLeast(*want)
		ch.Detail = "reported TCB " + c.snpTCB.tcb.String()
	case c.tdxSVN != nil:
		if m.svn == nil {
			ch.Detail = "min-tcb is an SNP TCB but the evidence is TDX"
			return ch
		}
		ch.OK = true
		for i := range m.svn {
			ch.OK = ch.OK && c.tdxSVN[i] >= m.svn[i]
		}
		ch.Detail = "TEE_TCB_SVN " + hex.EncodeToString(c.tdxSVN)
	default:
		ch.Detail = "the evidence has no TCB (platform " + c.Platform + ")"
	}
	return ch
}

// check evaluates one provenance expectation.
func (e expectation) check(s *provenance.Statement) Check {
	src := s.Predicate.BuildDefinition.ExternalParameters.Source
	var name, what, got string
	exact := true
	switch e.key {
	case keyBuilderID:
		name, what, got = "Builder id is "+e.want, "builder id", s.Predicate.RunDetails.Builder.ID
	case keySourceURI:
		name, what, got = "Source URI is "+e.want, "source uri", src.URI
	case keyGitCommit:
		name, what, got, exact = "Git commit is "+e.want, "git commit", src.Digest["gitCommit"], false
	case keyGitTree:
		name, what, got, exact = "Git tree is "+e.want, "git tree", src.Digest["gitTree"], false
	case keySourceSHA256:
		name, what, got, exact = "Source archive sha256 is "+e.want, "source archive sha256", src.Digest["sha256"], false
	}
	ok := got == e.want || (!exact && got != "" && strings.EqualFold(got, e.want))
	c := Check{Name: name, OK: ok, Detail: what + " " + strconv.Quote(got)}
	if got == "" {
		c.Detail = "the provenance names no " + what
	}
	return c
}

// provenanceChecks evaluates every provenance expectation, in order given.
func provenanceChecks(s *provenance.Statement, exp []expectation) []Check {
	out := make([]Check, 0, len(exp))
	for _, e := range exp {
		out = append(out, e.check(s))
	}
	return out
}
