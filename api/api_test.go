package api

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kettle-build/kettle/events"
	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/jobs"
)

func newTest(t *testing.T, opts ...Option) (*httptest.Server, *fakeStore) {
	t.Helper()
	f := newFakeStore()
	opts = append([]Option{WithSpoolDir(t.TempDir()), WithLogger(slog.New(slog.DiscardHandler))}, opts...)
	srv := httptest.NewServer(New(f, opts...))
	t.Cleanup(srv.Close)
	return srv, f
}

func do(t *testing.T, method, url, ct, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// checkPlainError asserts docs/api.md's error body: plain text, one line.
func checkPlainError(t *testing.T, resp *http.Response, body string, code int, want string) {
	t.Helper()
	if resp.StatusCode != code {
		t.Fatalf("status %d, want %d (body %q)", resp.StatusCode, code, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q, want text/plain", ct)
	}
	if strings.Count(strings.TrimSuffix(body, "\n"), "\n") != 0 {
		t.Errorf("body not one line: %q", body)
	}
	if !strings.Contains(body, want) {
		t.Errorf("body %q does not contain %q", body, want)
	}
}

func TestHealthReady(t *testing.T) {
	srv, f := newTest(t)
	resp, body := do(t, "GET", srv.URL+"/health", "", "")
	if resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("health: %d %q", resp.StatusCode, body)
	}
	resp, body = do(t, "GET", srv.URL+"/ready", "", "")
	if resp.StatusCode != 200 {
		t.Fatalf("ready: %d %q", resp.StatusCode, body)
	}
	f.readyErr = fmt.Errorf("%w: no workers", jobs.ErrNotReady)
	resp, body = do(t, "GET", srv.URL+"/ready", "", "")
	checkPlainError(t, resp, body, 503, "no workers")
	f.readyErr = errors.New("dial /var/secret/path: refused")
	resp, body = do(t, "GET", srv.URL+"/ready", "", "")
	checkPlainError(t, resp, body, 503, "not ready")
	if strings.Contains(body, "/var") {
		t.Errorf("path leaked: %q", body)
	}
}

func TestSubmitJSON(t *testing.T) {
	zip := base64.StdEncoding.EncodeToString([]byte("PK\x03\x04 fake zip"))
	for _, tc := range []struct {
		name      string
		ct        string
		body      string
		submitErr error
		code      int
		want      string
	}{
		{"wrong content type", "text/plain", `{}`, nil, 415, ""},
		{"malformed", "application/json", `{"nonce":`, nil, 400, ""},
		{"bad hex", "application/json", `{"nonce":"zz","repo_url":"https://x/y"}`, nil, 400, "invalid nonce hex"},
		{"long nonce", "application/json", `{"nonce":"` + strings.Repeat("00", 17) + `","repo_url":"https://x/y"}`, nil, 400, "nonce must be 1-16 bytes"},
		{"neither", "application/json", `{"nonce":"00"}`, nil, 400, "exactly one of repo_url or source_data is required"},
		{"both", "application/json", `{"nonce":"00","repo_url":"https://x/y","source_data":"` + zip + `"}`, nil, 400, "exactly one of repo_url or source_data is required"},
		{"refused repo", "application/json", `{"nonce":"00","repo_url":"https://blocked.example/y"}`, nil, 400, "refused: blocked"},
		{"queue full", "application/json", `{"nonce":"00","repo_url":"https://x/y"}`, jobs.ErrQueueFull, 503, "queue is full"},
		{"single build", "application/json", `{"nonce":"00","repo_url":"https://x/y"}`, jobs.ErrSingleBuildUsed, 409, "this CVM has already accepted a build"},
		{"store broken", "application/json", `{"nonce":"00","repo_url":"https://x/y"}`, errors.New("open /data/x: boom"), 500, "internal error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			check := WithRepoChecker(func(ctx context.Context, url, ref string) error {
				if strings.Contains(url, "blocked") {
					return failure.New(failure.InvalidSource, "repo_url refused: blocked host")
				}
				return nil
			})
			srv, f := newTest(t, check)
			f.submitErr = tc.submitErr
			resp, body := do(t, "POST", srv.URL+"/build", tc.ct, tc.body)
			checkPlainError(t, resp, body, tc.code, tc.want)
			if tc.code == 503 && resp.Header.Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
			if strings.Contains(body, "/data") {
				t.Errorf("server path leaked: %q", body)
			}
		})
	}
}

func TestSubmitJSONOK(t *testing.T) {
	srv, f := newTest(t)
	zip := []byte("PK\x03\x04 fake zip")
	body := `{"nonce":"000102030405060708090a0b0c0d0e0f","source_data":"` + base64.StdEncoding.EncodeToString(zip) + `","source_name":"p.zip"}`
	resp, got := do(t, "POST", srv.URL+"/build", "application/json", body)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d %q", resp.StatusCode, got)
	}
	var v map[string]string
	if err := json.Unmarshal([]byte(got), &v); err != nil || len(v["job_id"]) != 36 {
		t.Fatalf("body %q", got)
	}
	if len(f.submitted) != 1 || !bytes.Equal(f.archives[0], zip) || f.submitted[0].Source.ArchiveName != "p.zip" || len(f.submitted[0].Nonce) != 16 {
		t.Fatalf("submitted %+v", f.submitted)
	}
}

func TestAuth(t *testing.T) {
	srv, _ := newTest(t, WithAuthToken("s3cret"))
	body := `{"nonce":"00","repo_url":"https://x/y"}`
	resp, got := do(t, "POST", srv.URL+"/build", "application/json", body)
	checkPlainError(t, resp, got, 401, "bearer token")
	resp, got = do(t, "POST", srv.URL+"/build", "application/json", body, "Authorization", "Bearer nope")
	checkPlainError(t, resp, got, 401, "bearer token")
	resp, got = do(t, "POST", srv.URL+"/build", "application/json", body, "Authorization", "Bearer s3cret")
	if resp.StatusCode != 200 {
		t.Fatalf("with token: %d %q", resp.StatusCode, got)
	}
	// GET routes stay open.
	if resp, _ := do(t, "GET", srv.URL+"/health", "", ""); resp.StatusCode != 200 {
		t.Fatal("health needs no token")
	}
}

// TestCORS: no CORS headers unless --cors-origins names the origin;
// preflight answered for listed origins only; "*" when configured.
func TestCORS(t *testing.T) {
	off, _ := newTest(t)
	resp, _ := do(t, "GET", off.URL+"/health", "", "", "Origin", "https://app.example")
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("CORS on by default: %d %v", resp.StatusCode, resp.Header)
	}
	resp, _ = do(t, "OPTIONS", off.URL+"/build", "", "", "Origin", "https://app.example", "Access-Control-Request-Method", "POST")
	if resp.StatusCode != 403 || resp.Header.Get("Access-Control-Allow-Origin") != "" || resp.Header.Get("Access-Control-Allow-Methods") != "" {
		t.Fatalf("preflight with CORS off: %d %v", resp.StatusCode, resp.Header)
	}

	srv, _ := newTest(t, WithCORS("https://ok.example/", " https://two.example"))
	resp, _ = do(t, "OPTIONS", srv.URL+"/build", "", "", "Origin", "https://ok.example", "Access-Control-Request-Method", "POST")
	if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "https://ok.example" ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Authorization") || resp.Header.Get("Vary") != "Origin" {
		t.Fatalf("preflight of a listed origin: %d %v", resp.StatusCode, resp.Header)
	}
	resp, _ = do(t, "GET", srv.URL+"/health", "", "", "Origin", "https://two.example")
	if resp.Header.Get("Access-Control-Allow-Origin") != "https://two.example" {
		t.Fatalf("allowed origin: %v", resp.Header)
	}
	for _, evil := range []string{"https://evil.example", "https://ok.example.evil.example", "http://ok.example", "null"} {
		resp, _ = do(t, "GET", srv.URL+"/health", "", "", "Origin", evil)
		if resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Fatalf("foreign origin %s allowed: %v", evil, resp.Header)
		}
		resp, _ = do(t, "OPTIONS", srv.URL+"/build", "", "", "Origin", evil, "Access-Control-Request-Method", "POST")
		if resp.StatusCode != 403 || resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Fatalf("preflight of %s: %d %v", evil, resp.StatusCode, resp.Header)
		}
	}

	any, _ := newTest(t, WithCORS("*"))
	resp, _ = do(t, "OPTIONS", any.URL+"/build", "", "", "Origin", "https://app.example", "Access-Control-Request-Method", "POST")
	if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("preflight with '*': %d %v", resp.StatusCode, resp.Header)
	}
}

// TestCrossOriginPost: a page of another origin cannot submit a build even
// with a form that needs no preflight; the service's own page (same
// origin), a listed origin and non-browser clients (no Origin) can.
func TestCrossOriginPost(t *testing.T) {
	srv, f := newTest(t, WithCORS("https://ok.example"))
	host := strings.TrimPrefix(srv.URL, "http://")
	ct, body := multipartBody(t, map[string]string{"repo_url": "https://x/y"}, nil)
	for _, tc := range []struct {
		origin string
		code   int
	}{
		{"https://evil.example", 403},
		{"null", 403},
		{"http://localhost.evil.example", 403},
		{"http://" + host + ".evil.example", 403},
	} {
		resp, got := do(t, "POST", srv.URL+"/build/stream", ct, body, "Origin", tc.origin)
		if resp.StatusCode != tc.code || !strings.Contains(got, "cross-origin request refused") {
			t.Errorf("multipart POST from %s: %d %q", tc.origin, resp.StatusCode, got)
		}
		resp, got = do(t, "POST", srv.URL+"/build", "application/json", `{"nonce":"00","repo_url":"https://x/y"}`, "Origin", tc.origin)
		if resp.StatusCode != tc.code {
			t.Errorf("JSON POST from %s: %d %q", tc.origin, resp.StatusCode, got)
		}
	}
	if n := len(f.submitted); n != 0 {
		t.Fatalf("%d builds submitted from foreign origins", n)
	}
	for _, origin := range []string{"http://" + host, "https://ok.example", ""} {
		resp, got := do(t, "POST", srv.URL+"/build", "application/json", `{"nonce":"00","repo_url":"https://x/y"}`, "Origin", origin)
		if resp.StatusCode != 200 {
			t.Errorf("POST with Origin %q: %d %q", origin, resp.StatusCode, got)
		}
	}
}

// TestStatusNoncePadded: GET /build/{id} says when the evidence binds a
// zero-padded nonce (none, or shorter than 16 bytes), beside the usual
// fields.
func TestStatusNoncePadded(t *testing.T) {
	srv, _ := newTest(t)
	for _, tc := range []struct {
		name, ct, body string
		padded         bool
		note           string
	}{
		{"json 1 byte", "application/json", `{"nonce":"00","repo_url":"https://x/y"}`, true, "the nonce is 1 byte,"},
		{"json 16 bytes", "application/json", `{"nonce":"000102030405060708090a0b0c0d0e0f","repo_url":"https://x/y"}`, false, ""},
	} {
		resp, got := do(t, "POST", srv.URL+"/build", tc.ct, tc.body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", tc.name, resp.StatusCode, got)
		}
		var sub struct {
			JobID string `json:"job_id"`
		}
		json.Unmarshal([]byte(got), &sub)
		checkNoncePadded(t, srv.URL, sub.JobID, tc.padded, tc.note)
	}
	// Multipart without a nonce (the older synchronous API).
	testTarball = tarballWith(t, "hello", testProvenance)
	msrv, f := newTest(t)
	f.onSubmit = fakeWorker(f, nil)
	ct, body := multipartBody(t, map[string]string{"repo_url": "https://x/y"}, nil)
	resp, _ := do(t, "POST", msrv.URL+"/build", ct, body)
	id := resp.Header.Get("X-Kettle-Job-Id")
	if resp.StatusCode != 200 || id == "" {
		t.Fatalf("multipart build: %d %v", resp.StatusCode, resp.Header)
	}
	checkNoncePadded(t, msrv.URL, id, true, "no nonce was sent")
}

func checkNoncePadded(t *testing.T, base, id string, padded bool, note string) {
	t.Helper()
	resp, got := do(t, "GET", base+"/build/"+id, "", "")
	var st map[string]any
	if err := json.Unmarshal([]byte(got), &st); err != nil || resp.StatusCode != 200 {
		t.Fatalf("status %d %s", resp.StatusCode, got)
	}
	for _, k := range []string{"job_id", "status", "position", "created_at", "source", "error_type", "result_sha256", "attempt"} {
		if _, ok := st[k]; !ok {
			t.Errorf("status JSON lost %q: %s", k, got)
		}
	}
	if st["nonce_padded"] != padded {
		t.Errorf("nonce_padded = %v, want %v: %s", st["nonce_padded"], padded, got)
	}
	n, _ := st["nonce_note"].(string)
	if note == "" && n != "" || note != "" && !strings.Contains(n, note) {
		t.Errorf("nonce_note %q, want %q", n, note)
	}
	if _, ok := st["nonce"]; ok {
		t.Errorf("status JSON shows the nonce: %s", got)
	}
}

type sseEvent struct {
	id   int
	data string
}

// readSSE reads events until the server ends the stream.
func readSSE(t *testing.T, r io.Reader) (evs []sseEvent, comments int) {
	t.Helper()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	cur := sseEvent{id: -1}
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur.data != "" {
				evs = append(evs, cur)
			}
			cur = sseEvent{id: -1}
		case strings.HasPrefix(line, ":"):
			comments++
		case strings.HasPrefix(line, "id: "):
			n, err := strconv.Atoi(line[4:])
			if err != nil {
				t.Fatalf("bad id line %q", line)
			}
			cur.id = n
		case strings.HasPrefix(line, "data: "):
			cur.data = line[6:]
		default:
			t.Fatalf("unexpected SSE line %q", line)
		}
	}
	return evs, comments
}

func buildLog(n int) []events.Event {
	evs := []events.Event{{Type: events.Queued, Position: 0}, events.Detected("cargo", "Cargo")}
	for i := 0; i < n; i++ {
		evs = append(evs, events.Msgf(events.Build, "line %d <&>", i))
	}
	return evs
}

func TestEvents(t *testing.T) {
	srv, f := newTest(t)
	done := append(buildLog(5), events.Event{Type: events.Complete, Result: &events.Result{Status: "ok"}})
	id := f.add(jobs.StatusSucceeded, done...)

	get := func(query string, hdr ...string) (*http.Response, []sseEvent) {
		req, _ := http.NewRequest("GET", srv.URL+"/build/"+id+"/events"+query, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		evs, _ := readSSE(t, resp.Body)
		return resp, evs
	}
	resp, evs := get("")
	if resp.Header.Get("Content-Type") != "text/event-stream" || resp.Header.Get("Cache-Control") != "no-cache" ||
		resp.Header.Get("X-Accel-Buffering") != "no" {
		t.Fatalf("headers %v", resp.Header)
	}
	if len(evs) != len(done) {
		t.Fatalf("got %d events, want %d", len(evs), len(done))
	}
	for i, e := range evs {
		want, _ := json.Marshal(done[i])
		if e.id != i || e.data != string(want) {
			t.Fatalf("event %d = %+v, want id %d data %s", i, e, i, want)
		}
	}
	if evs[0].data != `{"type":"queued","position":0}` || evs[len(evs)-1].data != `{"type":"complete","result":{"status":"ok"}}` {
		t.Fatalf("peer JSON form: %s … %s", evs[0].data, evs[len(evs)-1].data)
	}
	_, evs = get("?from=3")
	if len(evs) != len(done)-3 || evs[0].id != 3 {
		t.Fatalf("from=3: %+v", evs)
	}
	_, evs = get("?from=1", "Last-Event-ID", "4")
	if len(evs) != len(done)-5 || evs[0].id != 5 {
		t.Fatalf("Last-Event-ID 4: %+v", evs)
	}
	resp, body := do(t, "GET", srv.URL+"/build/"+id+"/events?from=x", "", "")
	checkPlainError(t, resp, body, 400, "from")
	resp, body = do(t, "GET", srv.URL+"/build/00000000-0000-4000-8000-000000000000/events", "", "")
	checkPlainError(t, resp, body, 404, "unknown build id")
	resp, body = do(t, "GET", srv.URL+"/build/..%2f..%2fetc/events", "", "")
	if resp.StatusCode != 404 {
		t.Fatalf("junk id: %d %q", resp.StatusCode, body)
	}
}

func TestEventsLiveAndKeepAlive(t *testing.T) {
	srv, f := newTest(t, WithKeepAlive(50*time.Millisecond))
	id := f.add(jobs.StatusQueued, events.Event{Type: events.Queued, Position: 2})
	resp, err := http.Get(srv.URL + "/build/" + id + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	type out struct {
		evs      []sseEvent
		comments int
	}
	ch := make(chan out)
	go func() {
		evs, c := readSSE(t, resp.Body)
		ch <- out{evs, c}
	}()
	time.Sleep(200 * time.Millisecond)
	f.emit(id, events.Event{Type: events.Queued, Position: 1}, events.Event{Type: events.Queued, Position: 0})
	time.Sleep(20 * time.Millisecond)
	f.emit(id, buildLog(3)[1:]...)
	f.emit(id, events.Event{Type: events.Complete, Result: &events.Result{Status: "failed", Error: "x", ErrorType: "BuildFailed"}})
	select {
	case o := <-ch:
		if len(o.evs) != 8 {
			t.Fatalf("got %d events: %+v", len(o.evs), o.evs)
		}
		for i, e := range o.evs {
			if e.id != i {
				t.Fatalf("event %d has id %d", i, e.id)
			}
		}
		if o.comments == 0 {
			t.Error("no keep-alive comment")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stream did not end after complete")
	}
}

// TestManyWatchers: every watcher, including a slow one, gets every event
// exactly once and in order, and the slow one does not hold up the others.
func TestManyWatchers(t *testing.T) {
	srv, f := newTest(t)
	id := f.add(jobs.StatusRunning, events.Event{Type: events.Queued})
	const watchers, lines = 50, 300
	var wg sync.WaitGroup
	errs := make(chan error, watchers+1)
	fastDone := make(chan struct{})
	watch := func(slow bool, wg *sync.WaitGroup) {
		defer wg.Done()
		resp, err := http.Get(srv.URL + "/build/" + id + "/events")
		if err != nil {
			errs <- err
			return
		}
		defer resp.Body.Close()
		var r io.Reader = resp.Body
		if slow {
			r = &slowReader{r: resp.Body, wait: fastDone}
		}
		evs, _ := readSSE(t, r)
		if len(evs) != lines+2 {
			errs <- fmt.Errorf("slow=%v: %d events", slow, len(evs))
			return
		}
		for i, e := range evs {
			if e.id != i {
				errs <- fmt.Errorf("slow=%v: event %d has id %d", slow, i, e.id)
				return
			}
		}
	}
	wg.Add(watchers)
	for i := 0; i < watchers; i++ {
		go watch(false, &wg)
	}
	var slowWG sync.WaitGroup
	slowWG.Add(1)
	go watch(true, &slowWG)
	time.Sleep(100 * time.Millisecond) // let them connect, so most of the log is live
	for i := 0; i < lines; i++ {
		f.emit(id, events.Msgf(events.Build, "%s %d", strings.Repeat("x", 200), i))
	}
	f.emit(id, events.Event{Type: events.Complete, Result: &events.Result{Status: "ok"}})
	waitCh := make(chan struct{})
	go func() { wg.Wait(); close(waitCh) }()
	select {
	case <-waitCh:
	case <-time.After(30 * time.Second):
		t.Fatal("fast watchers held up")
	}
	close(fastDone)
	slowWG.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// slowReader reads a trickle until wait closes, then at full speed.
type slowReader struct {
	r    io.Reader
	wait chan struct{}
}

func (s *slowReader) Read(p []byte) (int, error) {
	select {
	case <-s.wait:
	default:
		time.Sleep(5 * time.Millisecond)
		if len(p) > 64 {
			p = p[:64]
		}
	}
	return s.r.Read(p)
}

func TestResultAndStatus(t *testing.T) {
	srv, f := newTest(t)
	tarball := []byte("\x1f\x8b fake tarball bytes")
	ok := f.add(jobs.StatusSucceeded, events.Event{Type: events.Complete, Result: &events.Result{Status: "ok"}})
	f.setResult(ok, "proj.tar.gz", tarball)
	resp, body := do(t, "GET", srv.URL+"/build/"+ok+"/result", "", "")
	if resp.StatusCode != 200 || body != string(tarball) || resp.Header.Get("Content-Type") != "application/gzip" ||
		resp.Header.Get("Content-Length") != strconv.Itoa(len(tarball)) ||
		resp.Header.Get("Content-Disposition") != `attachment; filename=proj.tar.gz` {
		t.Fatalf("result: %d %v", resp.StatusCode, resp.Header)
	}
	queued := f.add(jobs.StatusQueued)
	running := f.add(jobs.StatusRunning)
	failed := f.add(jobs.StatusFailed)
	f.jobs[failed].Error, f.jobs[failed].ErrorType = "cargo build failed", "BuildFailed"
	for id, want := range map[string]string{
		queued: "queued", running: "running", failed: "build failed (BuildFailed): cargo build failed",
		"6ba7b810-9dad-41d1-80b4-00c04fd430c8": "unknown build id",
	} {
		resp, body := do(t, "GET", srv.URL+"/build/"+id+"/result", "", "")
		checkPlainError(t, resp, body, 404, want)
	}

	resp, body = do(t, "GET", srv.URL+"/build/"+queued, "", "")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status: %d %q", resp.StatusCode, body)
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"job_id", "status", "position", "created_at", "started_at", "finished_at", "toolchain",
		"source", "error", "error_type", "result_sha256"} {
		if _, ok := v[k]; !ok {
			t.Errorf("status lacks %q: %s", k, body)
		}
	}
	for _, k := range []string{"nonce", "worker", "result_name"} {
		if _, ok := v[k]; ok {
			t.Errorf("status leaks %q", k)
		}
	}
	if v["status"] != "queued" || v["position"] != 0.0 {
		t.Errorf("status body %s", body)
	}
	resp, body = do(t, "GET", srv.URL+"/build/6ba7b810-9dad-41d1-80b4-00c04fd430c8", "", "")
	checkPlainError(t, resp, body, 404, "unknown build id")
}

// tarballWith makes a result tarball holding <top>/provenance.json.
func tarballWith(t *testing.T, top, prov string) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for name, data := range map[string]string{top + "/provenance.json": prov, top + "/artifacts/hello": "bin"} {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg})
		tw.Write([]byte(data))
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

const testProvenance = `{"_type":"https://in-toto.io/Statement/v1","predicate":{"buildDefinition":{"buildType":"x","externalParameters":{"buildCommand":"cargo build","source":{"digest":{},"uri":""}},"internalParameters":{"lockfileHash":{},"toolchain":{}},"resolvedDependencies":[]},"runDetails":{"builder":{"id":"x"},"byproducts":[],"metadata":{"invocationId":"i","startedOn":"s","finishedOn":null}}},"predicateType":"https://slsa.dev/provenance/v1","subject":[{"digest":{"sha256":"aa"},"name":"hello"}]}`

// fakeWorker runs a build in the fake store when a job is submitted.
func fakeWorker(f *fakeStore, fail *events.Result) func(string) {
	return func(id string) {
		time.Sleep(10 * time.Millisecond)
		f.emit(id, events.Detected("cargo", "Cargo"), events.Msgf(events.Build, "Compiling hello"))
		if fail != nil {
			f.emit(id, events.Event{Type: events.Complete, Result: fail})
			return
		}
		f.setResultUnlocked(id)
		f.emit(id, events.Event{Type: events.Complete, Result: &events.Result{Status: "ok"}})
	}
}

var testTarball []byte

// setResultUnlocked records a result as the store does from a worker's
// outcome: the tarball and the artifact list beside it.
func (f *fakeStore) setResultUnlocked(id string) {
	f.setResult(id, "hello.tar.gz", testTarball)
	f.mu.Lock()
	f.jobs[id].Artifacts = []jobs.Artifact{{Name: "hello", SHA256: "aa", Size: 5}}
	f.mu.Unlock()
}

func multipartBody(t *testing.T, fields map[string]string, file []byte) (string, string) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, v := range fields {
		mw.WriteField(k, v)
	}
	if file != nil {
		fw, _ := mw.CreateFormFile("source", "hello.zip")
		fw.Write(file)
	}
	mw.Close()
	return mw.FormDataContentType(), buf.String()
}

func TestMultipartSync(t *testing.T) {
	testTarball = tarballWith(t, "hello", testProvenance)
	srv, f := newTest(t)
	f.onSubmit = fakeWorker(f, nil)
	ct, body := multipartBody(t, map[string]string{"repo_url": "https://example.com/hello.git", "ref": "main"}, nil)
	resp, got := do(t, "POST", srv.URL+"/build", ct, body)
	if resp.StatusCode != 200 || got != string(testTarball) || resp.Header.Get("Content-Type") != "application/gzip" {
		t.Fatalf("sync build: %d %v", resp.StatusCode, resp.Header)
	}
	if f.submitted[0].Source.Ref != "main" {
		t.Errorf("ref not passed: %+v", f.submitted[0])
	}
	for _, tc := range []struct {
		kind string
		code int
	}{{"UnsupportedToolchain", 400}, {"InvalidSource", 400}, {"BuildFailed", 500}, {"Interrupted", 500}} {
		f.onSubmit = fakeWorker(f, &events.Result{Status: "failed", Error: "it broke", ErrorType: tc.kind})
		ct, body := multipartBody(t, nil, []byte("PK\x03\x04zip"))
		resp, got := do(t, "POST", srv.URL+"/build", ct, body)
		checkPlainError(t, resp, got, tc.code, tc.kind+": it broke")
	}
}

func TestStreamAPI(t *testing.T) {
	testTarball = tarballWith(t, "hello", testProvenance)
	srv, f := newTest(t)
	f.onSubmit = fakeWorker(f, nil)
	ct, body := multipartBody(t, map[string]string{"repo_url": "https://example.com/hello.git"}, nil)
	resp, got := do(t, "POST", srv.URL+"/build/stream", ct, body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" ||
		resp.Header.Get("X-Accel-Buffering") != "no" || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("stream: %d %v", resp.StatusCode, resp.Header)
	}
	evs, _ := readSSE(t, strings.NewReader(got))
	if len(evs) < 3 {
		t.Fatalf("events %+v", evs)
	}
	for _, e := range evs[:len(evs)-1] {
		var v struct{ Type, Message string }
		if json.Unmarshal([]byte(e.data), &v); v.Type != "info" || v.Message == "" {
			t.Errorf("not an info event: %s", e.data)
		}
	}
	var last struct {
		Type   string
		Result streamResult
	}
	if err := json.Unmarshal([]byte(evs[len(evs)-1].data), &last); err != nil {
		t.Fatal(err)
	}
	r := last.Result
	if last.Type != "complete" || r.Status != "success" || r.ResultURL != "/build/"+r.BuildID+"/result" ||
		len(r.Artifacts) != 1 || r.Artifacts[0] != (streamArtifact{"hello", "aa", 5}) {
		t.Fatalf("complete: %s", evs[len(evs)-1].data)
	}

	f.onSubmit = fakeWorker(f, &events.Result{Status: "failed", Error: "nope", ErrorType: "BuildFailed"})
	_, got = do(t, "POST", srv.URL+"/build/stream", ct, body)
	evs, _ = readSSE(t, strings.NewReader(got))
	if !strings.Contains(evs[len(evs)-1].data, `"status":"failed","error":"nope","error_type":"BuildFailed"`) {
		t.Fatalf("failed complete: %s", evs[len(evs)-1].data)
	}
}

func TestMetrics(t *testing.T) {
	m := NewMetrics()
	m.SetQueueDepth(func(context.Context) (int, error) { return 3, nil })
	srv, f := newTest(t, WithMetricsCollector(m))
	id := f.add(jobs.StatusSucceeded, events.Event{Type: events.Complete, Result: &events.Result{Status: "ok"}})
	do(t, "GET", srv.URL+"/build/"+id+"/events", "", "")
	do(t, "POST", srv.URL+"/build", "application/json", `{"nonce":"00","repo_url":"https://x/y"}`)
	m.ObserveBuild("cargo", time.Second, 2*time.Second, nil)
	m.ObserveBuild("nix", 0, time.Second, failure.New(failure.BuildFailed, "x"))
	_, body := do(t, "GET", srv.URL+"/metrics", "", "")
	for _, want := range []string{
		`kettle_builds_total{error_type="",status="succeeded",toolchain="cargo"} 1`,
		`kettle_builds_total{error_type="BuildFailed",status="failed",toolchain="nix"} 1`,
		`kettle_build_duration_seconds_count{status="succeeded",toolchain="cargo"} 1`,
		`kettle_queue_wait_seconds_count 2`,
		`kettle_queue_depth 3`,
		`kettle_sse_watchers 0`,
		`kettle_upload_bytes_total`,
		`kettle_submissions_total{api="json",outcome="accepted"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestResultFileName(t *testing.T) {
	for in, want := range map[string]string{
		"": "kettle-build.tar.gz", "proj": "proj.tar.gz", "proj.tar.gz": "proj.tar.gz",
		"../../etc/x": "x.tar.gz", "a\"b\n": "ab.tar.gz",
	} {
		if got := resultFileName(&jobs.Job{ResultName: in}); got != want {
			t.Errorf("%q → %q, want %q", in, got, want)
		}
	}
}

// TestDNSRebinding: on a loopback-only service, a browser request whose
// Host is a foreign name (a page whose domain was rebound to 127.0.0.1 is
// same-origin for the browser) is refused; loopback names, listed origins'
// hosts and non-browser clients pass.
func TestDNSRebinding(t *testing.T) {
	srv, f := newTest(t, WithLoopbackHosts(true), WithCORS("https://kettle.example.com"))
	send := func(method, path, host string, hdr ...string) int {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(`{"nonce":"00","repo_url":"https://x/y"}`))
		req.Host = host
		req.Header.Set("Content-Type", "application/json")
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		method, host string
		hdr          []string
		want         int
	}{
		{"POST", "rebind.evil.example:8080", []string{"Origin", "http://rebind.evil.example:8080"}, 403},
		{"GET", "rebind.evil.example:8080", []string{"Sec-Fetch-Site", "same-origin"}, 403},
		{"POST", "127.0.0.1.evil.example", []string{"Origin", "http://127.0.0.1.evil.example"}, 403},
		{"POST", "localhost.evil.example", []string{"Origin", "http://localhost.evil.example"}, 403},
		{"POST", "127.0.0.1:8080", []string{"Origin", "http://127.0.0.1:8080"}, 200},
		{"POST", "localhost:8080", []string{"Origin", "http://localhost:8080", "Sec-Fetch-Site", "same-origin"}, 200},
		{"POST", "[::1]:8080", []string{"Origin", "http://[::1]:8080"}, 200},
		{"POST", "kettle.localhost", []string{"Origin", "http://kettle.localhost"}, 200},
		{"POST", "kettle.example.com", []string{"Origin", "https://kettle.example.com"}, 200},
		{"POST", "rebind.evil.example:8080", nil, 200}, // not a browser: curl through a proxy
	} {
		if got := send(tc.method, "/build", tc.host, tc.hdr...); got != tc.want && !(tc.method == "GET" && got == 405 && tc.want != 403) {
			t.Errorf("%s Host %s %v: %d, want %d", tc.method, tc.host, tc.hdr, got, tc.want)
		}
	}
	if n := len(f.submitted); n != 6 {
		t.Errorf("%d builds submitted, want 6", n)
	}
	// Without the option (a service listening beyond loopback) the Host is
	// not checked.
	open, _ := newTest(t)
	req, _ := http.NewRequest("GET", open.URL+"/health", nil)
	req.Host = "kettle.example.org"
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("Host check without WithLoopbackHosts: %v %v", resp, err)
	}
	resp.Body.Close()
}

// TestMetricsFromJobState: the build metrics are derived from finished
// jobs' state (whichever process built them), with retries and lost
// workers counted.
func TestMetricsFromJobState(t *testing.T) {
	m := NewMetrics()
	srv, _ := newTest(t, WithMetricsCollector(m))
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { v := t0.Add(d); return &v }
	for _, j := range []*jobs.Job{
		{Status: jobs.StatusSucceeded, Toolchain: "cargo", CreatedAt: t0, StartedAt: at(time.Second), FinishedAt: at(4 * time.Second),
			Attempts: 2, LostWorkers: []string{"w1"}},
		{Status: jobs.StatusFailed, Toolchain: "", ErrorType: "Interrupted", CreatedAt: t0, StartedAt: at(0), FinishedAt: at(time.Second),
			Attempts: 3, LostWorkers: []string{"a", "b", "c"}},
		{Status: jobs.StatusFailed, Toolchain: "nix", ErrorType: "BuildFailed", CreatedAt: t0, StartedAt: at(0), FinishedAt: at(time.Second), Attempts: 1},
		{Status: jobs.StatusRunning, Toolchain: "go"}, // not finished: not counted
	} {
		m.ObserveJob(j)
	}
	_, body := do(t, "GET", srv.URL+"/metrics", "", "")
	for _, want := range []string{
		`kettle_builds_total{error_type="",status="succeeded",toolchain="cargo"} 1`,
		`kettle_builds_total{error_type="Interrupted",status="failed",toolchain="unknown"} 1`,
		`kettle_builds_total{error_type="BuildFailed",status="failed",toolchain="nix"} 1`,
		`kettle_build_duration_seconds_sum{status="succeeded",toolchain="cargo"} 3`,
		`kettle_queue_wait_seconds_count 3`,
		`kettle_lost_workers_total 4`,
		`kettle_build_retries_total 3`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(body, `toolchain="go"`) {
		t.Error("a running job was counted")
	}
}
