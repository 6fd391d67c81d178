package e2e

import (
	"context"
	"strings"
	"testing"

	"github.com/kettle-build/kettle/bench/harness"
	"github.com/kettle-build/kettle/internal/testenv"
)

// TestMaxEventsAbove100k: `--max-events 150000` is honoured through a real
// `kettle serve` and pipeline: the job log's cap is the only output cap
// (the pipeline once capped at 100,000 on its own), so a build printing
// more than 150,000 lines keeps exactly 150,000 and summarises the rest.
func TestMaxEventsAbove100k(t *testing.T) {
	testenv.NeedTool(t, "cargo")
	const limit = 150_000
	_, c := server(t, "", "--max-events", "150000")
	harness.WaitReady(t, c)
	dir := floodProject(t, "many", limit+10, 1, 0)
	id, err := c.SubmitArchive(context.Background(), harness.Targz(t, dir, "many"), "many.tar.gz", harness.NewNonce())
	if err != nil {
		t.Fatal(err)
	}
	evs, _ := sseTotal(t, c, id)
	if res, _ := harness.ParseComplete(evs[len(evs)-1]); res.Status != "ok" {
		t.Fatalf("build: %+v\n%s", res, harness.Tail(eventLog(evs), 20))
	}
	var kept int
	var summaries []string
	for _, e := range evs {
		switch {
		case e.Type != "build":
		case strings.Contains(e.Data, "[kettle]") && strings.Contains(e.Data, "omitted"):
			summaries = append(summaries, e.Data)
		default:
			kept++
		}
	}
	if kept != limit || len(summaries) != 1 || !strings.Contains(summaries[0], "log limit 150000 lines reached") {
		t.Fatalf("%d build lines kept (want %d), summaries %q", kept, limit, summaries)
	}
}
