package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kettle-build/kettle/bench/harness"
)

// TestDepCacheCargoService (issue 16 point 3, Security II rule 3): through
// a real kettle serve with bwrap, a Cargo project with two registry crates
// (a sparse registry on loopback standing in for crates.io) is built twice:
// the second job runs no fetch command, downloads nothing, says
// `Fetch contacted: no host`, and its provenance and binary are the first
// job's.
func TestDepCacheCargoService(t *testing.T) {
	_, c := securityServer(t, nil)
	type crate struct {
		name string
		data []byte
		sum  string
	}
	var crates []crate
	for _, n := range []string{"foo", "bar"} {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		tw := tar.NewWriter(zw)
		for _, f := range []struct{ name, body string }{
			{n + "-0.1.0/Cargo.toml", "[package]\nname = \"" + n + "\"\nversion = \"0.1.0\"\nedition = \"2021\"\n"},
			{n + "-0.1.0/src/lib.rs", "pub fn hi() -> &'static str { \"" + n + "\" }\n"},
		} {
			tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.body)), Typeflag: tar.TypeReg})
			tw.Write([]byte(f.body))
		}
		tw.Close()
		zw.Close()
		h := sha256.Sum256(buf.Bytes())
		crates = append(crates, crate{n, buf.Bytes(), hex.EncodeToString(h[:])})
	}
	var downloads atomic.Int32
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, cr := range crates {
			switch r.URL.Path {
			case "/index/3/" + cr.name[:1] + "/" + cr.name:
				fmt.Fprintf(w, `{"name":%q,"vers":"0.1.0","deps":[],"cksum":%q,"features":{},"yanked":false}`+"\n", cr.name, cr.sum)
				return
			case "/dl/" + cr.name + "/0.1.0":
				downloads.Add(1)
				w.Write(cr.data)
				return
			}
		}
		if r.URL.Path == "/index/config.json" {
			fmt.Fprintf(w, `{"dl":"%s/dl/{crate}/{version}"}`, srv.URL)
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)

	dir := filepath.Join(t.TempDir(), "app")
	files := map[string]string{
		"Cargo.toml":         "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nfoo = \"0.1\"\nbar = \"0.1\"\n",
		"src/main.rs":        "fn main() { println!(\"{} {}\", foo::hi(), bar::hi()); }\n",
		".cargo/config.toml": "[source.crates-io]\nreplace-with = \"mirror\"\n\n[source.mirror]\nregistry = \"sparse+" + srv.URL + "/index/\"\n",
		"Cargo.lock": "version = 3\n\n[[package]]\nname = \"app\"\nversion = \"0.1.0\"\ndependencies = [\n \"bar\",\n \"foo\",\n]\n" +
			"\n[[package]]\nname = \"bar\"\nversion = \"0.1.0\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\nchecksum = \"" + crates[1].sum + "\"\n" +
			"\n[[package]]\nname = \"foo\"\nversion = \"0.1.0\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\nchecksum = \"" + crates[0].sum + "\"\n",
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	app := harness.Targz(t, dir, "app")

	cold := runJob(t, c, 3*time.Minute, submitArchive(c, app, "app"))
	if !strings.Contains(cold.log, "Fetch: 0 crate(s) from the shared dependency cache, 2 downloaded; 2 entries added") || downloads.Load() != 2 {
		t.Fatalf("cold job (%d downloads):\n%s", downloads.Load(), harness.Tail(cold.log, 3000))
	}
	warm := runJob(t, c, 3*time.Minute, submitArchive(c, app, "app"))
	if !strings.Contains(warm.log, "Fetch: 2 crate(s) from the shared dependency cache, 0 downloaded") || !strings.Contains(warm.log, "Fetch contacted: no host") ||
		strings.Contains(warm.log, "Downloaded") || downloads.Load() != 2 {
		t.Fatalf("warm job fetched (%d downloads):\n%s", downloads.Load(), harness.Tail(warm.log, 3000))
	}
	t.Logf("fetch phase: cold %v, warm %v", cold.fetch, warm.fetch)
	if warm.fetch < 0 || warm.fetch > time.Second {
		t.Errorf("warm fetch phase %v, want under 1s", warm.fetch)
	}
	if warm.prov != cold.prov || warm.subj != cold.subj {
		t.Fatalf("provenance or binaries differ between cold and warm jobs:\n%s\n%s", cold.prov, warm.prov)
	}
}
