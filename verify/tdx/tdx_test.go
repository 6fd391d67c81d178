package tdx

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

var fixtures = filepath.Join("..", "..", "..", "shared", "fixtures", "attestation")

func load(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtures, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestQuotesGenuine(t *testing.T) {
	for _, name := range []string{"tdx_quote_4.dat", "tdx_quote_5.dat", "tdx_quote_live.dat", "az_tdx/td-quote.bin"} {
		t.Run(name, func(t *testing.T) {
			q, err := ParseQuote(load(t, name))
			if err != nil {
				t.Fatal(err)
			}
			for _, now := range []time.Time{time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC), time.Now()} {
				res, err := Verify(q, nil, now)
				t.Logf("v%d body=%d debug=%v now=%s err=%v", q.Version, q.BodyType, q.Body.Debug(), now.Format("2006-01-02"), err)
				if err == nil {
					t.Logf("fmspc=%s pck %s..%s", res.PCKExt.FMSPC, res.PCK.NotBefore, res.PCK.NotAfter)
				}
			}
		})
	}
}

func TestCollateralProbe(t *testing.T) {
	c, err := LoadCollateralDir(filepath.Join(fixtures, "collateral"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"tdx_quote_4.dat", "tdx_quote_5.dat", "tdx_quote_live.dat", "az_tdx/td-quote.bin"} {
		q, _ := ParseQuote(load(t, name))
		for _, now := range []time.Time{time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC), time.Now()} {
			res, err := Verify(q, nil, now)
			if err != nil {
				t.Fatal(err)
			}
			st, err := Evaluate(res, c, now)
			t.Logf("%s %s: %+v %v", name, now.Format("2006-01-02"), st, err)
		}
	}
}
