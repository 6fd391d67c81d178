package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kettle-build/kettle/events"
	"github.com/kettle-build/kettle/internal/testenv"
	"github.com/kettle-build/kettle/jobs"
)

// TestEventsReconnectAfterComplete: a reconnect after `complete`, by
// Last-Event-ID or ?from, gets 204 No Content (what makes EventSource stop),
// while a resume before it still streams.
func TestEventsReconnectAfterComplete(t *testing.T) {
	srv, f := newTest(t)
	log := append(buildLog(4), events.Event{Type: events.Complete, Result: &events.Result{Status: "ok"}})
	id := f.add(jobs.StatusSucceeded, log...)
	last := len(log) - 1
	n := itoa(last)
	for _, tc := range []struct {
		name, query string
		hdr         []string
		code        int
	}{
		{"last-event-id of complete", "", []string{"Last-Event-ID", n}, 204},
		{"last-event-id beyond", "", []string{"Last-Event-ID", "99"}, 204},
		{"from past complete", "?from=" + itoa(last+1), nil, 204},
		{"from far", "?from=1000", nil, 204},
		{"from complete", "?from=" + n, nil, 200},
		{"last-event-id before complete", "", []string{"Last-Event-ID", itoa(last - 1)}, 200},
		{"fresh", "", nil, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, "GET", srv.URL+"/build/"+id+"/events"+tc.query, "", "", tc.hdr...)
			if resp.StatusCode != tc.code {
				t.Fatalf("status %d, want %d (%q)", resp.StatusCode, tc.code, body)
			}
			if tc.code == 204 && body != "" {
				t.Fatalf("204 with body %q", body)
			}
			if tc.code == 200 && !strings.Contains(body, "id: "+itoa(last)+"\n") {
				t.Fatalf("resume did not reach complete: %q", body)
			}
		})
	}
	// A running job never answers 204: the watcher waits for more.
	run := f.add(jobs.StatusRunning, buildLog(2)...)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/build/"+run+"/events?from=2", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("running job: %d", resp.StatusCode)
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

// npmInstall installs pkg@version into a fresh directory and returns its
// node_modules (the npm registry is one of the networks tests may use).
func npmInstall(t *testing.T, spec string) string {
	t.Helper()
	npm := testenv.NeedTool(t, "npm")
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--prefix", dir, spec)
	out, err := cmd.CombinedOutput()
	testenv.Need(t, err == nil, "npm install "+spec+" failed (no registry?): "+tail(string(out)))
	return filepath.Join(dir, "node_modules")
}

func tail(s string) string {
	if len(s) > 400 {
		return s[len(s)-400:]
	}
	return s
}

// TestEventSourceStopsAfterComplete runs the `eventsource` package from the
// npm registry under node against a finished job: it gets every event once,
// the stream ends after `complete`, its automatic reconnect (Last-Event-ID)
// gets 204, and it closes for good instead of reconnecting every 3 s.
func TestEventSourceStopsAfterComplete(t *testing.T) {
	node := testenv.NeedTool(t, "node")
	mods := npmInstall(t, "eventsource@3.0.7")
	f := newFakeStore()
	var conns atomic.Int32
	h := New(f, WithSpoolDir(t.TempDir()))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/events") {
			conns.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	log := append(buildLog(6), events.Event{Type: events.Complete, Result: &events.Result{Status: "ok"}})
	id := f.add(jobs.StatusSucceeded, log...)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join("..", "testdata", "clients", "eventsource-client.js"),
		srv.URL+"/build/"+id+"/events", "15000")
	cmd.Env = append(cmd.Environ(), "NODE_PATH="+mods)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	var res struct {
		Closed bool
		IDs    []int
		Errors int
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("client output %q: %v", out, err)
	}
	if !res.Closed {
		t.Fatalf("EventSource still open after 15 s: %s", out)
	}
	if len(res.IDs) != len(log) {
		t.Fatalf("got event ids %v, want 0..%d once each", res.IDs, len(log)-1)
	}
	for i, v := range res.IDs {
		if v != i {
			t.Fatalf("event ids %v", res.IDs)
		}
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2 (the stream and one reconnect answered 204)", n)
	}
}
