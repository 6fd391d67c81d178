package verify

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/kettle-build/kettle/verify/snp"
	"github.com/kettle-build/kettle/verify/tdx"
)

// Getter fetches a URL: AMD KDS certificates and Intel PCS collateral. Only
// used when given with WithGetter.
type Getter interface {
	Get(ctx context.Context, url string) (body []byte, header http.Header, err error)
}

// Collateral is Intel PCS collateral for TDX TCB evaluation.
type Collateral = tdx.Collateral

// LoadCollateralDir reads Intel collateral files from dir (tcb_info_<fmspc>.json,
// tcb_signing_chain.pem, td_qe_identity.json, qe_identity_signing_chain.pem,
// pck_crl_<platform|processor>.der, root_ca_crl.der).
func LoadCollateralDir(dir string) (*Collateral, error) { return tdx.LoadCollateralDir(dir) }

// HTTPGetter is a Getter over net/http with a size limit per response.
type HTTPGetter struct {
	Client   *http.Client
	MaxBytes int64
}

// NewHTTPGetter returns a Getter with a 30-second timeout and a 16 MiB limit.
func NewHTTPGetter() *HTTPGetter {
	return &HTTPGetter{Client: &http.Client{Timeout: 30 * time.Second}, MaxBytes: 16 << 20}
}

// Get fetches url; any status but 200 is an error.
func (g *HTTPGetter) Get(ctx context.Context, u string) ([]byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, err
	}
	resp, err := g.Client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, g.MaxBytes+1))
	if err != nil {
		return nil, nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if int64(len(body)) > g.MaxBytes {
		return nil, nil, fmt.Errorf("GET %s: response over %d bytes", u, g.MaxBytes)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return body, resp.Header, nil
}

// KDS and PCS endpoints.
const (
	kdsBase      = "https://kdsintf.amd.com/vcek/v1/"
	pcsTDXBase   = "https://api.trustedservices.intel.com/tdx/certification/v4/"
	pcsSGXBase   = "https://api.trustedservices.intel.com/sgx/certification/v4/"
	intelRootCRL = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"
)

// VCEKURL is the AMD KDS URL of the report's VCEK. Turin uses the first 8
// bytes of CHIP_ID and adds the FMC SPL.
func VCEKURL(rep *snp.Report) (string, error) {
	g := rep.Generation()
	if g == snp.Unknown {
		return "", fmt.Errorf("unknown processor generation")
	}
	if rep.MaskChipKey || rep.ChipID == [64]byte{} {
		return "", fmt.Errorf("the report's CHIP_ID is masked")
	}
	t := snp.DecodeTCB(g, rep.ReportedTCB)
	hwid := rep.ChipID[:]
	if g == snp.Turin {
		hwid = hwid[:8]
	}
	u := fmt.Sprintf("%s%s/%s?blSPL=%d&teeSPL=%d&snpSPL=%d&ucodeSPL=%d", kdsBase, g, hex.EncodeToString(hwid), t.Bootloader, t.TEE, t.SNP, t.Microcode)
	if g == snp.Turin {
		u += fmt.Sprintf("&fmcSPL=%d", t.FMC)
	}
	return u, nil
}

func fetchVCEK(ctx context.Context, g Getter, rep *snp.Report) ([]byte, error) {
	u, err := VCEKURL(rep)
	if err != nil {
		return nil, err
	}
	body, _, err := g.Get(ctx, u)
	return body, err
}

func issuerChain(h http.Header, name string) ([]byte, error) {
	v := h.Get(name)
	if v == "" {
		return nil, fmt.Errorf("response lacks header %s", name)
	}
	s, err := url.QueryUnescape(v)
	if err != nil {
		return nil, fmt.Errorf("header %s: %w", name, err)
	}
	return []byte(s), nil
}

func fetchCollateral(ctx context.Context, g Getter, res *tdx.Result) (*Collateral, error) {
	fmspc := strings.ToLower(res.PCKExt.FMSPC)
	c := &Collateral{TCBInfo: map[string][]byte{}, PCKCRL: map[string][]byte{}}
	body, h, err := g.Get(ctx, pcsTDXBase+"tcb?fmspc="+fmspc)
	if err != nil {
		return nil, err
	}
	c.TCBInfo[fmspc] = body
	if c.TCBInfoChain, err = issuerChain(h, "TCB-Info-Issuer-Chain"); err != nil {
		return nil, err
	}
	if c.QEIdentity, h, err = g.Get(ctx, pcsTDXBase+"qe/identity"); err != nil {
		return nil, err
	}
	if c.QEIdentityChain, err = issuerChain(h, "SGX-Enclave-Identity-Issuer-Chain"); err != nil {
		return nil, err
	}
	ca := "platform"
	if strings.Contains(res.Intermediate.Subject.CommonName, "Processor") {
		ca = "processor"
	}
	if c.PCKCRL[ca], _, err = g.Get(ctx, pcsSGXBase+"pckcrl?ca="+ca+"&encoding=der"); err != nil {
		return nil, err
	}
	if c.RootCRL, _, err = g.Get(ctx, intelRootCRL); err != nil {
		return nil, err
	}
	return c, nil
}
