package e2e

import (
	"context"
	"strings"
	"testing"

	"github.com/kettle-build/kettle/bench/harness"
)

// TestPhases (issue 16): GET /build/{id} gives every phase of a finished
// job in order, each with a start and a duration, and /metrics has
// kettle_phase_duration_seconds for them, labelled by toolchain.
func TestPhases(t *testing.T) {
	repo := serveRepo(t, "phases", 0)
	_, c := server(t, "")
	harness.WaitReady(t, c)
	id, _, res := buildAndWait(t, c, harness.BuildRequest{Nonce: harness.NewNonce(), RepoURL: repo.URL})
	if res.Status != "ok" {
		t.Fatalf("%+v", res)
	}
	st, err := c.Status(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	list, _ := st["phases"].([]any)
	var names []string
	for _, p := range list {
		m, _ := p.(map[string]any)
		name, _ := m["name"].(string)
		d, ok := m["duration"].(float64)
		start, _ := m["start"].(string)
		if !ok || d < 0 || start == "" {
			t.Errorf("phase %v: no start or duration", m)
		}
		names = append(names, name)
	}
	want := "clone detect evaluate fetch build collect provenance attest pack store"
	if strings.Join(names, " ") != want {
		t.Errorf("phases = %v, want %s", names, want)
	}
	m, err := c.Metrics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, ph := range strings.Fields(want) {
		if !strings.Contains(m, `kettle_phase_duration_seconds_count{phase="`+ph+`",toolchain="cargo"} 1`) {
			t.Errorf("/metrics has no kettle_phase_duration_seconds for phase %s", ph)
		}
	}
}
