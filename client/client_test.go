package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var fastBackoff = Backoff{Base: time.Millisecond, Max: 5 * time.Millisecond, Attempts: 5, MaxRetryAfter: 20 * time.Millisecond}

func newTestClient(t *testing.T, url string, opts ...Option) *Client {
	t.Helper()
	c, err := New(url, append([]Option{WithBackoff(fastBackoff), WithToken("s3cret")}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var nonce16 = []byte("0123456789abcdef")

func archiveOf(b []byte) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

func TestNew(t *testing.T) {
	for _, bad := range []string{"", "localhost:8080", "ftp://x", "http://", "https://u:p@host"} {
		if _, err := New(bad); err == nil {
			t.Errorf("New(%q) accepted", bad)
		}
	}
	c, err := New("http://h:1/prefix/")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.url("/build/x/events", nil); got != "http://h:1/prefix/build/x/events" {
		t.Errorf("url = %s", got)
	}
}

func TestSubmitArchiveStreamed(t *testing.T) {
	archive := make([]byte, 3<<20+7) // not a multiple of the encoder's chunk
	rand.Read(archive)
	var got struct {
		Nonce, SourceName, SourceData string
		Auth, CT                      string
		Chunked                       bool
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Nonce      string `json:"nonce"`
			SourceName string `json:"source_name"`
			SourceData string `json:"source_data"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		got.Nonce, got.SourceName, got.SourceData = body.Nonce, body.SourceName, body.SourceData
		got.Auth, got.CT = r.Header.Get("Authorization"), r.Header.Get("Content-Type")
		got.Chunked = len(r.TransferEncoding) > 0
		fmt.Fprintln(w, `{"job_id":"job-1"}`)
	}))
	defer srv.Close()
	c := newTestClient(t, srv.URL)
	id, err := c.Submit(context.Background(), Request{Nonce: nonce16, Archive: archiveOf(archive), SourceName: "p.zip"})
	if err != nil {
		t.Fatal(err)
	}
	if id != "job-1" {
		t.Errorf("id = %q", id)
	}
	data, err := base64.StdEncoding.DecodeString(got.SourceData)
	if err != nil || !bytes.Equal(data, archive) {
		t.Errorf("source_data does not round-trip (%v)", err)
	}
	if got.Nonce != hex.EncodeToString(nonce16) || got.SourceName != "p.zip" || got.Auth != "Bearer s3cret" ||
		got.CT != "application/json" || !got.Chunked {
		t.Errorf("request = %+v", got)
	}
}

func TestSubmitRepoJSON(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		want := `{"nonce":"30313233343536373839616263646566","repo_url":"https://h/r.git","repo_ref":"main"}`
		if string(b) != want {
			http.Error(w, "body "+string(b), 400)
			return
		}
		fmt.Fprintln(w, `{"job_id":"j"}`)
	}))
	defer srv.Close()
	if _, err := newTestClient(t, srv.URL).Submit(context.Background(), Request{Nonce: nonce16, RepoURL: "https://h/r.git", RepoRef: "main"}); err != nil {
		t.Fatal(err)
	}
}

func TestSubmitValidates(t *testing.T) {
	c := newTestClient(t, "http://127.0.0.1:1")
	for _, r := range []Request{
		{Nonce: nil, RepoURL: "x"},
		{Nonce: make([]byte, 17), RepoURL: "x"},
		{Nonce: nonce16},
		{Nonce: nonce16, RepoURL: "x", Archive: archiveOf(nil)},
	} {
		if _, err := c.Submit(context.Background(), r); err == nil {
			t.Errorf("Submit(%+v) accepted", r)
		}
	}
}

// TestSubmitRetry: a submission is repeated only when the server cannot
// have accepted it.
func TestSubmitRetry(t *testing.T) {
	for _, tc := range []struct {
		name      string
		fail      func(w http.ResponseWriter, r *http.Request)
		wantCalls int32
		wantOK    bool
		wantIs    error
	}{
		{"503 with Retry-After is retried", func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Retry-After", "0")
			http.Error(w, "queue full", 503)
		}, 3, true, nil},
		{"429 with Retry-After is retried", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "0")
			http.Error(w, "slow down", 429)
		}, 3, true, nil},
		{"503 without Retry-After is not", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "store not ready", 503)
		}, 1, false, ErrBusy},
		{"500 is not", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "internal error", 500)
		}, 1, false, nil},
		{"502 is not", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "bad gateway", 502)
		}, 1, false, nil},
		{"400 is not", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "nonce must be 1-16 bytes", 400)
		}, 1, false, ErrRejected},
		{"401 is not", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "missing or invalid bearer token", 401)
		}, 1, false, ErrUnauthorized},
		{"a connection cut after the body is not", func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			conn, _, _ := http.NewResponseController(w).Hijack()
			conn.Close()
		}, 1, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if calls.Add(1) <= 2 {
					tc.fail(w, r)
					return
				}
				io.Copy(io.Discard, r.Body)
				fmt.Fprintln(w, `{"job_id":"j"}`)
			}))
			defer srv.Close()
			c := newTestClient(t, srv.URL)
			_, err := c.Submit(context.Background(), Request{Nonce: nonce16, Archive: archiveOf([]byte("PK\x03\x04 zip"))})
			if (err == nil) != tc.wantOK {
				t.Fatalf("err = %v", err)
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("err = %v, want %v", err, tc.wantIs)
			}
			if calls.Load() != tc.wantCalls {
				t.Errorf("%d calls, want %d", calls.Load(), tc.wantCalls)
			}
		})
	}
}

// TestSubmitConnectionRefused: nothing was sent, so retrying is safe; a
// server never reached gets few attempts and a clear error.
func TestSubmitConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	var retries []Retry
	c := newTestClient(t, "http://"+addr, WithRetryNotify(func(r Retry) { retries = append(retries, r) }))
	_, err = c.Submit(context.Background(), Request{Nonce: nonce16, RepoURL: "https://h/r"})
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), addr) {
		t.Fatalf("err = %v", err)
	}
	if len(retries) != firstContactAttempts-1 {
		t.Errorf("%d retries, want %d", len(retries), firstContactAttempts-1)
	}
}

// TestSubmitEarlyAnswer: a server that refuses a huge upload without
// reading it (413) is reported as such, not as a broken pipe.
func TestSubmitEarlyAnswer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.CopyN(io.Discard, r.Body, 1<<10)
		http.Error(w, "request body too large (the archive may be at most 1024 bytes)", 413)
	}))
	defer srv.Close()
	c := newTestClient(t, srv.URL)
	big := func() (io.ReadCloser, error) { return io.NopCloser(io.LimitReader(zeros{}, 64<<20)), nil }
	_, err := c.Submit(context.Background(), Request{Nonce: nonce16, Archive: big})
	var he *HTTPError
	if !errors.As(err, &he) || he.StatusCode != 413 || !strings.Contains(he.Message, "at most 1024 bytes") {
		t.Fatalf("err = %v", err)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

type failingReader struct{ n int }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("disk on fire")
	}
	n := min(len(p), f.n)
	f.n -= n
	return n, nil
}

func TestSubmitArchiveError(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			return
		}
		fmt.Fprintln(w, `{"job_id":"j"}`)
	}))
	defer srv.Close()
	c := newTestClient(t, srv.URL)
	open := func() (io.ReadCloser, error) { return io.NopCloser(&failingReader{n: 1 << 20}), nil }
	_, err := c.Submit(context.Background(), Request{Nonce: nonce16, Archive: open})
	if err == nil || !strings.Contains(err.Error(), "read source archive: disk on fire") {
		t.Fatalf("err = %v", err)
	}
	if calls.Load() > 1 {
		t.Errorf("retried %d times", calls.Load())
	}
}

func TestStatusRetries5xx(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch calls.Add(1) {
		case 1:
			http.Error(w, "bad gateway", 502)
		case 2:
			conn, _, _ := http.NewResponseController(w).Hijack()
			conn.Close()
		case 3:
			http.Error(w, "internal error", 500)
		default:
			if r.URL.Path != "/build/j1" || r.Header.Get("Authorization") != "Bearer s3cret" {
				http.Error(w, "wrong request", 400)
				return
			}
			fmt.Fprintln(w, `{"job_id":"j1","status":"queued","position":2,"created_at":"2026-01-02T03:04:05Z","started_at":null,"toolchain":null,"source":{"url":"https://h/r","ref":"main"},"error":null}`)
		}
	}))
	defer srv.Close()
	st, err := newTestClient(t, srv.URL).Status(context.Background(), "j1")
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != StatusQueued || st.Position == nil || *st.Position != 2 || st.Source.Ref != "main" || st.StartedAt != nil {
		t.Errorf("status = %+v", st)
	}
	if calls.Load() != 4 {
		t.Errorf("%d calls", calls.Load())
	}
}

func TestStatusPermanentErrors(t *testing.T) {
	for _, tc := range []struct {
		code int
		is   error
	}{{404, ErrNotFound}, {401, ErrUnauthorized}, {400, ErrRejected}} {
		var calls atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			http.Error(w, "unknown build id\nsecond line", tc.code)
		}))
		_, err := newTestClient(t, srv.URL).Status(context.Background(), "j")
		srv.Close()
		var he *HTTPError
		if !errors.Is(err, tc.is) || !errors.As(err, &he) || he.Message != "unknown build id" {
			t.Errorf("%d: err = %v", tc.code, err)
		}
		if calls.Load() != 1 {
			t.Errorf("%d: %d calls", tc.code, calls.Load())
		}
	}
}

func TestStatusGivesUp(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		http.Error(w, "internal error", 500)
	}))
	defer srv.Close()
	_, err := newTestClient(t, srv.URL).Status(context.Background(), "j")
	if err == nil || !strings.Contains(err.Error(), "gave up after 5 attempts") {
		t.Fatalf("err = %v", err)
	}
	if calls.Load() != int32(fastBackoff.Attempts) {
		t.Errorf("%d calls", calls.Load())
	}
}

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Base: 100 * time.Millisecond, Max: time.Second, Attempts: 10, MaxRetryAfter: 5 * time.Second}
	for n, hi := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		hi *= time.Millisecond
		for range 20 {
			if d := b.delay(n, 0); d < hi/2 || d > hi {
				t.Fatalf("delay(%d) = %v, want [%v, %v]", n, d, hi/2, hi)
			}
		}
	}
	if d := b.delay(0, 3*time.Second); d != 3*time.Second {
		t.Errorf("Retry-After 3s: %v", d)
	}
	if d := b.delay(0, time.Hour); d != 5*time.Second {
		t.Errorf("Retry-After capped: %v", d)
	}
}

func resultServer(t *testing.T, body []byte, announce string, cuts int) (*httptest.Server, *atomic.Int32) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		w.Header().Set("Content-Type", "application/gzip")
		w.Header().Set("Content-Disposition", `attachment; filename="../proj.tar.gz"`)
		w.Header().Set("X-Kettle-Result-SHA256", announce)
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		if int(n) <= cuts {
			w.Write(body[:len(body)/2])
			http.NewResponseController(w).Flush()
			conn, _, _ := http.NewResponseController(w).Hijack()
			conn.Close()
			return
		}
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv, &calls
}

func TestDownloadFile(t *testing.T) {
	body := make([]byte, 1<<20)
	rand.Read(body)
	sum := sha256.Sum256(body)
	hexSum := hex.EncodeToString(sum[:])
	dir := t.TempDir()

	srv, calls := resultServer(t, body, hexSum, 2)
	d, err := newTestClient(t, srv.URL).DownloadFile(context.Background(), "j", filepath.Join(dir, "r.tar.gz"))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(d.Path)
	if !bytes.Equal(got, body) || d.SHA256 != hexSum || d.Name != "proj.tar.gz" || calls.Load() != 3 {
		t.Errorf("download = %+v after %d calls", d, calls.Load())
	}

	srv, _ = resultServer(t, body, strings.Repeat("ab", 32), 0)
	_, err = newTestClient(t, srv.URL).DownloadFile(context.Background(), "j", filepath.Join(dir, "bad.tar.gz"))
	if !errors.Is(err, ErrIntegrity) {
		t.Errorf("wrong digest: err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "bad.tar.gz")); err == nil {
		t.Error("a download that failed its digest was kept")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}
}

func TestAttachmentName(t *testing.T) {
	for cd, want := range map[string]string{
		`attachment; filename="proj.tar.gz"`:    "proj.tar.gz",
		`attachment; filename="../../etc/x.gz"`: "x.gz",
		`attachment; filename=".bashrc"`:        "",
		`attachment; filename="a\\b.tar.gz"`:    "b.tar.gz",
		`garbage;;`:                             "",
	} {
		if got := attachmentName(cd); got != want {
			t.Errorf("attachmentName(%q) = %q, want %q", cd, got, want)
		}
	}
}

// eventLog is a test double of GET /build/{id}/events: it honours ?from
// and Last-Event-ID like the real server, and cut decides, per
// connection, after how many events to drop it (mid-way through the next
// event); -1 serves to the end.
type eventLog struct {
	mu       sync.Mutex
	frames   [][]byte
	cut      func(conn int) int
	conns    int
	lastIDs  []string
	blockNth int // on this connection, go silent after the first event
}

func newEventLog(n int) *eventLog {
	l := &eventLog{}
	for i := range n {
		var data string
		switch {
		case i == 0:
			data = `{"type":"queued","position":0}`
		case i == n-1:
			data = `{"type":"complete","result":{"status":"ok"}}`
		default:
			data = fmt.Sprintf(`{"type":"build","msg":"line %d"}`, i)
		}
		l.frames = append(l.frames, fmt.Appendf(nil, "id: %d\ndata: %s\n\n", i, data))
	}
	return l
}

func (l *eventLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.mu.Lock()
	l.conns++
	conn := l.conns
	l.lastIDs = append(l.lastIDs, r.Header.Get("Last-Event-ID"))
	l.mu.Unlock()
	from := 0
	fmt.Sscan(r.URL.Query().Get("from"), &from)
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		fmt.Sscan(v, &from)
		from++
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(200)
	io.WriteString(w, ": keep-alive\n\n")
	limit := -1
	if l.cut != nil {
		limit = l.cut(conn)
	}
	rc := http.NewResponseController(w)
	for i := from; i < len(l.frames); i++ {
		if limit >= 0 && i-from == limit {
			f := l.frames[i]
			w.Write(f[:len(f)/2]) // half an event, then the line goes dead
			rc.Flush()
			c, _, _ := rc.Hijack()
			c.Close()
			return
		}
		w.Write(l.frames[i])
		rc.Flush()
		if conn == l.blockNth {
			<-r.Context().Done()
			return
		}
	}
}

func collect(t *testing.T, c *Client, from int) ([]int, []string, error) {
	t.Helper()
	var idx []int
	var msgs []string
	_, err := c.Events(context.Background(), "j", from, func(i int, ev eventT) error {
		idx = append(idx, i)
		msgs = append(msgs, string(ev.Type)+":"+ev.Msg)
		return nil
	})
	return idx, msgs, err
}

func TestEventsResumeAfterCuts(t *testing.T) {
	l := newEventLog(50)
	l.cut = func(conn int) int {
		if conn <= 4 {
			return 7 // four drops, each mid-event
		}
		return -1
	}
	srv := httptest.NewServer(l)
	defer srv.Close()
	var retries atomic.Int32
	c := newTestClient(t, srv.URL, WithRetryNotify(func(Retry) { retries.Add(1) }))
	idx, msgs, err := collect(t, c, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range idx {
		if v != i {
			t.Fatalf("event %d delivered as %d: %v", i, v, idx)
		}
	}
	if len(idx) != 50 || msgs[1] != "build:line 1" || msgs[49] != "complete:" {
		t.Fatalf("got %d events: %v", len(idx), msgs)
	}
	want := []string{"", "6", "13", "20", "27"}
	if fmt.Sprint(l.lastIDs) != fmt.Sprint(want) {
		t.Errorf("Last-Event-ID headers = %q, want %q", l.lastIDs, want)
	}
	if retries.Load() != 4 {
		t.Errorf("%d retries", retries.Load())
	}
}

// TestEventsNoProgressGivesUp: a stream that never gets past one event
// exhausts the budget instead of spinning.
func TestEventsNoProgressGivesUp(t *testing.T) {
	l := newEventLog(10)
	l.cut = func(int) int { return 0 }
	srv := httptest.NewServer(l)
	defer srv.Close()
	_, _, err := collect(t, newTestClient(t, srv.URL), 0)
	if err == nil || !strings.Contains(err.Error(), "gave up") {
		t.Fatalf("err = %v", err)
	}
}

func TestEventsFrom(t *testing.T) {
	srv := httptest.NewServer(newEventLog(10))
	defer srv.Close()
	idx, _, err := collect(t, newTestClient(t, srv.URL), 7)
	if err != nil || fmt.Sprint(idx) != "[7 8 9]" {
		t.Fatalf("idx = %v, err = %v", idx, err)
	}
}

func TestEventsIdleReconnect(t *testing.T) {
	l := newEventLog(5)
	l.blockNth = 1
	srv := httptest.NewServer(l)
	defer srv.Close()
	c := newTestClient(t, srv.URL, WithIdleTimeout(100*time.Millisecond))
	idx, _, err := collect(t, c, 0)
	if err != nil || len(idx) != 5 {
		t.Fatalf("idx = %v, err = %v", idx, err)
	}
	if l.conns != 2 || l.lastIDs[1] != "0" {
		t.Errorf("conns = %d, Last-Event-IDs %q", l.conns, l.lastIDs)
	}
}

func TestEventsDuplicatesAndGaps(t *testing.T) {
	frames := func(body string) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, body)
		}))
	}
	dup := frames("id: 0\ndata: {\"type\":\"vm\",\"msg\":\"a\"}\n\nid: 0\ndata: {\"type\":\"vm\",\"msg\":\"a\"}\n\n" +
		"id: 1\ndata: {\"type\":\"complete\",\"result\":{\"status\":\"failed\",\"error\":\"boom\",\"error_type\":\"BuildFailed\"}}\n\n")
	defer dup.Close()
	var n int
	res, err := newTestClient(t, dup.URL).Events(context.Background(), "j", 0, func(int, eventT) error { n++; return nil })
	if err != nil || n != 2 || res.Status != "failed" || res.ErrorType != "BuildFailed" {
		t.Errorf("duplicate: n = %d, res = %+v, err = %v", n, res, err)
	}

	gap := frames("id: 0\ndata: {\"type\":\"vm\",\"msg\":\"a\"}\n\nid: 2\ndata: {\"type\":\"vm\",\"msg\":\"c\"}\n\n")
	defer gap.Close()
	_, _, err = collect(t, newTestClient(t, gap.URL), 0)
	if !errors.Is(err, ErrGap) {
		t.Errorf("gap: err = %v", err)
	}

	junk := frames("id: 0\ndata: not json\n\n")
	defer junk.Close()
	_, _, err = collect(t, newTestClient(t, junk.URL), 0)
	if !errors.Is(err, ErrProtocol) {
		t.Errorf("junk: err = %v", err)
	}
}

func TestEventsCallbackError(t *testing.T) {
	srv := httptest.NewServer(newEventLog(10))
	defer srv.Close()
	stop := errors.New("stop")
	_, err := newTestClient(t, srv.URL).Events(context.Background(), "j", 0, func(i int, _ eventT) error {
		if i == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Errorf("err = %v", err)
	}
}

func TestEventsNotFound(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		http.Error(w, "unknown build id", 404)
	}))
	defer srv.Close()
	_, _, err := collect(t, newTestClient(t, srv.URL), 0)
	if !errors.Is(err, ErrNotFound) || calls.Load() != 1 {
		t.Errorf("err = %v after %d calls", err, calls.Load())
	}
}
