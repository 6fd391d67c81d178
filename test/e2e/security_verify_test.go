package e2e

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/kettle-build/kettle/attest"
)

// zipDir is a ZIP of every regular file under dir.
func zipDir(t *testing.T, dir string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		f, err := zw.Create(filepath.ToSlash(rel))
		if err != nil {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		_, err = f.Write(data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	zw.Close()
	return b.Bytes()
}

// swapProxy forwards to a real kettle server, replacing the source archive
// of every POST /build with evil and keeping the client's nonce: a MITM or
// a rogue front end (finding remote-build-no-source-binding). It records
// the sha256 of the archive the client sent.
func swapProxy(t *testing.T, target string, evil []byte) (*httptest.Server, func() string) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu   sync.Mutex
		sent string
	)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1 // the event stream
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/build" {
			var body map[string]any
			if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			if data, ok := body["source_data"].(string); ok {
				raw, _ := base64.StdEncoding.DecodeString(data)
				sum := sha256.Sum256(raw)
				mu.Lock()
				sent = hex.EncodeToString(sum[:])
				mu.Unlock()
				body["source_data"] = base64.StdEncoding.EncodeToString(evil)
			}
			b, _ := json.Marshal(body)
			r.Body = io.NopCloser(bytes.NewReader(b))
			r.ContentLength = int64(len(b))
			r.TransferEncoding = nil
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, func() string { mu.Lock(); defer mu.Unlock(); return sent }
}

// TestSecurityVerifySourceSwap runs the finding's attack against a real
// `kettle serve` (sim-snp evidence, the sandbox where it works): a proxy
// swaps the uploaded archive for the attacker's, the server builds and
// attests it with the victim's nonce, and `kettle remote build` must say
// FAILED (exit 1) naming the source mismatch, where it used to say PASSED.
// The same upload straight to the server passes, and `kettle verify
// --source-sha256` tells the two results apart offline.
func TestSecurityVerifySourceSwap(t *testing.T) {
	if _, err := exec.LookPath("cargo"); err != nil {
		t.Skip("no cargo")
	}
	tmp := t.TempDir()
	roots := filepath.Join(tmp, "sim-roots.pem")
	f, err := os.Create(roots)
	if err != nil {
		t.Fatal(err)
	}
	if err := attest.WriteSimRoots(f); err != nil {
		t.Fatal(err)
	}
	f.Close()

	srv, _ := server(t, "", "--attester", "sim-snp")
	victim := filepath.Join(tmp, "victim")
	project(t, victim, "victim", 0)
	evilDir := filepath.Join(tmp, "evil")
	project(t, evilDir, "victim", 0)
	os.WriteFile(filepath.Join(evilDir, "src", "main.rs"), []byte("fn main() { println!(\"EVIL: attacker code under the victim job\"); }\n"), 0o644)
	evil := zipDir(t, evilDir)
	evilSum := sha256.Sum256(evil)
	evilHex := hex.EncodeToString(evilSum[:])
	proxy, sent := swapProxy(t, srv.URL, evil)

	remote := func(server, out string, args ...string) (int, string, string) {
		cmd := exec.Command(kettleBin, append([]string{"remote", "build", victim, "--server", server, "--trust-roots", roots, "--out", out}, args...)...)
		cmd.Env = append(os.Environ(), "KETTLE_TOKEN=")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, stdout.String(), stderr.String()
	}

	swapped := filepath.Join(tmp, "swapped")
	code, out, errOut := remote(proxy.URL, swapped)
	if code != 1 || !strings.Contains(out, "⛔ Source archive sha256 is "+sent()) || !strings.Contains(out, `source archive sha256 "`+evilHex+`"`) ||
		!strings.Contains(out, "Verification FAILED") || strings.Contains(out, "Verification PASSED") ||
		!strings.Contains(errOut, "FAILED: the result is not a build of the source sent") {
		t.Fatalf("swapped source: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	// The forged result is otherwise flawless: genuine evidence, the
	// victim's nonce. Only the source binding catches it.
	for _, want := range []string{"✅ Evidence is genuine TEE evidence (snp)", "✅ Attested checksum matches provenance.json", "✅ Nonce matches the attestation"} {
		if !strings.Contains(out, want) {
			t.Errorf("swapped result lacks %q:\n%s", want, out)
		}
	}

	honest := filepath.Join(tmp, "honest")
	code, out, errOut = remote(srv.URL, honest)
	if code != 0 || !strings.Contains(out, "✅ Source archive sha256 is ") || !strings.Contains(out, "Verification PASSED") {
		t.Fatalf("honest build: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}

	// Offline: --source-sha256 accepts each result for its own archive only.
	verify := func(dir, sum string) int {
		cmd := exec.Command(kettleBin, "verify", "--trust-roots", roots, "--source-sha256", sum, dir)
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	}
	if got := verify(swapped, sent()); got != 1 {
		t.Errorf("kettle verify --source-sha256 <victim's> on the swapped result: exit %d", got)
	}
	if got := verify(swapped, evilHex); got != 0 {
		t.Errorf("kettle verify --source-sha256 <attacker's> on the swapped result: exit %d", got)
	}
	if got := verify(honest, sent()); got != 0 {
		t.Errorf("kettle verify --source-sha256 on the honest result: exit %d", got)
	}
}
