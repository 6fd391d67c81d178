package tdx

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-tdx-guest/pcs"
)

// Collateral errors.
var (
	// ErrCollateral: collateral is malformed, expired, badly signed or does not
	// fit the quote.
	ErrCollateral = errors.New("Intel collateral")
	// ErrRevoked: the platform TCB, the QE or a certificate is revoked.
	ErrRevoked = errors.New("revoked")
	// ErrNoCollateral: no TCB info for the platform's FMSPC is available.
	ErrNoCollateral = errors.New("no collateral for this platform")
)

// Collateral is Intel PCS collateral, as served by the PCS v4 API: raw JSON
// bodies (signatures cover the exact bytes of the inner object), PEM issuer
// chains, and DER CRLs.
type Collateral struct {
	TCBInfo         map[string][]byte // lower-case FMSPC → {"tcbInfo":…,"signature":…}
	TCBInfoChain    []byte            // PEM: TCB signing certificate, root
	QEIdentity      []byte            // {"enclaveIdentity":…,"signature":…}
	QEIdentityChain []byte            // PEM
	PCKCRL          map[string][]byte // "platform" / "processor" → DER CRL
	RootCRL         []byte            // DER CRL of the Intel SGX Root CA
}

// LoadCollateralDir reads collateral files named as in the fixtures:
// tcb_info_<fmspc>.json, tcb_signing_chain.pem, td_qe_identity.json,
// qe_identity_signing_chain.pem, pck_crl_<platform|processor>.der,
// root_ca_crl.der. Missing files are left empty.
func LoadCollateralDir(dir string) (*Collateral, error) {
	c := &Collateral{TCBInfo: map[string][]byte{}, PCKCRL: map[string][]byte{}}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read collateral: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		var dst *[]byte
		switch {
		case strings.HasPrefix(name, "tcb_info_") && strings.HasSuffix(name, ".json"):
			fmspc := strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(name, "tcb_info_"), ".json"))
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				return nil, err
			}
			c.TCBInfo[fmspc] = b
			continue
		case strings.HasPrefix(name, "pck_crl_") && strings.HasSuffix(name, ".der"):
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				return nil, err
			}
			c.PCKCRL[strings.TrimSuffix(strings.TrimPrefix(name, "pck_crl_"), ".der")] = b
			continue
		case name == "tcb_signing_chain.pem":
			dst = &c.TCBInfoChain
		case name == "td_qe_identity.json":
			dst = &c.QEIdentity
		case name == "qe_identity_signing_chain.pem":
			dst = &c.QEIdentityChain
		case name == "root_ca_crl.der":
			dst = &c.RootCRL
		default:
			continue
		}
		if *dst, err = os.ReadFile(filepath.Join(dir, name)); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// TCBStatus is the outcome of evaluating a quote against collateral.
type TCBStatus struct {
	FMSPC       string
	TDXStatus   pcs.TcbComponentStatus // status of the matching TCB level
	TCBDate     string
	AdvisoryIDs []string
	QEStatus    pcs.TcbComponentStatus
	NextUpdate  time.Time // earliest nextUpdate of the collateral used
}

// Evaluate checks collateral at time now and matches res's platform against
// it. Every signature (TCB info, QE identity, CRLs) is checked up to root,
// every document must be current at now, no certificate may be revoked. The
// TCB status policy is attestation-rs's: only Revoked is rejected (ErrRevoked);
// OutOfDate and the like are reported in TCBStatus.
func Evaluate(res *Result, c *Collateral, now time.Time) (*TCBStatus, error) {
	fmspc := strings.ToLower(res.PCKExt.FMSPC)
	rawTCB, ok := c.TCBInfo[fmspc]
	if !ok {
		return nil, fmt.Errorf("%w: FMSPC %s", ErrNoCollateral, fmspc)
	}
	st := &TCBStatus{FMSPC: fmspc}

	rootCRL, err := parseCRL(c.RootCRL, res.Root, now, "root CA CRL")
	if err != nil {
		return nil, err
	}
	if revoked(rootCRL, res.Intermediate) {
		return nil, fmt.Errorf("%w: PCK CA certificate %q is revoked", ErrRevoked, res.Intermediate.Subject.CommonName)
	}
	ca := "platform"
	if strings.Contains(res.Intermediate.Subject.CommonName, "Processor") {
		ca = "processor"
	}
	pckCRL, err := parseCRL(c.PCKCRL[ca], res.Intermediate, now, "PCK "+ca+" CA CRL")
	if err != nil {
		return nil, err
	}
	if revoked(pckCRL, res.PCK) {
		return nil, fmt.Errorf("%w: PCK certificate is revoked", ErrRevoked)
	}

	// TCB info.
	body, err := signedBody(rawTCB, "tcbInfo", c.TCBInfoChain, res.Root, rootCRL, now)
	if err != nil {
		return nil, fmt.Errorf("TCB info: %w", err)
	}
	var ti pcs.TcbInfo
	if err := json.Unmarshal(body, &ti); err != nil {
		return nil, fmt.Errorf("%w: TCB info: %w", ErrCollateral, err)
	}
	if ti.ID != "TDX" || ti.Version < 3 {
		return nil, fmt.Errorf("%w: TCB info id %q version %d, want TDX v3", ErrCollateral, ti.ID, ti.Version)
	}
	if !strings.EqualFold(ti.Fmspc, fmspc) || !strings.EqualFold(ti.PceID, res.PCKExt.PCEID) {
		return nil, fmt.Errorf("%w: TCB info is for FMSPC %s PCEID %s, not the PCK's %s %s", ErrCollateral, ti.Fmspc, ti.PceID, fmspc, res.PCKExt.PCEID)
	}
	if err := current("TCB info", ti.IssueDate, ti.NextUpdate, now); err != nil {
		return nil, err
	}
	st.NextUpdate = minTime(rootCRL.NextUpdate, pckCRL.NextUpdate, ti.NextUpdate)
	body2 := &res.Quote.Body
	if err := checkModule(&ti, body2); err != nil {
		return nil, err
	}
	lvl, err := matchTCBLevel(&ti, body2, res.PCKExt)
	if err != nil {
		return nil, err
	}
	st.TDXStatus, st.TCBDate, st.AdvisoryIDs = lvl.TcbStatus, lvl.TcbDate, lvl.AdvisoryIDs

	// QE identity.
	body, err = signedBody(c.QEIdentity, "enclaveIdentity", c.QEIdentityChain, res.Root, rootCRL, now)
	if err != nil {
		return nil, fmt.Errorf("QE identity: %w", err)
	}
	var qi pcs.EnclaveIdentity
	if err := json.Unmarshal(body, &qi); err != nil {
		return nil, fmt.Errorf("%w: QE identity: %w", ErrCollateral, err)
	}
	if qi.ID != "TD_QE" {
		return nil, fmt.Errorf("%w: QE identity id %q, want TD_QE", ErrCollateral, qi.ID)
	}
	if err := current("QE identity", qi.IssueDate, qi.NextUpdate, now); err != nil {
		return nil, err
	}
	st.NextUpdate = minTime(st.NextUpdate, qi.NextUpdate)
	qe := &res.Quote.QEReport
	if err := checkQE(&qi, qe); err != nil {
		return nil, err
	}
	for _, l := range qi.TcbLevels {
		if l.Tcb.Isvsvn <= uint32(qe.ISVSVN) {
			st.QEStatus = l.TcbStatus
			break
		}
	}
	if st.QEStatus == "" {
		return nil, fmt.Errorf("%w: no QE TCB level for ISVSVN %d", ErrCollateral, qe.ISVSVN)
	}
	return st, CheckStatus(st)
}

// CheckStatus is the TCB status policy of attestation-rs: Revoked (platform
// or QE) is rejected; every other status, OutOfDate included, is accepted and
// left for the caller to report.
func CheckStatus(st *TCBStatus) error {
	switch {
	case st.QEStatus == pcs.TcbComponentStatusRevoked:
		return fmt.Errorf("%w: QE TCB status is Revoked", ErrRevoked)
	case st.TDXStatus == pcs.TcbComponentStatusRevoked:
		return fmt.Errorf("%w: platform TCB status is Revoked (advisories %v)", ErrRevoked, st.AdvisoryIDs)
	}
	return nil
}

func minTime(ts ...time.Time) time.Time {
	var m time.Time
	for _, t := range ts {
		if !t.IsZero() && (m.IsZero() || t.Before(m)) {
			m = t
		}
	}
	return m
}

func current(what string, issue, next, now time.Time) error {
	if now.Before(issue) {
		return fmt.Errorf("%w: %s issued %s, after the verification time %s", ErrCollateral, what, issue.Format(time.RFC3339), now.Format(time.RFC3339))
	}
	if now.After(next) {
		return fmt.Errorf("%w: %s expired %s (verification time %s)", ErrCollateral, what, next.Format(time.RFC3339), now.Format(time.RFC3339))
	}
	return nil
}

func parseCRL(der []byte, issuer *x509.Certificate, now time.Time, what string) (*x509.RevocationList, error) {
	if len(der) == 0 {
		return nil, fmt.Errorf("%w: %s missing", ErrCollateral, what)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCollateral, what, err)
	}
	if err := crl.CheckSignatureFrom(issuer); err != nil {
		return nil, fmt.Errorf("%w: %s not signed by %q: %w", ErrCollateral, what, issuer.Subject.CommonName, err)
	}
	if err := current(what, crl.ThisUpdate, crl.NextUpdate, now); err != nil {
		return nil, err
	}
	return crl, nil
}

func revoked(crl *x509.RevocationList, c *x509.Certificate) bool {
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(c.SerialNumber) == 0 {
			return true
		}
	}
	return false
}

// signedBody returns the raw bytes of field in a PCS response and checks its
// signature (hex r‖s, ECDSA P-256 SHA-256 over those exact bytes) with the
// signing certificate of chainPEM, which must be signed by root, valid at now
// and not revoked.
func signedBody(raw []byte, field string, chainPEM []byte, root *x509.Certificate, rootCRL *x509.RevocationList, now time.Time) ([]byte, error) {
	if len(raw) == 0 {
		return nil, fmt.Errorf("%w: missing", ErrCollateral)
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCollateral, err)
	}
	body, ok := doc[field]
	var sigHex string
	if !ok || json.Unmarshal(doc["signature"], &sigHex) != nil {
		return nil, fmt.Errorf("%w: want {%q, \"signature\"}", ErrCollateral, field)
	}
	sig, err := hex.DecodeString(sigHex)
	if err != nil || len(sig) != 64 {
		return nil, fmt.Errorf("%w: signature is not 64 hex bytes", ErrCollateral)
	}
	certs, err := ParseRoots(chainPEM)
	if err != nil || len(certs) == 0 {
		return nil, fmt.Errorf("%w: issuer chain: no certificates", ErrCollateral)
	}
	signer := certs[0]
	// Only Intel's TCB signing key signs TCB info and QE identities.
	if signer.Subject.CommonName != "Intel SGX TCB Signing" {
		return nil, fmt.Errorf("%w: signed by %q, not Intel SGX TCB Signing", ErrCollateral, signer.Subject.CommonName)
	}
	rp := x509.NewCertPool()
	rp.AddCert(root)
	if _, err := signer.Verify(x509.VerifyOptions{Roots: rp, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("%w: signing certificate: %w", ErrCollateral, err)
	}
	if revoked(rootCRL, signer) {
		return nil, fmt.Errorf("%w: signing certificate is revoked", ErrRevoked)
	}
	pub, ok := signer.PublicKey.(*ecdsa.PublicKey)
	if !ok || !verifyRS(pub, body, sig) {
		return nil, fmt.Errorf("%w: signature does not verify", ErrCollateral)
	}
	return body, nil
}

// checkModule matches the TDX module (MRSIGNERSEAM, SEAMATTRIBUTES) against
// the TCB info: the module identity TDX_<major> when the module's major
// version (TEE_TCB_SVN[1]) is set, else the legacy tdxModule entry.
func checkModule(ti *pcs.TcbInfo, b *Body) error {
	signer, attrs, mask := ti.TdxModule.Mrsigner.Bytes, ti.TdxModule.Attributes.Bytes, ti.TdxModule.AttributesMask.Bytes
	if b.TEETCBSVN[1] > 0 {
		id := fmt.Sprintf("TDX_%02X", b.TEETCBSVN[1])
		found := false
		for _, m := range ti.TdxModuleIdentities {
			if strings.EqualFold(m.ID, id) {
				signer, attrs, mask, found = m.Mrsigner.Bytes, m.Attributes.Bytes, m.AttributesMask.Bytes, true
				break
			}
		}
		if !found {
			return fmt.Errorf("%w: TCB info has no TDX module identity %s", ErrCollateral, id)
		}
	}
	if !bytes.Equal(signer, b.MRSignerSEAM[:]) {
		return fmt.Errorf("%w: MRSIGNERSEAM differs from the TCB info's TDX module signer", ErrCollateral)
	}
	if len(mask) != len(b.SEAMAttributes) || len(attrs) != len(mask) {
		return fmt.Errorf("%w: malformed TDX module attributes", ErrCollateral)
	}
	for i := range mask {
		if b.SEAMAttributes[i]&mask[i] != attrs[i] {
			return fmt.Errorf("%w: SEAMATTRIBUTES do not match the TCB info", ErrCollateral)
		}
	}
	return nil
}

// matchTCBLevel finds the first (highest) TCB level whose SGX components and
// PCESVN are ≤ the PCK certificate's and whose TDX components are ≤ the TD's
// TEE_TCB_SVN; with a module major version, the level of the module identity
// decides the status (Intel's TDX TCB evaluation).
func matchTCBLevel(ti *pcs.TcbInfo, b *Body, ext *pcs.PckExtensions) (pcs.TcbLevel, error) {
	svn := b.TEETCBSVN[:]
	for _, l := range ti.TcbLevels {
		if len(l.Tcb.SgxTcbcomponents) != len(ext.TCB.CPUSvnComponents) || len(l.Tcb.TdxTcbcomponents) != len(svn) {
			continue
		}
		ok := ext.TCB.PCESvn >= l.Tcb.Pcesvn
		for i, c := range l.Tcb.SgxTcbcomponents {
			ok = ok && ext.TCB.CPUSvnComponents[i] >= c.Svn
		}
		start := 0
		if svn[1] > 0 {
			start = 2 // bytes 0–1 are the module's SVN and major version, matched below
		}
		for i := start; i < len(svn); i++ {
			ok = ok && svn[i] >= l.Tcb.TdxTcbcomponents[i].Svn
		}
		if !ok {
			continue
		}
		if svn[1] == 0 {
			return l, nil
		}
		id := fmt.Sprintf("TDX_%02X", svn[1])
		for _, m := range ti.TdxModuleIdentities {
			if !strings.EqualFold(m.ID, id) {
				continue
			}
			for _, ml := range m.TcbLevels {
				if uint32(svn[0]) >= ml.Tcb.Isvsvn {
					// The platform level's status stands unless the module's is worse.
					if ml.TcbStatus != pcs.TcbComponentStatusUpToDate {
						return ml, nil
					}
					return l, nil
				}
			}
			return pcs.TcbLevel{}, fmt.Errorf("%w: no TCB level for TDX module %s SVN %d", ErrCollateral, id, svn[0])
		}
		return pcs.TcbLevel{}, fmt.Errorf("%w: TCB info has no TDX module identity %s", ErrCollateral, id)
	}
	return pcs.TcbLevel{}, fmt.Errorf("%w: no TCB level matches the platform (FMSPC %s)", ErrCollateral, ti.Fmspc)
}

// checkQE matches the QE report against the QE identity.
func checkQE(qi *pcs.EnclaveIdentity, qe *EnclaveReport) error {
	if !bytes.Equal(qi.Mrsigner.Bytes, qe.MRSigner[:]) {
		return fmt.Errorf("%w: QE MRSIGNER differs from the QE identity", ErrCollateral)
	}
	if qi.IsvProdID != qe.ISVProdID {
		return fmt.Errorf("%w: QE ISVPRODID %d, identity says %d", ErrCollateral, qe.ISVProdID, qi.IsvProdID)
	}
	ms, msMask := qi.Miscselect.Bytes, qi.MiscselectMask.Bytes
	if len(ms) != 4 || len(msMask) != 4 {
		return fmt.Errorf("%w: malformed QE identity miscselect", ErrCollateral)
	}
	// The identity's hex is big-endian; the report field is a little-endian u32.
	want := uint32(ms[0])<<24 | uint32(ms[1])<<16 | uint32(ms[2])<<8 | uint32(ms[3])
	mask := uint32(msMask[0])<<24 | uint32(msMask[1])<<16 | uint32(msMask[2])<<8 | uint32(msMask[3])
	if qe.MiscSelect&mask != want {
		return fmt.Errorf("%w: QE MISCSELECT does not match the QE identity", ErrCollateral)
	}
	at, atMask := qi.Attributes.Bytes, qi.AttributesMask.Bytes
	if len(at) != 16 || len(atMask) != 16 {
		return fmt.Errorf("%w: malformed QE identity attributes", ErrCollateral)
	}
	for i := range at {
		if qe.Attributes[i]&atMask[i] != at[i] {
			return fmt.Errorf("%w: QE ATTRIBUTES do not match the QE identity", ErrCollateral)
		}
	}
	return nil
}
