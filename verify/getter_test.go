package verify

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// fakeGetter serves fixed responses and records the URLs asked for.
type fakeGetter struct {
	bodies  map[string][]byte
	headers map[string]http.Header
	asked   []string
}

func (g *fakeGetter) Get(_ context.Context, u string) ([]byte, http.Header, error) {
	g.asked = append(g.asked, u)
	b, ok := g.bodies[u]
	if !ok {
		return nil, nil, fmt.Errorf("GET %s: 404", u)
	}
	return b, g.headers[u], nil
}

func TestOnlineVCEK(t *testing.T) {
	ev := snpEnvelope(t, readFixture(t, "snp/live-report-v5-genoa.bin"), "vcek", nil)
	if _, err := Evidence(context.Background(), ev, anything); !errors.Is(err, ErrNoEndorsement) {
		t.Fatalf("offline without VCEK: %v, want ErrNoEndorsement", err)
	}
	g := &fakeGetter{bodies: map[string][]byte{}}
	_, err := Evidence(context.Background(), ev, WithGetter(g), anything)
	if len(g.asked) != 1 || !strings.HasPrefix(g.asked[0], kdsBase+"Genoa/") || !strings.Contains(g.asked[0], "?blSPL=") {
		t.Fatalf("asked %v (err %v)", g.asked, err)
	}
	g.bodies[g.asked[0]] = readFixture(t, "snp/live-vcek-genoa.der")
	c, err := Evidence(context.Background(), ev, WithGetter(g), WithExpectedReportData([]byte("hello-attestation")))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(c.Steps, ";"), "KDS") {
		t.Errorf("steps %v", c.Steps)
	}
}

func TestOnlineCollateral(t *testing.T) {
	g := &fakeGetter{
		bodies: map[string][]byte{
			pcsTDXBase + "tcb?fmspc=50806f000000":          readFixture(t, "collateral/tcb_info_50806f000000.json"),
			pcsTDXBase + "qe/identity":                     readFixture(t, "collateral/td_qe_identity.json"),
			pcsSGXBase + "pckcrl?ca=platform&encoding=der": readFixture(t, "collateral/pck_crl_platform.der"),
			intelRootCRL: readFixture(t, "collateral/root_ca_crl.der"),
		},
		headers: map[string]http.Header{
			pcsTDXBase + "tcb?fmspc=50806f000000": {"Tcb-Info-Issuer-Chain": {url.QueryEscape(string(readFixture(t, "collateral/tcb_signing_chain.pem")))}},
			pcsTDXBase + "qe/identity":            {"Sgx-Enclave-Identity-Issuer-Chain": {url.QueryEscape(string(readFixture(t, "collateral/qe_identity_signing_chain.pem")))}},
		},
	}
	ev := tdxEnvelope(t, readFixture(t, "tdx_quote_4.dat"))
	c, err := Evidence(context.Background(), ev, WithGetter(g), WithNow(pinned), WithAllowDebugUnsafe(), anything)
	if err != nil {
		t.Fatalf("%v (asked %v)", err, g.asked)
	}
	if c.TCBStatus != "OutOfDate" || len(g.asked) != 4 {
		t.Errorf("status %q, asked %v", c.TCBStatus, g.asked)
	}
	// No network unless a Getter is given: without one the status is not evaluated.
	c, err = Evidence(context.Background(), ev, WithNow(pinned), WithAllowDebugUnsafe(), anything)
	if err != nil || c.TCBStatus != "" || len(c.Warnings) == 0 {
		t.Errorf("offline: %v %q %v", err, c.TCBStatus, c.Warnings)
	}
}
