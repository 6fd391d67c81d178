package events

import (
	"strings"
	"testing"
	"time"
)

type rec []Event

func (r *rec) Emit(e Event) { *r = append(*r, e) }

func TestBudget(t *testing.T) {
	b := func(n int) Event { return Msgf(Build, "%s", strings.Repeat("x", n)) }
	for _, tc := range []struct {
		name   string
		budget Budget
		in     []Event
		want   []string // kept messages, summaries included, after Close
	}{
		{"no cap", Budget{}, []Event{b(1), b(2), b(3)}, []string{"x", "xx", "xxx"}},
		{"lines", Budget{MaxLines: 2}, []Event{b(1), b(2), b(3), b(4), Msgf(Provenance, "p"), b(5)},
			[]string{"x", "xx", "[kettle] 2 more output lines omitted (7 bytes; log limit 2 lines reached)", "p",
				"[kettle] 1 more output lines omitted (5 bytes; log limit 2 lines reached)"}},
		{"bytes", Budget{MaxBytes: 5}, []Event{b(2), b(3), b(1), Msgf(Attest, "a")},
			[]string{"xx", "xxx", "[kettle] 1 more output lines omitted (1 bytes; log limit 5 bytes reached)", "a"}},
		{"other events count, never dropped", Budget{MaxBytes: 4}, []Event{Msgf(Init, "iiii"), Msgf(Detect, "d"), b(1)},
			[]string{"iiii", "d", "[kettle] 1 more output lines omitted (1 bytes; log limit 4 bytes reached)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got rec
			c := &Capped{Next: &got, Budget: tc.budget}
			for _, e := range tc.in {
				c.Emit(e)
			}
			c.Close()
			var msgs []string
			for _, e := range got {
				msgs = append(msgs, e.Msg)
			}
			if strings.Join(msgs, "|") != strings.Join(tc.want, "|") {
				t.Errorf("got  %q\nwant %q", msgs, tc.want)
			}
		})
	}
}

// TestCappedPhases: an event that only ends a phase is no log line: it
// passes a full budget and does not count.
func TestCappedPhases(t *testing.T) {
	var got rec
	c := &Capped{Next: &got, Budget: Budget{MaxLines: 1}}
	c.Emit(PhaseEvent(Build, PhaseFetch, time.Now()))
	c.Emit(Msgf(Build, "a"))
	c.Emit(PhaseEvent(Build, PhaseBuild, time.Now()))
	if len(got) != 3 || !got[0].PhaseOnly() || got[1].Msg != "a" || !got[2].PhaseOnly() {
		t.Fatalf("%+v", got)
	}
}
