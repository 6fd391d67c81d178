package jobs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kettle-build/kettle/events"
	"github.com/kettle-build/kettle/failure"
)

// floodBuilder prints lines of size bytes made of char, then writes a
// result of resultSize bytes.
type floodBuilder struct {
	lines, size int
	char        byte
	resultSize  int64
	dir         string
}

func (f *floodBuilder) Build(ctx context.Context, j *Job, sink events.Sink) (*Outcome, error) {
	sink.Emit(events.Detected("cargo", "Cargo"))
	sink.Emit(events.Msgf(events.Build, "Running `cargo build`"))
	line := strings.Repeat(string(f.char), f.size)
	for i := 0; i < f.lines; i++ {
		sink.Emit(events.Msgf(events.Build, "%s", line))
	}
	sink.Emit(events.Msgf(events.Provenance, "Wrote provenance.json"))
	p := filepath.Join(f.dir, j.ID+".tar.gz")
	fh, err := os.Create(p)
	if err != nil {
		return nil, err
	}
	if err := fh.Truncate(f.resultSize); err != nil {
		fh.Close()
		return nil, err
	}
	fh.Close()
	return &Outcome{ResultPath: p, ResultName: "demo", Toolchain: "cargo"}, nil
}

// TestMaxLogBytes: output beyond the byte budget is dropped and summarised
// once, the build still succeeds, and what is stored stays within the
// budget — also for lines that JSON escaping inflates six-fold.
func TestMaxLogBytes(t *testing.T) {
	for _, tc := range []struct {
		name string
		char byte
		cost int // stored bytes of one 1,000-byte line
	}{
		{"plain", 'a', 1000 + eventOverhead},
		{"escaped", '<', 6000 + eventOverhead},
		{"control", '\x01', 6000 + eventOverhead},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTest(t, t.TempDir(), WithMaxLogBytes(100<<10))
			startWorker(t, s, "w1", &floodBuilder{lines: 2000, size: 1000, char: tc.char, resultSize: 10, dir: t.TempDir()})
			j := submitArchive(t, s, "src")
			evs := collect(t, s, j.ID, 0)
			if r := evs[len(evs)-1].ev.Result; r.Status != "ok" {
				t.Fatalf("the build did not go on: %+v", r)
			}
			var lines, summaries int
			var summary string
			for _, e := range evs {
				if e.ev.Type == events.Build && strings.HasPrefix(e.ev.Msg, "[kettle]") {
					summaries++
					summary = e.ev.Msg
				} else if e.ev.Type == events.Build && len(e.ev.Msg) == 1000 {
					lines++
				}
			}
			// The other events (vm, detect, Running …) take under 1 KiB.
			if max, min := (100<<10)/tc.cost, (100<<10-1024)/tc.cost; summaries != 1 || lines > max || lines < min {
				t.Fatalf("%d lines kept (want %d-%d), %d summaries", lines, min, max, summaries)
			}
			want := []string{"omitted", "100 KiB"}
			for _, w := range want {
				if !strings.Contains(summary, w) {
					t.Errorf("summary %q lacks %q", summary, w)
				}
			}
			if !strings.Contains(summary, "more output lines") {
				t.Errorf("summary %q", summary)
			}
			// The JetStream message sizes of the job's subject stay near
			// the budget.
			var stored uint64
			st, err := s.evs.Info(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			stored = st.State.Bytes
			if stored > 100<<10+16<<10 {
				t.Errorf("events stream holds %d bytes for a 100 KiB budget", stored)
			}
		})
	}
}

// TestMaxEventsGoverns: the store's own cap (--max-events) is the only line
// cap: the pipeline has no cap of its own (events.Budget is the one cap),
// so a value above the pipeline's old fixed 100,000 takes effect too. A
// small cap shows the mechanism without writing 100,000 events.
func TestMaxEventsGoverns(t *testing.T) {
	s := openTest(t, t.TempDir(), WithMaxEvents(105))
	startWorker(t, s, "w1", &floodBuilder{lines: 110, size: 1, char: 'x', resultSize: 10, dir: t.TempDir()})
	j := submitArchive(t, s, "src")
	evs := collect(t, s, j.ID, 0)
	var lines int
	var summary string
	for _, e := range evs {
		if e.ev.Type == events.Build && e.ev.Msg == "x" {
			lines++
		}
		if strings.HasPrefix(e.ev.Msg, "[kettle]") {
			summary = e.ev.Msg
		}
	}
	// "Running …" is the first of the 105 kept lines.
	if lines != 104 || !strings.Contains(summary, "6 more output lines omitted") || !strings.Contains(summary, "105 lines") {
		t.Fatalf("%d lines kept, summary %q", lines, summary)
	}
}

// TestMaxResult: a result over the limit fails the job with LimitExceeded
// and a message naming the limit; nothing is stored. One at the limit is
// stored.
func TestMaxResult(t *testing.T) {
	s := openTest(t, t.TempDir(), WithMaxResult(1<<20))
	dir := t.TempDir()
	startWorker(t, s, "w1", &floodBuilder{resultSize: 1<<20 + 1, dir: dir})
	j := submitArchive(t, s, "src")
	evs := collect(t, s, j.ID, 0)
	r := evs[len(evs)-1].ev.Result
	if r.Status != "failed" || r.ErrorType != string(failure.LimitExceeded) ||
		!strings.Contains(r.Error, "result size limit of 1 MiB (--max-result)") || !strings.Contains(r.Error, "1.0 MiB") {
		t.Fatalf("complete %+v", r)
	}
	if _, _, err := s.Result(context.Background(), j.ID); !errors.Is(err, ErrNoResult) && err == nil {
		t.Fatal("an over-limit result is downloadable")
	}
	if _, err := s.objs.GetInfo(context.Background(), resultObject(j.ID)); err == nil {
		t.Fatal("an over-limit result was stored")
	}
	if _, err := os.Stat(filepath.Join(dir, j.ID+".tar.gz")); !os.IsNotExist(err) {
		t.Errorf("result file left behind: %v", err)
	}

	s2 := openTest(t, t.TempDir(), WithMaxResult(1<<20))
	startWorker(t, s2, "w1", &floodBuilder{resultSize: 1 << 20, dir: t.TempDir()})
	j2 := submitArchive(t, s2, "src")
	evs = collect(t, s2, j2.ID, 0)
	if r := evs[len(evs)-1].ev.Result; r.Status != "ok" {
		t.Fatalf("result at the limit: %+v", r)
	}
}

// TestNonceNote: a job with no nonce or one shorter than 16 bytes gets a
// `vm` event saying that the evidence binds a zero-padded nonce; a full
// nonce gets none.
func TestNonceNote(t *testing.T) {
	s := openTest(t, t.TempDir())
	startWorker(t, s, "w1", &fakeBuilder{dir: t.TempDir()})
	for _, tc := range []struct {
		nonce []byte
		want  string
	}{
		{nil, "no nonce was sent"},
		{[]byte{1, 2, 3}, "the nonce is 3 bytes"},
		{make([]byte, 15), "zero-padded to 16 bytes"},
		{make([]byte, 16), ""},
	} {
		j, err := s.Submit(context.Background(), Request{Nonce: tc.nonce, Archive: strings.NewReader("src"), Source: Source{ArchiveName: "demo.zip"}})
		if err != nil {
			t.Fatal(err)
		}
		var notes []string
		for _, e := range collect(t, s, j.ID, 0) {
			if e.ev.Type == events.VM && strings.Contains(e.ev.Msg, "nonce") {
				notes = append(notes, e.ev.Msg)
			}
		}
		if tc.want == "" && len(notes) != 0 || tc.want != "" && (len(notes) != 1 || !strings.Contains(notes[0], tc.want)) {
			t.Errorf("nonce %x: vm notes %q, want %q", tc.nonce, notes, tc.want)
		}
		if got := NonceNote(j.Nonce); (got == "") != (tc.want == "") {
			t.Errorf("NonceNote(%q) = %q", j.Nonce, got)
		}
	}
}

// TestStoreProgress: storing a result that takes longer than
// storeProgressEvery appends "Storing the result: x of y" events, growing,
// after the build's events and before `complete`; the result is intact.
func TestStoreProgress(t *testing.T) {
	prev := storeProgressEvery
	storeProgressEvery = time.Nanosecond // every chunk: no test waits half a second
	t.Cleanup(func() { storeProgressEvery = prev })
	s := openTest(t, t.TempDir())
	startWorker(t, s, "w1", &floodBuilder{resultSize: 3 << 20, dir: t.TempDir()})
	j := submitArchive(t, s, "src")
	evs := collect(t, s, j.ID, 0)
	if r := evs[len(evs)-1].ev.Result; r == nil || r.Status != "ok" {
		t.Fatalf("complete %+v", evs[len(evs)-1].ev)
	}
	var storing []string
	provenance := -1
	for i, e := range evs {
		switch {
		case e.ev.Type == events.Provenance:
			provenance = i
		case strings.HasPrefix(e.ev.Msg, "Storing the result: "):
			if e.ev.Type != events.VM || provenance < 0 || i == len(evs)-1 {
				t.Errorf("event %d %+v out of place", i, e.ev)
			}
			storing = append(storing, e.ev.Msg)
		}
	}
	if len(storing) < 2 {
		t.Fatalf("%d store progress events for a 3 MiB result: %q", len(storing), storing)
	}
	if !strings.HasSuffix(storing[0], " of 3 MiB") || storing[0] == storing[len(storing)-1] {
		t.Errorf("store progress %q", storing)
	}
	if got := readResult(t, s, j.ID); len(got) != 3<<20 {
		t.Errorf("stored result is %d bytes", len(got))
	}
}
