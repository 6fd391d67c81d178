// Package web is kettle's web page (docs/web.md): a build form, a job page
// with the live log, and a verifier that checks a downloaded result in the
// browser with the verify package compiled to WebAssembly. Everything is
// embedded; every request the page makes goes to its own origin, and the
// Content-Security-Policy says so to the browser too.
package web

//go:generate go run ./internal/genwasm

import (
	"bytes"
	"compress/gzip"
	"embed"
	"io"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

//go:embed static
var static embed.FS

// WasmName is the gzip-compressed verifier under static/gen/, written by
// `go generate ./web`; a binary built without it serves a page whose
// verify area says so.
const WasmName = "verify.wasm.gz"

// csp keeps the page to its own origin whatever its scripts do:
// 'wasm-unsafe-eval' lets it compile the verifier and nothing else.
const csp = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// Handler serves the page at / and /b/{id} (a job's page), and its assets
// under /ui/.
func Handler() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree always has static/
	}
	return &handler{fsys: sub}
}

type handler struct{ fsys fs.FS }

// HasVerifier reports whether the WebAssembly verifier was built into
// this binary.
func HasVerifier() bool {
	_, err := fs.Stat(static, "static/gen/"+WasmName)
	return err == nil
}

var types = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".wasm": "application/wasm",
	".svg":  "image/svg+xml",
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case p == "/" || strings.HasPrefix(p, "/b/"):
		h.file(w, r, "index.html", "no-cache")
	case strings.HasPrefix(p, "/ui/"):
		name := strings.TrimPrefix(p, "/ui/")
		switch name {
		case "verify.wasm":
			h.wasm(w, r)
			return
		case "wasm_exec.js": // generated beside the verifier
			name = "gen/" + name
		}
		if name == "index.html" || !fs.ValidPath(name) || types[path.Ext(name)] == "" {
			http.NotFound(w, r)
			return
		}
		h.file(w, r, name, "no-cache")
	default:
		http.NotFound(w, r)
	}
}

func headers(w http.ResponseWriter, ctype, cache string) {
	hd := w.Header()
	hd.Set("Content-Type", ctype)
	hd.Set("Cache-Control", cache)
	hd.Set("Content-Security-Policy", csp)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cross-Origin-Opener-Policy", "same-origin")
	hd.Set("Cross-Origin-Resource-Policy", "same-origin")
}

func (h *handler) file(w http.ResponseWriter, r *http.Request, name, cache string) {
	b, err := fs.ReadFile(h.fsys, name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	headers(w, types[path.Ext(name)], cache)
	http.ServeContent(w, r, "", zeroTime, bytes.NewReader(b))
}

// wasm serves the verifier gzip-encoded as embedded, or decoded for a
// client that does not accept gzip.
func (h *handler) wasm(w http.ResponseWriter, r *http.Request) {
	b, err := fs.ReadFile(h.fsys, "gen/"+WasmName)
	if err != nil {
		http.Error(w, "this kettle was built without the WebAssembly verifier (go generate ./web)", http.StatusNotFound)
		return
	}
	headers(w, "application/wasm", "no-cache")
	w.Header().Add("Vary", "Accept-Encoding")
	if acceptsGzip(r) {
		w.Header().Set("Content-Encoding", "gzip")
		http.ServeContent(w, r, "", zeroTime, bytes.NewReader(b))
		return
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		http.Error(w, "corrupt embedded verifier", http.StatusInternalServerError)
		return
	}
	io.Copy(w, zr)
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		enc, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(enc), "gzip") && strings.TrimSpace(strings.ReplaceAll(q, " ", "")) != "q=0" {
			return true
		}
	}
	return false
}
