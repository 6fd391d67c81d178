package main

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kettle-build/kettle/client"
	"github.com/kettle-build/kettle/events"
)

type remoteSyncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *remoteSyncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *remoteSyncBuf) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func TestPlainView(t *testing.T) {
	var b bytes.Buffer
	v := &plainView{w: &b}
	v.Event(0, events.Event{Type: events.Queued, Position: 2})
	v.Event(1, events.Msgf(events.Build, "   Compiling x"))
	v.Note("events: %s; retrying in %s", "connection reset", "1s")
	v.Event(2, events.Event{Type: events.Complete, Result: &events.Result{Status: "failed", Error: "boom", ErrorType: "BuildFailed"}})
	v.Close(nil)
	want := "[queued] position 2\n[build]    Compiling x\nkettle remote: events: connection reset; retrying in 1s\n[complete] failed (BuildFailed): boom\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestLiveView(t *testing.T) {
	var (
		b   remoteSyncBuf
		mu  sync.Mutex
		now = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	v := newLiveView(&b, "1234abcd", 50, clock)
	v.Event(0, events.Event{Type: events.Queued, Position: 1})
	advance(time.Second)
	v.Event(1, events.Msgf(events.Init, "Extracted 3 files"))
	advance(65 * time.Second)
	v.Event(2, events.Msgf(events.Build, "evil \x1b]52;c;cGF3bmVk\x07 line\twith tab and a very long tail that must be cut, cut, cut"))
	for i := range 10 {
		advance(100 * time.Millisecond)
		v.Event(3+i, events.Msgf(events.Build, "line %d", i))
	}
	advance(time.Second)
	v.Note("events: connection reset; retrying in 1s")
	out := b.String()
	for _, want := range []string{"● queued (position 1) · 00:00 · job 1234abcd", "● building · 01:06", "\r\x1b[7A\x1b[J", "[build] line 9", "kettle remote: events: connection reset"} {
		if !strings.Contains(out, want) {
			t.Errorf("live view lacks %q:\n%q", want, out)
		}
	}
	if strings.Contains(out, "\x1b]52") || strings.Contains(out, "\x07") {
		t.Errorf("a control sequence from the build log reached the terminal:\n%q", out)
	}
	for _, l := range strings.Split(out, "\n") {
		l = strings.NewReplacer("\x1b[1m", "", "\x1b[2m", "", "\x1b[0m", "", "\x1b[J", "", "\r", "").Replace(l)
		if i := strings.LastIndex(l, "A"); strings.HasPrefix(l, "\x1b[") && i > 0 {
			l = l[i+1:]
		}
		if n := len([]rune(l)); n > 50 && !strings.HasPrefix(l, "kettle remote:") {
			t.Errorf("line of %d runes wraps a 50-column terminal: %q", n, l)
		}
	}
	v.Close(&events.Result{Status: "failed", Error: "boom", ErrorType: "BuildFailed"})
	tail := b.String()[len(out):]
	if !strings.Contains(tail, "✘ build 1234abcd failed after 01:08; last log lines:") || !strings.Contains(tail, "  [build] line 0") {
		t.Errorf("failure summary:\n%s", tail)
	}
	v.Close(nil) // idempotent
}

func TestFmtElapsed(t *testing.T) {
	for d, want := range map[time.Duration]string{0: "00:00", 61 * time.Second: "01:01", 3723 * time.Second: "1:02:03"} {
		if got := fmtElapsed(d); got != want {
			t.Errorf("fmtElapsed(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestServerURL(t *testing.T) {
	for in, want := range map[string]string{
		"localhost:8080":       "http://localhost:8080",
		"127.0.0.1:9":          "http://127.0.0.1:9",
		"[::1]:8080":           "http://[::1]:8080",
		"kettle.example.com":   "https://kettle.example.com",
		"https://k.example/x/": "https://k.example/x/",
		"http://10.0.0.1:8080": "http://10.0.0.1:8080",
	} {
		if got, err := serverURL(in); err != nil || got != want {
			t.Errorf("serverURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "ftp://x", "http://"} {
		if _, err := serverURL(bad); err == nil {
			t.Errorf("serverURL(%q) accepted", bad)
		}
	}
}

// TestRemoteServerErrors: what the user is told when the server answers
// with an error, on a test double of the API.
func TestRemoteServerErrors(t *testing.T) {
	old := remoteBackoff
	remoteBackoff = client.Backoff{Base: time.Millisecond, Max: 2 * time.Millisecond, Attempts: 3, MaxRetryAfter: 5 * time.Millisecond}
	t.Cleanup(func() { remoteBackoff = old })
	t.Setenv("KETTLE_TOKEN", "")
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module x\n"), 0o644)
	const id = "0b0e5f4c-1111-4222-8333-444455556666"
	for _, tc := range []struct {
		name    string
		args    []string
		handler http.HandlerFunc
		code    int
		msg     string
	}{
		{"queue full", []string{"build", dir}, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "0")
			http.Error(w, "queue full, retry later", 503)
		}, 1, "the server is busy (503 queue full, retry later): try again later"},
		{"too large", []string{"build", dir}, func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "request body too large (the archive may be at most 10 bytes)", 413)
		}, 2, "the source is larger than the server accepts (413 request body too large (the archive may be at most 10 bytes)): leave build outputs out of the upload, or raise the server's --max-upload"},
		{"single build used", []string{"build", "--repo", "https://h/r"}, func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "this CVM has already accepted a build", 409)
		}, 1, "a single-build server takes one build"},
		{"refused repo", []string{"build", "--repo", "ext::sh"}, func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "repo_url: unsupported scheme", 400)
		}, 2, "the server rejected the request: repo_url: unsupported scheme"},
		{"events keep failing", []string{"events", id}, func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "internal error", 500)
		}, 1, "server error at SERVER: 500 internal error"},
		{"proxy error page", []string{"status", id}, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(502)
			fmt.Fprint(w, "<html><body>Bad Gateway</body></html>")
		}, 1, "server error at SERVER: 502 \n"},
		{"result not ready", []string{"result", id, "-o", filepath.Join(dir, "r.tgz")}, func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "build is running; no result yet", 404)
		}, 1, "build is running; no result yet (SERVER)"},
		{"build failed", []string{"build", "--repo", "https://h/r"}, func(w http.ResponseWriter, r *http.Request) {
			if r.Method == "POST" {
				fmt.Fprintf(w, `{"job_id":%q}`, id)
				return
			}
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "id: 0\ndata: {\"type\":\"queued\",\"position\":0}\n\nid: 1\ndata: {\"type\":\"complete\",\"result\":{\"status\":\"failed\",\"error\":\"could not clone\",\"error_type\":\"InvalidSource\"}}\n\n")
		}, 2, "build " + id + " failed (InvalidSource): could not clone"}, // the source's fault: docs/remote.md
		{"build failed on its merits", []string{"build", "--repo", "https://h/r"}, func(w http.ResponseWriter, r *http.Request) {
			if r.Method == "POST" {
				fmt.Fprintf(w, `{"job_id":%q}`, id)
				return
			}
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "id: 0\ndata: {\"type\":\"queued\",\"position\":0}\n\nid: 1\ndata: {\"type\":\"complete\",\"result\":{\"status\":\"failed\",\"error\":\"build failed\",\"error_type\":\"BuildFailed\"}}\n\n")
		}, 1, "build " + id + " failed (BuildFailed): build failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			r := remoteCLI(t, append(tc.args, "--server", srv.URL)...)
			msg := strings.ReplaceAll(tc.msg, "SERVER", srv.URL)
			if r.code != tc.code || !strings.Contains(r.stderr, msg) {
				t.Errorf("want exit %d and %q; got %s", tc.code, msg, r)
			}
		})
	}
}

// TestRemoteBuildHasVerifyFlags: `kettle remote build` takes every policy
// flag of `kettle verify`, so the two never drift apart.
func TestRemoteBuildHasVerifyFlags(t *testing.T) {
	flagsOf := func(help string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(help, "\n") {
			if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(l, "  -") {
				m[strings.TrimPrefix(f[0], "-")] = true
			}
		}
		return m
	}
	var vb, rb bytes.Buffer
	runVerify(t.Context(), []string{"-h"}, &vb, &vb)
	runRemote(t.Context(), []string{"build", "-h"}, &rb, &rb)
	verifyFlags, remoteFlags := flagsOf(vb.String()), flagsOf(rb.String())
	if len(verifyFlags) < 10 {
		t.Fatalf("could not read kettle verify's flags:\n%s", vb.String())
	}
	for f := range verifyFlags {
		if f != "nonce" && !remoteFlags[f] {
			t.Errorf("kettle remote build lacks kettle verify's --%s", f)
		}
	}
}
