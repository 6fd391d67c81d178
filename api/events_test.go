package api

import (
	"net/http"
	"testing"

	"github.com/kettle-build/kettle/events"
	"github.com/kettle-build/kettle/jobs"
)

// TestEventsFramesAreStoredBytes: an SSE frame carries the bytes the store
// holds, as they are (no decode and re-encode on the way out): a stored
// form this service's encoder would never write comes out unchanged.
func TestEventsFramesAreStoredBytes(t *testing.T) {
	srv, f := newTest(t)
	id := f.add(jobs.StatusSucceeded, events.Event{Type: events.Queued})
	const raw = `{"type":"build","msg":"x","note":"kept"}`
	f.addRaw(id, events.Msgf(events.Build, "x"), raw)
	f.emit(id, events.Event{Type: events.Complete, Result: &events.Result{Status: "ok"}})
	resp, err := http.Get(srv.URL + "/build/" + id + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	evs, _ := readSSE(t, resp.Body)
	if len(evs) != 3 || evs[1].id != 1 || evs[1].data != raw {
		t.Fatalf("events %+v, want event 1 = %s", evs, raw)
	}
}
