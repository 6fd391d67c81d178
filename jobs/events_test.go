package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/kettle-build/kettle/events"
	"github.com/nats-io/nats.go"
)

// TestToolchainIsJobState: the detect event's typed Toolchain field becomes
// job state while the job runs (no message is parsed for it), and the
// stored detect event is the peer's form, without the field.
func TestToolchainIsJobState(t *testing.T) {
	s := openTest(t, t.TempDir())
	started := make(chan struct{})
	release := make(chan struct{})
	startWorker(t, s, "w1", &fakeBuilder{dir: t.TempDir(), gate: func(ctx context.Context, j *Job) error {
		close(started)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}})
	j := submitArchive(t, s, "src")
	<-started
	ctx := context.Background()
	waitFor(t, func() bool { g, _ := s.Get(ctx, j.ID); return g.Building })
	g, err := s.Get(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if g.Status != StatusRunning || g.Toolchain != "cargo" {
		t.Fatalf("running job: status %s toolchain %q", g.Status, g.Toolchain)
	}
	close(release)
	for _, e := range collect(t, s, j.ID, 0) {
		if e.ev.Toolchain != "" {
			t.Errorf("event %d read back with toolchain %q: it is not part of the stored form", e.idx, e.ev.Toolchain)
		}
	}
	es := followAll(t, s, j.ID)
	var detect []byte
	for _, e := range es {
		if e.Event.Type == events.Detect {
			detect = e.Data
		}
	}
	if string(detect) != `{"type":"detect","msg":"Detected Cargo project"}` {
		t.Errorf("stored detect event %s", detect)
	}
}

// followAll reads job id's whole log through one Follow.
func followAll(t *testing.T, s Service, id string) []Entry {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f, err := s.Follow(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for {
		es, done, err, changed := f.Next(0)
		if done {
			return es
		}
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("log of %s not complete: %d entries", id, len(es))
		}
	}
}

// TestFollowEntries: every subscriber of a job in this process reads the
// same entries (one fan-out), whose bytes are those stored, and Next from
// any index starts there; a stored event that is valid JSON but not
// compact (a line break would end an SSE frame) is handed out re-encoded.
func TestFollowEntries(t *testing.T) {
	s := openTest(t, t.TempDir())
	ctx := context.Background()
	j := submitArchive(t, s, "src") // no worker: the log is `queued`
	msg := nats.NewMsg(eventsSubject + j.ID)
	msg.Data = []byte("{\"type\":\"build\",\n\"msg\":\"two\\nlines\"}")
	msg.Header.Set(headerIndex, "1")
	if _, err := s.js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	if _, err := s.appendEvent(ctx, newCursor(j.ID), events.Event{Type: events.Complete, Result: &events.Result{Status: "ok"}}, nil); err != nil {
		t.Fatal(err)
	}
	f, err := s.Follow(ctx, j.ID) // held open: the others share its hub
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a, b := followAll(t, s, j.ID), followAll(t, s, j.ID)
	if len(a) != 3 || len(b) != 3 || &a[0] != &b[0] {
		t.Fatalf("two subscribers: %d and %d entries, shared %v", len(a), len(b), len(a) > 0 && len(b) > 0 && &a[0] == &b[0])
	}
	for i, e := range a {
		want, _ := json.Marshal(e.Event)
		if e.Index != i || !bytes.Equal(e.Data, want) {
			t.Errorf("entry %d: index %d data %s, want %s", i, e.Index, e.Data, want)
		}
	}
	if a[1].Event.Msg != "two\nlines" || bytes.ContainsAny(a[1].Data, "\r\n") {
		t.Errorf("non-compact event: %+v %q", a[1].Event, a[1].Data)
	}
	if es, done, _, _ := f.Next(2); len(es) != 1 || es[0].Index != 2 || !done {
		t.Errorf("Next(2) = %d entries, done %v", len(es), done)
	}
	if es, _, _, _ := f.Next(3); len(es) != 0 {
		t.Errorf("Next past the end = %d entries", len(es))
	}
	if _, err := s.Follow(ctx, "00000000-0000-4000-8000-000000000000"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Follow of an unknown job: %v", err)
	}
}
