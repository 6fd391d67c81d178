package e2e

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kettle-build/kettle/bench/harness"
	"github.com/kettle-build/kettle/internal/testenv"
)

// TestEventSourceThroughServe (issue 18): a real EventSource
// implementation (npm `eventsource`, the WHATWG algorithm) reads a finished
// job's whole log, then reconnects once with Last-Event-ID when the stream
// ends; the server answers 204 No Content, so it closes for good instead of
// reconnecting every 3 s forever. The reconnect by `?from=` gets 204 too.
func TestEventSourceThroughServe(t *testing.T) {
	node := testenv.NeedTool(t, "node")
	npm := testenv.NeedTool(t, "npm")
	mods := t.TempDir()
	install := exec.Command(npm, "install", "--prefix", mods, "--no-audit", "--no-fund", "--no-package-lock", "eventsource@3.0.7")
	out, err := install.CombinedOutput()
	testenv.Need(t, err == nil, fmt.Sprintf("npm install eventsource (the npm registry): %v\n%s", err, out))

	repo := serveRepo(t, "es", 0)
	s, c := server(t, "")
	harness.WaitReady(t, c)
	id, evs, res := buildAndWait(t, c, harness.BuildRequest{Nonce: harness.NewNonce(), RepoURL: repo.URL})
	if res.Status != "ok" {
		t.Fatalf("%+v", res)
	}
	before := len(eventRequests(s.Log(), id)) // the harness's own
	root, _ := harness.RepoRoot()
	watch := 15 * time.Second // the client prints as soon as it gives up
	cmd := exec.Command(node, filepath.Join(root, "testdata", "clients", "eventsource-client.js"),
		c.URL+"/build/"+id+"/events", fmt.Sprint(watch.Milliseconds()))
	cmd.Env = append(cmd.Environ(), "NODE_PATH="+filepath.Join(mods, "node_modules"))
	out, err = cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	var seen struct {
		Closed bool
		IDs    []int
	}
	if err := json.Unmarshal(out, &seen); err != nil {
		t.Fatalf("client output: %v\n%s", err, out)
	}
	if len(seen.IDs) != len(evs) {
		t.Errorf("EventSource saw %d events, the log has %d", len(seen.IDs), len(evs))
	}
	if !seen.Closed {
		t.Errorf("EventSource still open after %s: it did not stop reconnecting (%s)", watch, out)
	}
	// The server's own log: one request that streamed the log, one
	// reconnect answered 204, nothing after.
	codes := eventRequests(s.Log(), id)[before:]
	if fmt.Sprint(codes) != "[200 204]" {
		t.Errorf("requests for the events = %v, want [200 204] (the whole log, then one reconnect told No Content)", codes)
	}
	for _, from := range []string{"?from=" + fmt.Sprint(len(evs)), "?from=" + fmt.Sprint(len(evs)+5)} {
		if code, _, body := get(t, c, "/build/"+id+"/events"+from); code != 204 || body != "" {
			t.Errorf("GET events%s after complete = %d %q, want 204 and no body", from, code, body)
		}
	}
}

// eventRequests are the statuses of a job's GET events requests, in order,
// from a server's JSON log.
func eventRequests(log, id string) []int {
	var codes []int
	for _, line := range strings.Split(log, "\n") {
		var l struct {
			Msg, Path string
			Status    int
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "http" && l.Path == "/build/"+id+"/events" {
			codes = append(codes, l.Status)
		}
	}
	return codes
}
