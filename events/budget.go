package events

import (
	"fmt"
	"sync"

	"github.com/kettle-build/kettle/internal/bytesize"
)

// Budget is the one cap on a build log's output: at most MaxLines `build`
// events and MaxBytes of log (each event sized by the caller, as it costs
// where the log is kept). Once either is reached, later `build` events are
// dropped and counted, and one summary event stands for them, put before
// the next other event and at the end (Flush); other events are few and
// short: they count but are never dropped. The job log keeps its events
// under one (jobs, --max-events and --max-log-bytes); `kettle build`
// prints under one with the same default. Not safe for concurrent use.
type Budget struct {
	MaxLines int   // ≤ 0: no line cap
	MaxBytes int64 // ≤ 0: no byte cap

	lines, dropped      int
	bytes, droppedBytes int64
	full                string // the limit reached ("" while under both)
}

// Admit reports whether ev, which costs size bytes (its message: the
// summary reports size minus overhead as the dropped output), is kept. A
// kept event that is not a build line may need the summary of the lines
// dropped before it put first: that summary is returned too.
func (b *Budget) Admit(ev Event, size, overhead int64) (keep bool, summary *Event) {
	if ev.Type != Build {
		b.bytes += size
		return true, b.Flush()
	}
	if b.full == "" && b.MaxLines > 0 && b.lines >= b.MaxLines {
		b.full = fmt.Sprintf("%d lines", b.MaxLines)
	}
	if b.full == "" && b.MaxBytes > 0 && b.bytes+size > b.MaxBytes {
		b.full = bytesize.Format(b.MaxBytes)
	}
	if b.full != "" {
		b.dropped++
		b.droppedBytes += size - overhead
		return false, nil
	}
	b.lines++
	b.bytes += size
	return true, nil
}

// Flush returns the summary of the build lines dropped since the last
// summary, or nil if none were.
func (b *Budget) Flush() *Event {
	if b.dropped == 0 {
		return nil
	}
	e := Msgf(Build, "[kettle] %d more output lines omitted (%s; log limit %s reached)",
		b.dropped, bytesize.Format(b.droppedBytes), b.full)
	b.dropped, b.droppedBytes = 0, 0
	return &e
}

// Capped passes events on to Next under Budget, each sized by its message:
// the cap of a log that is printed, not stored (`kettle build`). Events
// that only end a phase are no log lines and pass as they are. Close
// emits the summary of what was dropped last. Safe for concurrent use.
type Capped struct {
	Next   Sink
	Budget Budget
	mu     sync.Mutex
}

// Emit implements Sink.
func (c *Capped) Emit(e Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e.PhaseOnly() {
		c.Next.Emit(e)
		return
	}
	keep, summary := c.Budget.Admit(e, int64(len(e.Msg)), 0)
	if summary != nil {
		c.Next.Emit(*summary)
	}
	if keep {
		c.Next.Emit(e)
	}
}

// Close emits the summary of the lines dropped since the last one.
func (c *Capped) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if summary := c.Budget.Flush(); summary != nil {
		c.Next.Emit(*summary)
	}
}
