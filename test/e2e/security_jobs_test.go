package e2e

// Regression tests of the job-store findings (issue 14): each runs the
// attack against a real `kettle serve` (bubblewrap where available) with an
// honest build beside it. See docs/security/jobs.md.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kettle-build/kettle/bench/harness"
	"github.com/kettle-build/kettle/internal/testenv"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// securityData is testdata/security/<finding> in the repository.
func securityData(t *testing.T, finding string) string {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "testdata", "security", finding)
}

// buildRTForge compiles the red team's JetStream client (rtforge) as a
// static binary.
func buildRTForge(t *testing.T) string {
	t.Helper()
	testenv.NeedTool(t, "go")
	root, _ := harness.RepoRoot()
	out := filepath.Join(t.TempDir(), "rtforge")
	cmd := exec.Command("go", "build", "-o", out, "./testdata/security/nats-job-store-forgery/rtforge")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build rtforge: %v\n%s", err, b)
	}
	return out
}

// rawNATSConnect sends a CONNECT without credentials on a plain TCP
// connection and returns the server's answer.
func rawNATSConnect(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil { // INFO
		t.Fatal(err)
	}
	fmt.Fprintf(c, "CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n")
	line, _ := r.ReadString('\n')
	return strings.TrimSpace(line)
}

// TestSecurityNATSJobStoreForgery (finding nats-job-store-forgery): with
// --nats-listen the job store requires the credentials kettle generated.
// An anonymous client — raw protocol, nats.go, and the red team's rtforge
// run both from the host and from inside an attacker's build — is refused,
// so it can neither list jobs nor swap a queued victim's source; a client
// with the generated credentials works; the victim, queued behind the
// attacker, builds its own source.
func TestSecurityNATSJobStoreForgery(t *testing.T) {
	testenv.NeedTool(t, "cargo")
	rtforge := buildRTForge(t)
	data := securityData(t, "nats-job-store-forgery")
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	natsURL := "nats://" + addr
	s, c := server(t, "", "--workers", "1", "--nats-listen", addr)
	harness.WaitReady(t, c)
	creds := filepath.Join(s.DataDir, "store", "auth", "member.nk")
	seed, err := os.ReadFile(creds)
	if err != nil {
		t.Fatalf("no generated credentials: %v", err)
	}
	if fi, _ := os.Stat(creds); fi.Mode().Perm() != 0o600 {
		t.Errorf("credentials mode %04o", fi.Mode().Perm())
	}

	// The attacker's project: its rustc-wrapper runs rtforge against the
	// store while the fetch phase has the network, then tries to read the
	// credentials file; build.rs prints what it got.
	att := filepath.Join(t.TempDir(), "cargo-nats-swap")
	harness.CopyTree(t, filepath.Join(data, "cargo-nats-swap"), att)
	wrap := filepath.Join(att, "tools", "wrap.sh")
	b, _ := os.ReadFile(wrap)
	b = []byte(strings.NewReplacer("@NATS_URL@", natsURL, "@CREDS@", creds).Replace(string(b)))
	os.WriteFile(wrap, b, 0o755)
	rb, _ := os.ReadFile(rtforge)
	os.WriteFile(filepath.Join(att, "tools", "rtforge"), rb, 0o755)
	os.WriteFile(filepath.Join(att, "tools", "evil.tar.gz"), harness.Targz(t, filepath.Join(data, "evil-src", "victim-app"), "victim-app"), 0o644)
	victimArchive := harness.Targz(t, filepath.Join(data, "cargo-victim"), "cargo-victim")
	victimSum := sha256.Sum256(victimArchive)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	attID, err := c.SubmitArchive(ctx, harness.Targz(t, att, "cargo-nats-swap"), "cargo-nats-swap.tar.gz", harness.NewNonce())
	if err != nil {
		t.Fatal(err)
	}
	victimNonce := harness.NewNonce()
	victimID, err := c.SubmitArchive(ctx, victimArchive, "cargo-victim.tar.gz", victimNonce)
	if err != nil {
		t.Fatal(err)
	}

	// From the host, with the listener's address in hand (the strongest
	// network position an attacker can have).
	if reply := rawNATSConnect(t, addr); !strings.Contains(reply, "-ERR") || !strings.Contains(reply, "Authorization Violation") {
		t.Errorf("raw CONNECT without credentials answered %q", reply)
	}
	if nc, err := nats.Connect(natsURL, nats.Timeout(3*time.Second), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Error("anonymous nats.go client connected")
	} else if !errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("anonymous nats.go client: %v", err)
	}
	for _, u := range []string{"nats://kettle:kettle@" + addr, "nats://kettle@" + addr} {
		if nc, err := nats.Connect(u, nats.Timeout(3*time.Second), nats.MaxReconnects(0)); err == nil {
			nc.Close()
			t.Errorf("guessed credentials accepted (%s)", u)
		}
	}
	for _, args := range [][]string{{"list"}, {"steal", t.TempDir()}, {"forge", victimID, rtforge}} {
		out, err := exec.Command(rtforge, append([]string{natsURL}, args...)...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "Authorization Violation") || strings.Contains(string(out), "RTFORGE job") {
			t.Errorf("rtforge %s from the host: %v\n%s", args[0], err, out)
		}
	}

	// With the generated credentials the store is usable (so the refusals
	// above are the credentials' doing).
	kp, err := nats.NkeyOptionFromSeed(creds)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(natsURL, kp, nats.Timeout(5*time.Second), nats.MaxReconnects(0))
	if err != nil {
		t.Fatalf("with the generated credentials: %v", err)
	}
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(ctx, "kettle-jobs")
	if err != nil {
		t.Fatalf("member cannot open the jobs bucket: %v", err)
	}
	if _, err := kv.Get(ctx, victimID); err != nil {
		t.Errorf("member cannot read the victim's job: %v", err)
	}
	nc.Close()

	attEvs, err := c.Wait(ctx, attID)
	if err != nil {
		t.Fatal(err)
	}
	attLog := eventLog(attEvs)
	for _, l := range strings.Split(attLog, "\n") {
		if strings.Contains(l, "RT") {
			t.Logf("attacker's build: %.300s", l)
		}
	}
	for _, bad := range []string{"RTFORGE job", "RTFORGE queued victim", "RTFORGE swapped", victimNonce, strings.TrimSpace(lastLine(string(seed)))} {
		if strings.Contains(attLog, bad) {
			t.Errorf("the attacker's build saw %q:\n%s", bad, attLog)
		}
	}

	vEvs, err := c.Wait(ctx, victimID)
	if err != nil {
		t.Fatal(err)
	}
	res, _ := harness.ParseComplete(vEvs[len(vEvs)-1])
	if res.Status != "ok" {
		t.Fatalf("victim build: %+v\n%s", res, eventLog(vEvs))
	}
	st, err := c.Status(ctx, victimID)
	if err != nil {
		t.Fatal(err)
	}
	src, _ := st["source"].(map[string]any)
	if src["archive_sha256"] != hex.EncodeToString(victimSum[:]) {
		t.Errorf("victim's recorded source %v, uploaded %x", src["archive_sha256"], victimSum)
	}
	tarball, _ := download(t, c, victimID)
	dir := extract(t, tarball)
	prov, err := os.ReadFile(filepath.Join(dir, "provenance.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(prov), hex.EncodeToString(victimSum[:])) {
		t.Errorf("victim's provenance does not name the uploaded archive %x", victimSum)
	}
	out, err := exec.Command(filepath.Join(dir, "artifacts", "victim-app")).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "honest victim app" {
		t.Fatalf("victim's artifact printed %q (%v)", out, err)
	}
	kettleVerify(t, dir, "--nonce", victimNonce, "--allow-insecure")
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// floodProject is a Cargo crate whose build script prints n warning lines
// of size bytes each (cargo shows every `cargo:warning`), and whose binary
// embeds extra bytes of incompressible data.
func floodProject(t *testing.T, name string, lines, size, extra int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	project(t, dir, name, 0)
	bs := fmt.Sprintf(`use std::io::Write;
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let line = "a".repeat(%d);
    let out = std::io::stdout();
    let mut out = out.lock();
    for _ in 0..%d {
        writeln!(out, "cargo:warning={}", line).unwrap();
    }
    // xorshift: incompressible bytes, so the result is as large as asked.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut data = Vec::with_capacity(%d);
    for _ in 0..%d {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        data.push(x as u8);
    }
    let p = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("extra.bin");
    std::fs::write(p, data).unwrap();
}
`, size, lines, extra, extra)
	main := `static EXTRA: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/extra.bin"));
fn main() {
    println!("hello from kettle ({} extra bytes)", std::hint::black_box(EXTRA).len());
}
`
	os.WriteFile(filepath.Join(dir, "build.rs"), []byte(bs), 0o644)
	os.WriteFile(filepath.Join(dir, "src", "main.rs"), []byte(main), 0o644)
	return dir
}

// sseTotal follows a job's SSE stream to the end and returns its events
// and the number of bytes the server sent.
func sseTotal(t *testing.T, c *harness.Client, id string) ([]harness.Event, int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	resp, err := c.Do(ctx, "GET", "/build/"+id+"/events", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	cr := &countReader{r: resp.Body}
	var evs []harness.Event
	if err := harness.ReadSSE(cr, nil, func(e harness.Event) error { evs = append(evs, e); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(evs) == 0 || evs[len(evs)-1].Type != "complete" {
		t.Fatalf("stream of %s ended without complete", id)
	}
	return evs, cr.n
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// dirSize is the allocated size of the files under dir.
func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// TestSecurityLogFlood (finding log-flood-store-growth): a build that
// prints 3,000 lines of 16,000 bytes (48 MB) stores no more than its log
// budget (--max-log-bytes 2MiB here; 64 MiB by default): the SSE stream
// and the store's growth stay near 2 MiB, one summary event says what was
// dropped, and the build itself succeeds, as does an honest build beside it.
func TestSecurityLogFlood(t *testing.T) {
	testenv.NeedTool(t, "cargo")
	s, c := server(t, "", "--workers", "2", "--max-log-bytes", "2MiB")
	harness.WaitReady(t, c)
	store := filepath.Join(s.DataDir, "store")
	before := dirSize(store)
	flood := floodProject(t, "flood", 3000, 16000, 0)
	honest := filepath.Join(t.TempDir(), "honest")
	project(t, honest, "honest", 0)
	ctx := context.Background()
	floodID, err := c.SubmitArchive(ctx, harness.Targz(t, flood, "flood"), "flood.tar.gz", harness.NewNonce())
	if err != nil {
		t.Fatal(err)
	}
	honestID, err := c.SubmitArchive(ctx, harness.Targz(t, honest, "honest"), "honest.tar.gz", harness.NewNonce())
	if err != nil {
		t.Fatal(err)
	}
	evs, total := sseTotal(t, c, floodID)
	res, _ := harness.ParseComplete(evs[len(evs)-1])
	if res.Status != "ok" {
		t.Fatalf("flood build: %+v\n%s", res, harness.Tail(eventLog(evs), 20))
	}
	var summaries []string
	long := 0
	for _, e := range evs {
		if strings.Contains(e.Data, "[kettle]") && strings.Contains(e.Data, "omitted") {
			summaries = append(summaries, e.Data)
		}
		// Long lines arrive as bounded pieces (continuation events).
		if len(e.Data) > 1000 {
			long += len(e.Data)
		}
	}
	if len(summaries) != 1 || !strings.Contains(summaries[0], "log limit 2 MiB reached") {
		t.Errorf("summaries %q", summaries)
	}
	if long < 1<<20 || long > 2<<20+256<<10 {
		t.Errorf("%d bytes of long lines delivered for a 2 MiB budget", long)
	}
	if total > 2<<20+256<<10 {
		t.Errorf("the SSE stream of the flood job is %d bytes, over its 2 MiB log budget", total)
	}
	hEvs, _ := sseTotal(t, c, honestID)
	if r, _ := harness.ParseComplete(hEvs[len(hEvs)-1]); r.Status != "ok" {
		t.Fatalf("honest build: %+v\n%s", r, eventLog(hEvs))
	}
	// The store grew by the budget, the results and JetStream's own
	// bookkeeping, not by the 48 MB printed.
	if grew := dirSize(store) - before; grew > 12<<20 {
		t.Errorf("the store grew by %d bytes", grew)
	}
	t.Logf("flood job: %d events, %d SSE bytes, summary %s", len(evs), total, summaries)
}

// TestSecurityGiantResult: a build whose result is over --max-result fails
// with error_type LimitExceeded and a message naming the limit; nothing is
// downloadable; an honest build beside it succeeds.
func TestSecurityGiantResult(t *testing.T) {
	testenv.NeedTool(t, "cargo")
	_, c := server(t, "", "--workers", "2", "--max-result", "3MiB")
	harness.WaitReady(t, c)
	giant := floodProject(t, "giant", 0, 0, 6<<20)
	honest := filepath.Join(t.TempDir(), "honest")
	project(t, honest, "honest", 0)
	ctx := context.Background()
	gID, err := c.SubmitArchive(ctx, harness.Targz(t, giant, "giant"), "giant.tar.gz", harness.NewNonce())
	if err != nil {
		t.Fatal(err)
	}
	hID, err := c.SubmitArchive(ctx, harness.Targz(t, honest, "honest"), "honest.tar.gz", harness.NewNonce())
	if err != nil {
		t.Fatal(err)
	}
	gEvs, err := c.Wait(ctx, gID)
	if err != nil {
		t.Fatal(err)
	}
	res, _ := harness.ParseComplete(gEvs[len(gEvs)-1])
	if res.Status != "failed" || res.ErrorType != "LimitExceeded" || !strings.Contains(res.Error, "result size limit of 3 MiB (--max-result)") {
		t.Fatalf("giant result: %+v\n%s", res, harness.Tail(eventLog(gEvs), 10))
	}
	if code, _, body := get(t, c, "/build/"+gID+"/result"); code != 404 || !strings.Contains(body, "LimitExceeded") {
		t.Errorf("result of the failed job: %d %q", code, body)
	}
	st, _ := c.Status(ctx, gID)
	if st["error_type"] != "LimitExceeded" {
		t.Errorf("status %v", st)
	}
	hEvs, err := c.Wait(ctx, hID)
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := harness.ParseComplete(hEvs[len(hEvs)-1]); r.Status != "ok" {
		t.Fatalf("honest build: %+v", r)
	}
}

// TestSecurityNonceNote (issue 15 point 6): a multipart build without a
// nonce, and a JSON build with a short one, are accepted, and both the log
// (`vm` event) and GET /build/{id} say the evidence binds a zero-padded
// nonce; a 16-byte nonce gets no note.
func TestSecurityNonceNote(t *testing.T) {
	testenv.NeedTool(t, "cargo")
	repo := serveRepo(t, "noncenote", 0)
	_, c := server(t, "", "--workers", "1")
	harness.WaitReady(t, c)
	ct, body := multipartForm(map[string]string{"repo_url": repo.URL})
	code, h, _ := post(t, c, "/build", ct, body)
	id := h.Get("X-Kettle-Job-Id")
	if code != 200 || id == "" {
		t.Fatalf("multipart build without a nonce: %d", code)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		id, want string
	}{
		{id, "no nonce was sent"},
		{mustSubmit(t, c, harness.BuildRequest{Nonce: "0102", RepoURL: repo.URL}), "the nonce is 2 bytes"},
		{mustSubmit(t, c, harness.BuildRequest{Nonce: harness.NewNonce(), RepoURL: repo.URL}), ""},
	} {
		evs, err := c.Wait(ctx, tc.id)
		if err != nil {
			t.Fatal(err)
		}
		if res, _ := harness.ParseComplete(evs[len(evs)-1]); res.Status != "ok" {
			t.Fatalf("build: %+v", res)
		}
		noted := hasEvent(evs, "vm", "zero")
		if noted != (tc.want != "") || tc.want != "" && !hasEvent(evs, "vm", tc.want) {
			t.Errorf("vm note (want %q):\n%s", tc.want, eventLog(evs))
		}
		st, _ := c.Status(ctx, tc.id)
		note, _ := st["nonce_note"].(string)
		if st["nonce_padded"] != (tc.want != "") || !strings.Contains(note, tc.want) {
			b, _ := json.Marshal(st)
			t.Errorf("status (want %q): %s", tc.want, b)
		}
	}
}

func mustSubmit(t *testing.T, c *harness.Client, r harness.BuildRequest) string {
	t.Helper()
	id, err := c.Submit(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestSecurityCORS: a kettle without --cors-origins sends no CORS headers
// and refuses a build posted by another origin's page (a multipart form
// needs no preflight); the page's own origin and non-browser clients work.
func TestSecurityCORS(t *testing.T) {
	_, c := server(t, "")
	ct, body := multipartForm(map[string]string{"repo_url": "http://127.0.0.1:1/x.git"})
	code, h, b := post(t, c, "/build/stream", ct, body, "Origin", "https://evil.example")
	if code != 403 || h.Get("Access-Control-Allow-Origin") != "" || !strings.Contains(b, "cross-origin") {
		t.Errorf("cross-origin form POST: %d %v %q", code, h, b)
	}
	code, h, _ = post(t, c, "/build", "application/json", `{"nonce":"00"}`, "Origin", "https://evil.example")
	if code != 403 || h.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("cross-origin JSON POST: %d", code)
	}
	resp, err := c.Do(context.Background(), "GET", "/health", "", nil, "Origin", "https://evil.example")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("CORS header for an unlisted origin: %v", resp.Header)
	}
	// DNS rebinding: a page on rebind.evil.example, resolved to 127.0.0.1,
	// is same-origin for the browser; the loopback-only service refuses the
	// foreign host name.
	req, _ := http.NewRequest("POST", c.URL+"/build", strings.NewReader(`{"nonce":"00","repo_url":"http://127.0.0.1:1/x.git"}`))
	req.Host = "rebind.evil.example" + c.URL[strings.LastIndex(c.URL, ":"):]
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", "http://"+req.Host)
	rresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rresp.Body.Close()
	if rresp.StatusCode != 403 {
		t.Errorf("rebound same-origin POST: %d", rresp.StatusCode)
	}
	// The same origin (kettle's own page) and no Origin (curl, kettle remote).
	origin := strings.TrimSuffix(c.URL, "/")
	if code, _, b := post(t, c, "/build", "application/json", `{"nonce":"00","repo_url":"http://127.0.0.1:1/x.git"}`, "Origin", origin); code != 200 {
		t.Errorf("same-origin POST: %d %q", code, b)
	}
}
