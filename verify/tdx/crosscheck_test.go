package tdx

import (
	"crypto/x509"
	"testing"

	tdxverify "github.com/google/go-tdx-guest/verify"
)

// TestCrossCheckGoTDXGuest: go-tdx-guest (v4 quotes only, no collateral)
// agrees with Verify on genuine and tampered quotes.
func TestCrossCheckGoTDXGuest(t *testing.T) {
	pool := x509.NewCertPool()
	pool.AddCert(DefaultRoot())
	ts := &tdxverify.TimeSet{PckCertChain: pinned, TcbInfo: pinned, QeIdentity: pinned, PckCrl: pinned, RootCaCrl: pinned}
	for _, name := range []string{"tdx_quote_4.dat", "tdx_quote_live.dat", "az_tdx/td-quote.bin"} {
		raw := load(t, name)
		for _, off := range []int{-1, 48 + 136, 48 + 520} {
			b := append([]byte(nil), raw...)
			if off >= 0 {
				b[off] ^= 1
			}
			q, err := ParseQuote(b)
			if err != nil {
				t.Fatal(err)
			}
			_, ours := Verify(q, nil, pinned)
			theirs := tdxverify.RawTdxQuote(b, &tdxverify.Options{TrustedRoots: pool, Now: ts})
			if (ours == nil) != (theirs == nil) || (ours == nil) != (off < 0) {
				t.Errorf("%s byte %d: ours %v, go-tdx-guest %v", name, off, ours, theirs)
			}
		}
	}
}
