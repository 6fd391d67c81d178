package tdx

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/pcs"
)

var fixtures = filepath.Join("..", "testdata", "attestation")

var pinned = time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)

func load(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtures, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestQuotes(t *testing.T) {
	coll, err := LoadCollateralDir(filepath.Join(fixtures, "collateral"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		version     uint16
		debug       bool
		fmspc       string
		atPinned    error  // Evaluate at 2026-04-01
		status      string // TDX TCB status at 2026-04-01
		todayResult error  // Evaluate today
	}{
		{"tdx_quote_4.dat", 4, true, "50806f000000", nil, "OutOfDate", ErrCollateral},
		{"tdx_quote_5.dat", 5, false, "90c06f000000", ErrCollateral, "", ErrCollateral},
		{"tdx_quote_live.dat", 4, false, "b0c06f000000", ErrNoCollateral, "", ErrNoCollateral},
		{"az_tdx/td-quote.bin", 4, false, "00806f050000", ErrNoCollateral, "", ErrNoCollateral},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q, err := ParseQuote(load(t, tc.name))
			if err != nil {
				t.Fatal(err)
			}
			if q.Version != tc.version || q.Body.Debug() != tc.debug {
				t.Errorf("version %d debug %v", q.Version, q.Body.Debug())
			}
			for _, now := range []time.Time{pinned, time.Now()} {
				res, err := Verify(q, nil, now)
				if err != nil {
					t.Fatalf("Verify at %s: %v", now, err)
				}
				if res.PCKExt.FMSPC != tc.fmspc {
					t.Errorf("FMSPC %s", res.PCKExt.FMSPC)
				}
			}
			res, _ := Verify(q, nil, pinned)
			st, err := Evaluate(res, coll, pinned)
			if !errors.Is(err, tc.atPinned) || (tc.atPinned == nil) != (err == nil) {
				t.Errorf("Evaluate at 2026-04-01 = %v, want %v", err, tc.atPinned)
			}
			if err == nil && string(st.TDXStatus) != tc.status {
				t.Errorf("status %s, want %s", st.TDXStatus, tc.status)
			}
			if _, err := Evaluate(res, coll, time.Now()); !errors.Is(err, tc.todayResult) {
				t.Errorf("Evaluate today = %v, want %v", err, tc.todayResult)
			}
		})
	}
}

func TestTamperedQuote(t *testing.T) {
	raw := load(t, "tdx_quote_live.dat")
	for _, off := range []int{
		48 + 136,                         // MRTD
		48 + 520,                         // REPORT_DATA
		48 + 584 + 4,                     // quote signature
		48 + 584 + 4 + 64 + 64 + 6 + 320, // QE report data
		48 + 584 + 4 + 64 + 64 + 6 + 128, // QE MRSIGNER
	} {
		b := append([]byte(nil), raw...)
		b[off] ^= 1
		q, err := ParseQuote(b)
		if err != nil {
			continue
		}
		if _, err := Verify(q, nil, pinned); err == nil {
			t.Errorf("byte %d changed: quote still verifies", off)
		}
	}
}

func TestUntrustedRoot(t *testing.T) {
	q, _ := ParseQuote(load(t, "tdx_quote_live.dat"))
	other, _ := ParseRoots([]byte{})
	if _, err := Verify(q, other, pinned); err != nil {
		t.Fatalf("nil roots default to Intel: %v", err)
	}
	// A root with another key is refused even if the quote carries it.
	fake := *DefaultRoot()
	fake.RawSubjectPublicKeyInfo = []byte("other")
	if _, err := Verify(q, append(other, &fake), pinned); !errors.Is(err, ErrChain) {
		t.Errorf("untrusted root: %v", err)
	}
}

func FuzzTDXQuote(f *testing.F) {
	for _, name := range []string{"tdx_quote_4.dat", "tdx_quote_5.dat", "tdx_quote_live.dat", "az_tdx/td-quote.bin"} {
		f.Add(load(f, name))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := ParseQuote(b)
		if err != nil {
			return
		}
		if q.SignedLen > len(b) {
			t.Fatalf("signed length %d > %d", q.SignedLen, len(b))
		}
	})
}

// FuzzTDXVerify runs the whole signature and chain verification on mutated
// quotes. It is kept apart from FuzzTDXQuote because coverage-instrumented
// ECDSA and X.509 make each run slow; the parser target stays fast.
func FuzzTDXVerify(f *testing.F) {
	for _, name := range []string{"tdx_quote_4.dat", "tdx_quote_5.dat", "tdx_quote_live.dat", "az_tdx/td-quote.bin"} {
		f.Add(load(f, name))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := ParseQuote(b)
		if err != nil {
			return
		}
		Verify(q, nil, pinned)
	})
}

func TestStatusPolicy(t *testing.T) {
	for status, wantErr := range map[pcs.TcbComponentStatus]bool{
		pcs.TcbComponentStatusUpToDate: false, pcs.TcbComponentStatusOutOfDate: false,
		pcs.TcbComponentStatusSwHardeningNeeded: false, pcs.TcbComponentStatusRevoked: true,
	} {
		err := CheckStatus(&TCBStatus{TDXStatus: status, QEStatus: pcs.TcbComponentStatusUpToDate})
		if (err != nil) != wantErr || (err != nil && !errors.Is(err, ErrRevoked)) {
			t.Errorf("platform %s: %v", status, err)
		}
		err = CheckStatus(&TCBStatus{TDXStatus: pcs.TcbComponentStatusUpToDate, QEStatus: status})
		if (err != nil) != wantErr {
			t.Errorf("QE %s: %v", status, err)
		}
	}
}

// TestMatchTCBLevel: the first level the platform meets decides, so a
// platform below every UpToDate/OutOfDate level but at a Revoked one is Revoked.
func TestMatchTCBLevel(t *testing.T) {
	comps := func(v ...byte) []pcs.TcbComponent {
		out := make([]pcs.TcbComponent, 16)
		for i, x := range v {
			out[i].Svn = x
		}
		return out
	}
	level := func(sgx, tdx byte, pce uint16, st pcs.TcbComponentStatus) pcs.TcbLevel {
		return pcs.TcbLevel{Tcb: pcs.Tcb{SgxTcbcomponents: comps(sgx), TdxTcbcomponents: comps(tdx), Pcesvn: pce}, TcbStatus: st}
	}
	ti := &pcs.TcbInfo{Fmspc: "00", TcbLevels: []pcs.TcbLevel{
		level(5, 5, 10, pcs.TcbComponentStatusUpToDate),
		level(3, 3, 10, pcs.TcbComponentStatusOutOfDate),
		level(0, 0, 0, pcs.TcbComponentStatusRevoked),
	}}
	ext := func(cpusvn byte, pce uint16) *pcs.PckExtensions {
		e := &pcs.PckExtensions{}
		e.TCB.CPUSvnComponents = make([]byte, 16)
		e.TCB.CPUSvnComponents[0] = cpusvn
		e.TCB.PCESvn = pce
		return e
	}
	body := func(svn byte) *Body { b := &Body{}; b.TEETCBSVN[0] = svn; return b }
	for _, tc := range []struct {
		cpusvn, svn byte
		pce         uint16
		want        pcs.TcbComponentStatus
	}{
		{6, 6, 10, pcs.TcbComponentStatusUpToDate},
		{5, 4, 10, pcs.TcbComponentStatusOutOfDate},
		{4, 9, 10, pcs.TcbComponentStatusOutOfDate},
		{9, 9, 9, pcs.TcbComponentStatusRevoked},
		{1, 1, 1, pcs.TcbComponentStatusRevoked},
	} {
		l, err := matchTCBLevel(ti, body(tc.svn), ext(tc.cpusvn, tc.pce))
		if err != nil || l.TcbStatus != tc.want {
			t.Errorf("%+v: %s %v", tc, l.TcbStatus, err)
		}
	}
}

func TestEventLog(t *testing.T) {
	q, err := ParseQuote(load(t, "tdx_quote_live.dat"))
	if err != nil {
		t.Fatal(err)
	}
	events, err := CheckEventLog(&q.Body, load(t, "tdx_ccel_live2.dat"))
	if err != nil || len(events) != 20 {
		t.Fatalf("matching log: %d events, %v", len(events), err)
	}
	// Another boot's log differs in RTMR2.
	if _, err := CheckEventLog(&q.Body, load(t, "tdx_ccel_live.bin")); !errors.Is(err, ErrEventLog) {
		t.Errorf("other log: %v", err)
	}
	// One changed digest byte.
	log := load(t, "tdx_ccel_live2.dat")
	bad := append([]byte(nil), log...)
	bad[len(bad)/64] ^= 1 // inside the first events
	if _, err := CheckEventLog(&q.Body, bad); err == nil {
		t.Error("changed log replays")
	}
}

func FuzzEventLog(f *testing.F) {
	f.Add(load(f, "tdx_ccel_live2.dat")[:4096])
	f.Add(load(f, "tdx_ccel_live.bin")[:4096])
	f.Fuzz(func(t *testing.T, b []byte) {
		events, err := ParseEventLog(b)
		if err == nil {
			Replay(events)
		}
	})
}

func TestQEIdentityOffline(t *testing.T) {
	for name, mut := range map[string]func(q *Quote){
		"other signer": func(q *Quote) { q.QEReport.MRSigner[0] ^= 1 },
		"other prodid": func(q *Quote) { q.QEReport.ISVProdID = 1 },
		"debug QE":     func(q *Quote) { q.QEReport.Attributes[0] |= sgxAttrDebug },
	} {
		q, _ := ParseQuote(load(t, "tdx_quote_live.dat"))
		mut(q)
		if _, err := Verify(q, nil, pinned); !errors.Is(err, ErrQEBinding) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
