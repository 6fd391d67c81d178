package verify

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/kettle-build/kettle/abi"

	"github.com/kettle-build/kettle/provenance"
)

// Result directory layout.
const (
	ProvenanceFile = "provenance.json"
	EvidenceFile   = "evidence.json"
	ArtifactsDir   = "artifacts"
	BuildConfigDir = "build-config"
)

// maxProvenance bounds provenance.json (a huge dependency list is a few MB).
const maxProvenance = 64 << 20

func readLimited(fsys fs.FS, name string, limit int64) ([]byte, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnreadable, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnreadable, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrUnreadable, name, limit)
	}
	return b, nil
}

// lockfileCheck compares the lockfile kept in build-config/ (when the
// directory is there, as in kettle's result tarballs) with the provenance's
// lockfileHash.
func lockfileCheck(ctx context.Context, fsys fs.FS, stmt *provenance.Statement) (Check, bool) {
	ents, err := fs.ReadDir(fsys, BuildConfigDir)
	if err != nil || stmt == nil {
		return Check{}, false
	}
	c := Check{Name: "Lockfile in build-config/ matches lockfileHash"}
	want := strings.ToLower(stmt.Predicate.BuildDefinition.InternalParameters.LockfileHash["sha256"])
	var files []string
	for _, e := range ents {
		if e.Type().IsRegular() {
			files = append(files, e.Name())
		}
	}
	if len(files) != 1 {
		c.Detail = fmt.Sprintf("build-config/ holds %d files, want exactly the lockfile", len(files))
		return c, true
	}
	got, err := hashFS(ctx, fsys, path.Join(BuildConfigDir, files[0]))
	switch {
	case err != nil:
		c.Detail = err.Error()
	case got != want:
		c.Detail = fmt.Sprintf("%s has sha256 %s, provenance says %s", files[0], got, want)
	default:
		c.OK, c.Detail = true, files[0]+" sha256 "+got
	}
	return c, true
}

// Check is one verification step of a bundle.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
	// Warning marks a passed check that proves less than its name
	// suggests: with insecure evidence (accepted by --allow-insecure) the
	// "attested" checksum and nonce are unsigned bytes anyone can write.
	Warning bool `json:"warning,omitempty"`
	Skipped bool `json:"skipped,omitempty"` // not evaluated because a prerequisite failed
	// Show prints Detail in the table even when the check passed (the
	// computed digests of --igvm/--image are worth seeing).
	Show bool `json:"-"`
}

// Report is the outcome of Bundle. The header fields come from the
// provenance (empty when it cannot be parsed).
type Report struct {
	Dir              string `json:"dir"`
	BuildID          string `json:"build_id"`
	BuiltAt          string `json:"built_at"`
	FinishedAt       string `json:"finished_at,omitempty"`
	Toolchain        string `json:"toolchain"`
	GitCommit        string `json:"git_commit"`
	GitTree          string `json:"git_tree,omitempty"`
	SourceSHA256     string `json:"source_sha256,omitempty"` // the uploaded archive's sha256, when the source was one
	SourceURI        string `json:"source_uri,omitempty"`
	BuilderID        string `json:"builder_id,omitempty"`
	BuildType        string `json:"build_type,omitempty"`
	Platform         string `json:"platform"`
	ProvenanceSHA256 string `json:"provenance_sha256"`
	Nonce            string `json:"nonce,omitempty"` // the bound nonce (hex), when the binding has one
	// Attested: the evidence is genuine TEE evidence (not "insecure").
	Attested  bool     `json:"attested"`
	Claims    *Claims  `json:"claims,omitempty"`
	Checks    []Check  `json:"checks"`
	Warnings  []string `json:"warnings,omitempty"`
	PassedAll bool     `json:"passed"`

	evidenceOK bool // the evidence check passed (genuine, or insecure and allowed)
}

// Passed reports whether every check passed (and there is at least one).
func (r *Report) Passed() bool {
	if r == nil || len(r.Checks) == 0 {
		return false
	}
	for _, c := range r.Checks {
		if !c.OK {
			return false
		}
	}
	return true
}

// Failed returns the checks that did not pass.
func (r *Report) Failed() []Check {
	var out []Check
	for _, c := range r.Checks {
		if !c.OK {
			out = append(out, c)
		}
	}
	return out
}

// JSON returns the machine-readable report (indented, trailing newline).
func (r *Report) JSON() ([]byte, error) {
	r.PassedAll = r.Passed()
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

func (r *Report) add(c Check) { r.Checks = append(r.Checks, c) }

// Bundle verifies a result directory: evidence.json is genuine, the statement
// is SLSA v1 provenance, the evidence binds sha256(provenance.json) (and the
// nonce, with WithNonce), every subject is in artifacts/ (or the directory
// root) with its digest and nothing unlisted hides in artifacts/, and every
// expectation holds. At least one expectation (WithNonce, WithSourceSHA256,
// WithGitCommit, WithGitTree, WithBuilderID, WithSourceURI, a measurement or
// PCR policy) is required, or WithoutExpectationsUnsafe. The error is non-nil
// only when the options are invalid (ErrOption) or the inputs cannot be read
// (ErrUnreadable); failed checks are in the Report.
func Bundle(ctx context.Context, dir string, opts ...BundleOption) (*Report, error) {
	o, err := collectBundle(opts)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnreadable, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%w: %s is not a directory", ErrUnreadable, dir)
	}
	// `kettle build DIR` writes DIR/kettle-build/: accept the project directory too.
	if _, err := os.Stat(filepath.Join(dir, ProvenanceFile)); errors.Is(err, fs.ErrNotExist) {
		if _, err := os.Stat(filepath.Join(dir, "kettle-build", ProvenanceFile)); err == nil {
			dir = filepath.Join(dir, "kettle-build")
		}
	}
	return bundle(ctx, os.DirFS(dir), dir, o)
}

// BundleFS is Bundle on a result directory held in fsys (its root, or its
// kettle-build/), for callers without a file system: the WebAssembly build
// verifies a tarball read into memory (see BundleTarball). name is the
// Report's Dir. Symbolic links are followed only as far as fsys follows
// them; an artifact that fs.Lstat reports as a link fails its check.
func BundleFS(ctx context.Context, fsys fs.FS, name string, opts ...BundleOption) (*Report, error) {
	o, err := collectBundle(opts)
	if err != nil {
		return nil, err
	}
	if _, err := fs.Stat(fsys, ProvenanceFile); errors.Is(err, fs.ErrNotExist) {
		if _, err := fs.Stat(fsys, path.Join("kettle-build", ProvenanceFile)); err == nil {
			if fsys, err = fs.Sub(fsys, "kettle-build"); err != nil {
				return nil, fmt.Errorf("%w: %w", ErrUnreadable, err)
			}
		}
	}
	return bundle(ctx, fsys, name, o)
}

func bundle(ctx context.Context, fsys fs.FS, dir string, o *options) (*Report, error) {
	if err := o.image.load(); err != nil {
		return nil, err
	}
	defer o.image.close()
	provRaw, err := readLimited(fsys, ProvenanceFile, maxProvenance)
	if err != nil {
		return nil, err
	}
	evRaw, err := readLimited(fsys, EvidenceFile, abi.MaxEnvelope)
	if err != nil {
		return nil, err
	}
	r, stmt := verifyDocs(ctx, dir, provRaw, evRaw, o)
	if err := ctx.Err(); err != nil {
		return r, err
	}
	if !o.skipArtifacts {
		if err := checkArtifacts(ctx, r, fsys, stmt); err != nil {
			return r, err
		}
	}
	if c, ok := lockfileCheck(ctx, fsys, stmt); ok {
		r.add(c)
	}
	if o.hasNonce {
		r.add(nonceCheck(r, o.nonce))
	}
	if r.Claims != nil && r.evidenceOK {
		r.Checks = append(r.Checks, evidencePolicy(r.Claims, o.policy)...)
		if o.image.igvmPath == "" {
			r.Warnings = append(r.Warnings, imageWarnings(r.Claims.Platform, o.policy)...)
		}
	} else {
		for _, c := range evidencePolicy(&Claims{Platform: r.Platform}, o.policy) {
			r.add(Check{Name: c.Name, Detail: "not checked: the evidence is not genuine", Skipped: true})
		}
	}
	r.Checks = append(r.Checks, o.image.checks(ctx, r)...)
	if stmt != nil {
		r.Checks = append(r.Checks, provenanceChecks(stmt, o.expect)...)
	} else {
		for _, c := range provenanceChecks(&provenance.Statement{}, o.expect) {
			r.add(Check{Name: c.Name, Detail: "not checked: the provenance cannot be parsed", Skipped: true})
		}
	}
	if o.noExpectations {
		r.Warnings = append(r.Warnings, NoExpectationsWarning)
	}
	r.PassedAll = r.Passed()
	return r, nil
}

// NoExpectationsWarning is the Report warning of a verification that
// expected nothing (WithoutExpectationsUnsafe).
const NoExpectationsWarning = "nothing was expected of this build (no nonce, source digest, git commit or tree, builder, source URI or measurement): it is self-consistent and its evidence is checked, but it may be anyone's build of anything"

// Row names of the evidence check.
const (
	checkEvidence         = "Evidence is genuine TEE evidence"
	checkInsecure         = "Evidence: none — the build ran without a TEE"
	checkInsecureAccepted = checkInsecure + " (accepted: --allow-insecure)"
	unsignedDetail        = "not attested: insecure evidence is unsigned, anyone can write it"
)

// verifyDocs runs every check that needs only provenance.json and evidence.json.
func verifyDocs(ctx context.Context, dir string, provRaw, evRaw []byte, o *options) (*Report, *provenance.Statement) {
	sum := sha256.Sum256(provRaw)
	r := &Report{Dir: dir, ProvenanceSHA256: hex.EncodeToString(sum[:])}

	// 1. Evidence.
	claims, err := genuine(ctx, evRaw, o)
	r.Claims = claims
	if claims != nil {
		r.Platform = claims.Platform
		r.Warnings = append(r.Warnings, claims.Warnings...)
	}
	ev := Check{Name: checkEvidence}
	insecure := r.Platform == PlatformInsecure
	switch {
	case insecure && err == nil:
		// Accepted, but nothing genuine about it: never a ✅.
		ev.Name, ev.Warning = checkInsecureAccepted, true
		ev.Detail = "the evidence is unsigned report data; it proves nothing about where or how this was built"
	case insecure:
		ev.Name = checkInsecure
	case r.Platform != "":
		ev.Name += " (" + r.Platform + ")"
	}
	if err != nil {
		ev.Detail = err.Error()
	} else {
		ev.OK = true
		if !insecure {
			ev.Detail = evidenceSummary(claims)
		}
	}
	r.evidenceOK = ev.OK
	r.Attested = ev.OK && !insecure
	r.add(ev)

	// 2. Statement.
	stmt, stErr := parseStatement(provRaw)
	sc := Check{Name: "Provenance is an in-toto v1 Statement with an SLSA v1 predicate", OK: stErr == nil}
	if stErr != nil {
		sc.Detail = stErr.Error()
	} else {
		sc.Detail = fmt.Sprintf("%d subject(s)", len(stmt.Subject))
	}
	r.add(sc)
	if stmt != nil {
		fillHeader(r, stmt)
	}

	// 3. Checksum binding.
	cc := Check{Name: "Attested checksum matches provenance.json"}
	switch {
	case err != nil || claims == nil:
		cc.Skipped, cc.Detail = true, "not checked: the evidence is not genuine"
	default:
		cc.OK, cc.Detail = checksumBinding(claims.ReportData, provRaw, sum[:])
		if nonce, ok := boundNonce(claims.ReportData); ok {
			r.Nonce = hex.EncodeToString(nonce)
		}
		if cc.OK && insecure {
			cc.Warning, cc.Detail = true, cc.Detail+"; "+unsignedDetail
		}
	}
	r.add(cc)
	return r, stmt
}

func evidenceSummary(c *Claims) string {
	var parts []string
	parts = append(parts, c.Platform)
	if c.Generation != "" {
		parts = append(parts, c.Generation)
	}
	if c.QuoteVersion != 0 {
		parts = append(parts, fmt.Sprintf("quote v%d", c.QuoteVersion))
	}
	if c.TCBStatus != "" {
		parts = append(parts, "TCB "+c.TCBStatus)
	}
	return strings.Join(parts, ", ") + fmt.Sprintf("; %d steps passed", len(c.Steps))
}

func parseStatement(raw []byte) (*provenance.Statement, error) {
	s, err := provenance.Parse(raw)
	if err != nil {
		return nil, err
	}
	if s.Type != provenance.StatementType {
		return s, fmt.Errorf("_type is %q, want %q", s.Type, provenance.StatementType)
	}
	if s.PredicateType != provenance.PredicateType {
		return s, fmt.Errorf("predicateType is %q, want %q", s.PredicateType, provenance.PredicateType)
	}
	if len(s.Subject) == 0 {
		return s, errors.New("the statement lists no subjects")
	}
	seen := map[string]bool{}
	for _, sub := range s.Subject {
		if !validArtifactName(sub.Name) {
			return s, fmt.Errorf("subject name %q is not a plain relative path", sub.Name)
		}
		if seen[sub.Name] {
			return s, fmt.Errorf("subject %q is listed twice", sub.Name)
		}
		seen[sub.Name] = true
		if d, err := hex.DecodeString(sub.Digest["sha256"]); err != nil || len(d) != sha256.Size {
			return s, fmt.Errorf("subject %q has no sha256 digest", sub.Name)
		}
	}
	return s, nil
}

func validArtifactName(name string) bool {
	return name != "" && filepath.IsLocal(name) && !strings.ContainsAny(name, "\\\x00") && filepath.Clean(name) == name
}

func fillHeader(r *Report, s *provenance.Statement) {
	md := s.Predicate.RunDetails.Metadata
	r.BuildID, r.BuiltAt = md.InvocationID, md.StartedOn
	if md.FinishedOn != nil {
		r.FinishedAt = *md.FinishedOn
	}
	src := s.Predicate.BuildDefinition.ExternalParameters.Source
	r.GitCommit, r.GitTree, r.SourceURI = src.Digest["gitCommit"], src.Digest["gitTree"], src.URI
	r.SourceSHA256 = src.Digest["sha256"]
	r.BuilderID = s.Predicate.RunDetails.Builder.ID
	r.BuildType = s.Predicate.BuildDefinition.BuildType
	tc := s.Predicate.BuildDefinition.InternalParameters.Toolchain
	for _, name := range []string{"rustc", "nix", "pnpm", "go", "node"} {
		if t, ok := tc.Get(name); ok {
			r.Toolchain = t.Version
			return
		}
	}
	for _, t := range tc {
		if t.Name != "kettle" {
			r.Toolchain = t.Version
			return
		}
	}
}

// checksumBinding compares the full 32-byte checksum the evidence binds with
// sha256(provenance.json). The peer's older 32-byte bindings hashed the
// compact JSON instead; those are accepted too when no nonce is bound (the
// compact form differs from the file only in whitespace, so both hashes
// commit to the same document). (The peer strips trailing zero bytes before comparing and
// so rejects 1 in 256 honest bundles; this compares all 32 bytes.)
func checksumBinding(bound, provRaw, sum []byte) (bool, string) {
	if len(bound) < 32 {
		return false, fmt.Sprintf("the evidence binds %d bytes, fewer than a 32-byte checksum", len(bound))
	}
	if len(bound) > 32 {
		if len(bound) < 48 {
			return false, fmt.Sprintf("the evidence binds %d bytes: a checksum and a truncated nonce", len(bound))
		}
		for _, b := range bound[48:] {
			if b != 0 {
				return false, "the evidence binds non-zero bytes after checksum ‖ nonce"
			}
		}
	}
	got := bound[:32]
	if subtle.ConstantTimeCompare(got, sum) == 1 {
		return true, "sha256 " + hex.EncodeToString(sum)
	}
	if allZero(bound[32:]) {
		var compact bytes.Buffer
		if json.Compact(&compact, provRaw) == nil {
			c := sha256.Sum256(compact.Bytes())
			if subtle.ConstantTimeCompare(got, c[:]) == 1 {
				return true, "sha256 of the compact JSON " + hex.EncodeToString(c[:]) + " (older 32-byte binding)"
			}
		}
	}
	return false, fmt.Sprintf("provenance.json sha256 %x, attested checksum %x", sum, got)
}

func boundNonce(bound []byte) ([]byte, bool) {
	if len(bound) < 48 {
		return nil, false
	}
	return bound[32:48], true
}

func nonceCheck(r *Report, nonce []byte) Check {
	c := Check{Name: "Nonce matches the attestation"}
	if len(nonce) > 16 {
		c.Detail = fmt.Sprintf("the nonce is %d bytes; at most 16", len(nonce))
		return c
	}
	if r.Claims == nil || !r.evidenceOK {
		c.Skipped, c.Detail = true, "not checked: the evidence is not genuine"
		return c
	}
	bound, ok := boundNonce(r.Claims.ReportData)
	if !ok {
		c.Detail = "the evidence binds no nonce (a 32-byte checksum-only binding)"
		return c
	}
	want := make([]byte, 16)
	copy(want, nonce)
	c.OK = subtle.ConstantTimeCompare(bound, want) == 1
	c.Detail = "bound nonce " + hex.EncodeToString(bound)
	if c.OK && !r.Attested {
		c.Warning, c.Detail = true, c.Detail+"; "+unsignedDetail
	}
	return c
}

// checkArtifacts adds one check per subject and one for unlisted files.
func checkArtifacts(ctx context.Context, r *Report, fsys fs.FS, stmt *provenance.Statement) error {
	if stmt == nil {
		r.add(Check{Name: "Artifacts match their digests", Skipped: true, Detail: "not checked: the provenance cannot be parsed"})
		return nil
	}
	subjects := slices.Clone(stmt.Subject)
	checks := make([]Check, len(subjects))
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	var firstErr error
	var mu sync.Mutex
	for i, s := range subjects {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := subjectCheck(ctx, fsys, s)
			checks[i] = c
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	r.Checks = append(r.Checks, checks...)
	r.add(unlistedCheck(fsys, stmt))
	return nil
}

func subjectCheck(ctx context.Context, fsys fs.FS, s provenance.Subject) (Check, error) {
	c := Check{Name: fmt.Sprintf("Artifact `%s` matches its sha256", s.Name)}
	if !validArtifactName(s.Name) {
		c.Detail = "invalid subject name"
		return c, nil
	}
	want := strings.ToLower(s.Digest["sha256"])
	var found []string
	for _, rel := range []string{path.Join(ArtifactsDir, s.Name), s.Name} {
		fi, err := fs.Lstat(fsys, rel)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return c, fmt.Errorf("%w: %w", ErrUnreadable, err)
		}
		if !fi.Mode().IsRegular() {
			c.Detail = rel + " is not a regular file"
			return c, nil
		}
		got, err := hashFS(ctx, fsys, rel)
		if err != nil {
			return c, fmt.Errorf("%w: %w", ErrUnreadable, err)
		}
		if got != want {
			c.Detail = fmt.Sprintf("%s has sha256 %s, provenance says %s", rel, got, want)
			return c, nil
		}
		found = append(found, rel)
	}
	if len(found) == 0 {
		c.Detail = "missing: neither artifacts/" + s.Name + " nor " + s.Name + " exists"
		return c, nil
	}
	c.OK = true
	c.Detail = strings.Join(found, ", ") + " sha256 " + want
	return c, nil
}

func unlistedCheck(fsys fs.FS, stmt *provenance.Statement) Check {
	c := Check{Name: "No unlisted files in artifacts/"}
	listed := map[string]bool{}
	for _, s := range stmt.Subject {
		listed[filepath.ToSlash(s.Name)] = true
	}
	var extra []string
	err := fs.WalkDir(fsys, ArtifactsDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel := strings.TrimPrefix(p, ArtifactsDir+"/")
		if !listed[rel] || !d.Type().IsRegular() {
			extra = append(extra, rel)
		}
		return nil
	})
	switch {
	case errors.Is(err, fs.ErrNotExist):
		c.OK, c.Detail = true, "no artifacts/ directory"
	case err != nil:
		c.Detail = err.Error()
	case len(extra) > 0:
		sort.Strings(extra)
		c.Detail = "not listed in provenance.json (or not regular files): " + strings.Join(extra, ", ")
	default:
		c.OK = true
	}
	return c
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// HashFile returns the lower-case hex SHA-256 of the file at path.
func HashFile(ctx context.Context, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return hashReader(ctx, f)
}

func hashFS(ctx context.Context, fsys fs.FS, name string) (string, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return hashReader(ctx, f)
}

func hashReader(ctx context.Context, f io.Reader) (string, error) {
	h := sha256.New()
	buf := bufPool.Get().(*[]byte)
	defer bufPool.Put(buf)
	if _, err := io.CopyBuffer(h, ctxReader{ctx, f}, *buf); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// imageWarnings says what genuine evidence does not prove without an image
// policy: which guest ran.
func imageWarnings(platform string, p Policy) []string {
	switch platform {
	case PlatformAzSNP, PlatformAzTDX:
		if len(p.PCRs) == 0 {
			return []string{"no --pcr policy: on Azure the launch measurement is the paravisor's, so this proves that some Azure confidential VM's vTPM bound this build, not which guest image ran (pin PCRs, e.g. 4, 7, 11)"}
		}
	case PlatformSNP, PlatformTDX, PlatformGCPSNP, PlatformGCPTDX, PlatformDstack:
		if len(p.Measurements) == 0 {
			return []string{"no --measurement policy: any guest image on genuine hardware passes (pin the launch measurement)"}
		}
	}
	return nil
}
