package web

import (
	"compress/gzip"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kettle-build/kettle/internal/testenv"
)

func get(t *testing.T, path string, hdr ...string) *http.Response {
	t.Helper()
	req := httptest.NewRequest("GET", path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	Handler().ServeHTTP(w, req)
	return w.Result()
}

func TestRoutes(t *testing.T) {
	for _, tc := range []struct {
		path, ctype string
		code        int
		body        string
	}{
		{"/", "text/html; charset=utf-8", 200, `role="log"`},
		{"/b/abc123", "text/html; charset=utf-8", 200, `<form id="build-form">`},
		{"/ui/app.js", "text/javascript; charset=utf-8", 200, "EventSource"},
		{"/ui/style.css", "text/css; charset=utf-8", 200, ".log"},
		{"/ui/index.html", "", 404, ""},
		{"/ui/gen/README.md", "", 404, ""},
		{"/ui/../web.go", "", 404, ""},
		{"/ui/nope.js", "", 404, ""},
		{"/elsewhere", "", 404, ""},
	} {
		t.Run(tc.path, func(t *testing.T) {
			resp := get(t, tc.path)
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.code {
				t.Fatalf("%d, want %d", resp.StatusCode, tc.code)
			}
			if tc.code != 200 {
				return
			}
			if got := resp.Header.Get("Content-Type"); got != tc.ctype {
				t.Errorf("Content-Type %q", got)
			}
			for _, want := range []string{"default-src 'none'", "frame-ancestors 'none'", "base-uri 'none'", "connect-src 'self'"} {
				if !strings.Contains(resp.Header.Get("Content-Security-Policy"), want) {
					t.Errorf("CSP %q lacks %q", resp.Header.Get("Content-Security-Policy"), want)
				}
			}
			if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("X-Content-Type-Options %q", resp.Header.Get("X-Content-Type-Options"))
			}
			if !strings.Contains(string(b), tc.body) {
				t.Errorf("body lacks %q", tc.body)
			}
		})
	}
}

// Nothing in the page names another origin: no scheme-qualified or
// protocol-relative URL in a src, href or fetch.
func TestSameOriginOnly(t *testing.T) {
	for _, p := range []string{"index.html", "app.js", "style.css"} {
		b, err := static.ReadFile("static/" + p)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		for _, bad := range []string{`src="http`, `href="http`, `src="//`, `href="//`, "@import", "url(http", `fetch("http`} {
			if strings.Contains(s, bad) {
				t.Errorf("%s contains %q", p, bad)
			}
		}
	}
}

// TestNoHTMLSinks: the page shows attacker-controlled text (log lines,
// error messages, file names, check details) only through textContent, so
// a build cannot inject markup or script (docs/security/web.md).
func TestNoHTMLSinks(t *testing.T) {
	b, err := static.ReadFile("static/app.js")
	if err != nil {
		t.Fatal(err)
	}
	for _, sink := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "setTimeout(\"", "srcdoc"} {
		if strings.Contains(string(b), sink) {
			t.Errorf("app.js uses %s", sink)
		}
	}
}

func TestWasm(t *testing.T) {
	if !HasVerifier() {
		resp := get(t, "/ui/verify.wasm")
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 404 || !strings.Contains(string(b), "go generate ./web") {
			t.Fatalf("without the verifier: %d %q", resp.StatusCode, b)
		}
		testenv.Need(t, false, "the verifier is not generated (go generate ./web; scripts/test.sh runs it)")
	}
	resp := get(t, "/ui/verify.wasm", "Accept-Encoding", "gzip, deflate, br")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Encoding") != "gzip" || resp.Header.Get("Content-Type") != "application/wasm" {
		t.Fatalf("%d %v", resp.StatusCode, resp.Header)
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 4)
	io.ReadFull(zr, head)
	if string(head) != "\x00asm" {
		t.Fatalf("not wasm: %q", head)
	}
	for _, ae := range []string{"", "identity", "gzip;q=0"} {
		resp = get(t, "/ui/verify.wasm", "Accept-Encoding", ae)
		io.ReadFull(resp.Body, head)
		if resp.Header.Get("Content-Encoding") != "" || string(head) != "\x00asm" {
			t.Errorf("Accept-Encoding %q: %v %q", ae, resp.Header, head)
		}
	}
	if resp := get(t, "/ui/wasm_exec.js"); resp.StatusCode != 200 {
		t.Errorf("wasm_exec.js: %d", resp.StatusCode)
	}
}

func TestAcceptsGzip(t *testing.T) {
	for ae, want := range map[string]bool{"gzip": true, "br, GZIP": true, "gzip;q=0.5": true, "gzip; q=0": false, "": false, "x-gzip": false} {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Accept-Encoding", ae)
		if got := acceptsGzip(r); got != want {
			t.Errorf("%q: %v", ae, got)
		}
	}
}

// BenchmarkWasmSize reports what a browser downloads for the verifier
// (budget 4 MiB compressed, docs/web.md and docs/benchmarks.md): budgets
// live in benchmarks, not in pass/fail tests.
func BenchmarkWasmSize(b *testing.B) {
	fi, err := fs.Stat(static, "static/gen/"+WasmName)
	if err != nil {
		b.Skip("the verifier is not generated (go generate ./web)")
	}
	for range b.N {
	}
	b.ReportMetric(float64(fi.Size()), "gzip-bytes")
	b.ReportMetric(float64(fi.Size())/(4<<20), "of-budget")
}
