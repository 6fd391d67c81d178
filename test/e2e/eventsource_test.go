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

// TestEventSourceStopsAfterComplete (issue 18): a real EventSource
// implementation (npm `eventsource`, the WHATWG algorithm) reads a finished
// job's whole log, then reconnects once with Last-Event-ID when the stream
// ends; the server answers 204 No Content, so it closes for good instead of
// reconnecting every 3 s forever. The reconnect by `?from=` gets 204 too.
func TestEventSourceStopsAfterComplete(t *testing.T) {
	node := testenv.NeedTool(t, "node")
	npm := testenv.NeedTool(t, "npm")
	mods := t.TempDir()
	install := exec.Command(npm, "install", "--prefix", mods, "--no-audit", "--no-fund", "--no-package-lock", "eventsource@3.0.7")
	out, err := install.CombinedOutput()
	testenv.Need(t, err == nil, fmt.Sprintf("npm install eventsource (the npm registry): %v\n%s", err, out))

	repo := serveRepo(t, "es", 0)
	s, c := server(t, "")
	waitReady(t, c)
	id, evs, res := buildAndWait(t, c, harness.BuildRequest{Nonce: harness.NewNonce(), RepoURL: repo.URL})
	if res.Status != "ok" {
		t.Fatalf("%+v", res)
	}
	before := len(eventRequests(s.Log(), id)) // the harness's own
	root, _ := harness.RepoRoot()
	watch := 7 * time.Second // two of EventSource's 3 s reconnect delays
	cmd := exec.Command(node, filepath.Join(root, "testdata", "clients", "eventsource-client.js"),
		c.URL+"/build/"+id+"/events", fmt.Sprint(watch.Milliseconds()))
	cmd.Env = append(cmd.Environ(), "NODE_PATH="+filepath.Join(mods, "node_modules"))
	out, err = cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	var seen struct {
		Messages   int      `json:"messages"`
		Complete   bool     `json:"complete"`
		ReadyState int      `json:"readyState"`
		IDs        []string `json:"ids"`
	}
	if err := json.Unmarshal(out, &seen); err != nil {
		t.Fatalf("client output: %v\n%s", err, out)
	}
	if seen.Messages != len(evs) || !seen.Complete {
		t.Errorf("EventSource saw %d messages (complete %v), the log has %d", seen.Messages, seen.Complete, len(evs))
	}
	if seen.ReadyState != 2 {
		t.Errorf("EventSource is in readyState %d after %s, want 2 (closed: it stopped reconnecting)", seen.ReadyState, watch)
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
