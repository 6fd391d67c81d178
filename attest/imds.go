package attest

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

const maxIMDSBody = 1 << 20

// httpAttempts and httpBackoff: the metadata service and AMD KDS throttle
// (429) and have transient 5xx; one failed fetch would waste a whole build.
var (
	httpAttempts = 3
	httpBackoff  = 300 * time.Millisecond
)

// imdsDo performs a metadata-service (or KDS) request, retrying transport
// errors, 429 and 5xx, and returns the body of a 200 answer.
func imdsDo(ctx context.Context, c *http.Client, req *http.Request) ([]byte, error) {
	var last error
	for attempt := range httpAttempts {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return nil, errors.Join(last, ctx.Err())
			case <-time.After(httpBackoff * time.Duration(attempt)):
			}
			if req.GetBody != nil {
				b, err := req.GetBody()
				if err != nil {
					return nil, err
				}
				req.Body = b
			}
		}
		body, retry, err := httpOnce(ctx, c, req)
		if err == nil {
			return body, nil
		}
		last = err
		if !retry || ctx.Err() != nil {
			break
		}
	}
	return nil, last
}

func httpOnce(ctx context.Context, c *http.Client, req *http.Request) (body []byte, retry bool, err error) {
	resp, err := c.Do(req.WithContext(ctx))
	if err != nil {
		return nil, true, err
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(io.LimitReader(resp.Body, maxIMDSBody+1))
	if err != nil {
		return nil, true, fmt.Errorf("%s %s: read: %w", req.Method, req.URL, err)
	}
	if len(body) > maxIMDSBody {
		return nil, false, fmt.Errorf("%s %s: answer over %d bytes", req.Method, req.URL, maxIMDSBody)
	}
	if resp.StatusCode != http.StatusOK {
		retry = resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500
		return nil, retry, fmt.Errorf("%s %s: %s: %.200s", req.Method, req.URL, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, false, nil
}

// fetchAzureVCEK gets this host's VCEK (DER) from the Azure THIM endpoint of
// the instance metadata service.
func fetchAzureVCEK(ctx context.Context, o *options) ([]byte, error) {
	req, err := http.NewRequest(http.MethodGet, strings.TrimRight(o.imdsBase, "/")+"/metadata/THIM/amd/certification", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Metadata", "true")
	body, err := imdsDo(ctx, o.imdsClient, req)
	if err != nil {
		return nil, fmt.Errorf("fetch the VCEK from Azure IMDS: %w", err)
	}
	return ParseTHIMCertification(body)
}

// ParseTHIMCertification extracts the VCEK (DER) from the THIM answer
// {"vcekCert": PEM, "certificateChain": PEM, …}.
func ParseTHIMCertification(body []byte) ([]byte, error) {
	var thim struct {
		VCEKCert string `json:"vcekCert"`
	}
	if err := json.Unmarshal(body, &thim); err != nil {
		return nil, fmt.Errorf("THIM certification answer: %w", err)
	}
	block, _ := pem.Decode([]byte(thim.VCEKCert))
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("THIM certification answer: vcekCert holds no PEM certificate")
	}
	return block.Bytes, nil
}

// fetchTDQuote asks the Azure metadata service to turn a TDREPORT into a
// DCAP TD quote.
func fetchTDQuote(ctx context.Context, o *options, tdReport []byte) ([]byte, error) {
	reqBody, err := json.Marshal(struct {
		Report string `json:"report"`
	}{b64url.EncodeToString(tdReport)})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequest(http.MethodPost, strings.TrimRight(o.imdsBase, "/")+"/acc/tdquote", bytes.NewReader(reqBody))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	body, err := imdsDo(ctx, o.imdsClient, req)
	if err != nil {
		return nil, fmt.Errorf("fetch the TD quote from Azure IMDS: %w", err)
	}
	return ParseTDQuoteResponse(body)
}

// ParseTDQuoteResponse decodes the /acc/tdquote answer {"quote": base64url}
// and checks that the quote is a TDX quote.
func ParseTDQuoteResponse(body []byte) ([]byte, error) {
	var resp struct {
		Quote string `json:"quote"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return nil, fmt.Errorf("TD quote answer: %w", err)
	}
	quote, err := decodeB64URL(resp.Quote)
	if err != nil {
		return nil, fmt.Errorf("TD quote answer: %w", err)
	}
	if _, err := TDXQuoteReportData(quote); err != nil {
		return nil, fmt.Errorf("TD quote answer: %w", err)
	}
	return quote, nil
}
