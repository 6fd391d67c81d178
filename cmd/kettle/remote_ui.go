package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/term"

	"github.com/kettle-build/kettle/events"
)

// progress shows a build's events to a person: a live view on a terminal,
// plain lines otherwise. Note prints a message of the client itself.
type progress interface {
	Event(i int, ev events.Event)
	Note(format string, args ...any)
	// Close stops the live view; the screen keeps a summary.
	Close(res *events.Result)
}

// isTerminal reports whether w is a terminal (a variable for tests).
var isTerminal = func(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func termWidth(w io.Writer) int {
	if f, ok := w.(*os.File); ok {
		if cols, _, err := term.GetSize(int(f.Fd())); err == nil && cols > 10 {
			return cols
		}
	}
	return 80
}

func newProgress(w io.Writer, job string) progress {
	if isTerminal(w) {
		return newLiveView(w, job, termWidth(w), time.Now)
	}
	return &plainView{w: w}
}

// eventLine is the plain one-line form of an event, as `kettle build`
// prints them.
func eventLine(ev events.Event) string {
	switch ev.Type {
	case events.Queued:
		return fmt.Sprintf("[queued] position %d", ev.Position)
	case events.Complete:
		r := ev.Result
		if r == nil {
			return "[complete] failed: no result"
		}
		if r.Status == "ok" {
			return "[complete] ok"
		}
		return fmt.Sprintf("[complete] %s (%s): %s", r.Status, r.ErrorType, r.Error)
	}
	return fmt.Sprintf("[%s] %s", ev.Type, ev.Msg)
}

// plainView prints one line per event.
type plainView struct {
	mu sync.Mutex
	w  io.Writer
}

func (p *plainView) Event(_ int, ev events.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintln(p.w, eventLine(ev))
}

func (p *plainView) Note(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "kettle remote: "+format+"\n", args...)
}

func (p *plainView) Close(*events.Result) {}

// liveView redraws a small region at the bottom of the terminal: the
// phase, the elapsed time and the last few log lines. Build output is
// stripped of control characters, so a build cannot drive the terminal.
type liveView struct {
	mu      sync.Mutex
	w       io.Writer
	job     string
	width   int
	now     func() time.Time
	start   time.Time
	phase   string
	tail    []string // the last tailLines lines
	history []string // the last historyLines lines, shown again on failure
	drawn   int      // lines of the region on screen
	dirty   bool
	last    time.Time
	stop    chan struct{}
	done    chan struct{}
	closed  bool
}

const (
	tailLines    = 6
	historyLines = 30
)

func newLiveView(w io.Writer, job string, width int, now func() time.Time) *liveView {
	v := &liveView{w: w, job: job, width: width, now: now, start: now(), phase: "submitted",
		stop: make(chan struct{}), done: make(chan struct{})}
	go v.ticker()
	return v
}

// ticker redraws once a second (the clock) and flushes throttled redraws.
func (v *liveView) ticker() {
	defer close(v.done)
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-v.stop:
			return
		case <-t.C:
			v.mu.Lock()
			if v.dirty || v.now().Sub(v.last) >= time.Second {
				v.draw()
			}
			v.mu.Unlock()
		}
	}
}

var phaseNames = map[events.Type]string{
	events.Queued:     "queued",
	events.VM:         "starting",
	events.Init:       "fetching source",
	events.Detect:     "detecting toolchain",
	events.Build:      "building",
	events.Provenance: "writing provenance",
	events.Attest:     "attesting",
	events.Complete:   "done",
}

func (v *liveView) Event(_ int, ev events.Event) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if p, ok := phaseNames[ev.Type]; ok {
		v.phase = p
	}
	if ev.Type == events.Queued {
		v.phase = fmt.Sprintf("queued (position %d)", ev.Position)
	}
	line := sanitize(eventLine(ev))
	v.tail = appendCapped(v.tail, line, tailLines)
	v.history = appendCapped(v.history, line, historyLines)
	// Fast builds print thousands of lines a second: redraw at most 20
	// times a second.
	if v.now().Sub(v.last) >= 50*time.Millisecond {
		v.draw()
	} else {
		v.dirty = true
	}
}

func appendCapped(s []string, line string, n int) []string {
	if len(s) == n {
		copy(s, s[1:])
		s = s[:n-1]
	}
	return append(s, line)
}

func (v *liveView) Note(format string, args ...any) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.clear()
	fmt.Fprintf(v.w, "kettle remote: "+format+"\n", args...)
	v.draw()
}

// Close clears the live region and prints the outcome; after a failure the
// last lines of the log are shown again, since the region is gone.
func (v *liveView) Close(res *events.Result) {
	v.mu.Lock()
	if v.closed {
		v.mu.Unlock()
		return
	}
	v.closed = true
	close(v.stop)
	v.mu.Unlock()
	<-v.done
	v.mu.Lock()
	defer v.mu.Unlock()
	v.clear()
	el := fmtElapsed(v.now().Sub(v.start))
	switch {
	case res == nil:
		fmt.Fprintf(v.w, "■ build %s: stopped following after %s (%s)\n", v.job, el, v.phase)
	case res.Status == "ok":
		fmt.Fprintf(v.w, "✔ build %s succeeded in %s\n", v.job, el)
	default:
		fmt.Fprintf(v.w, "✘ build %s failed after %s; last log lines:\n", v.job, el)
		for _, l := range v.history {
			fmt.Fprintf(v.w, "  %s\n", v.fit(l, 2))
		}
	}
}

func (v *liveView) clear() {
	if v.drawn > 0 {
		// Up to the region's first line, then clear to the end of screen.
		fmt.Fprintf(v.w, "\r\x1b[%dA\x1b[J", v.drawn)
		v.drawn = 0
	}
}

func (v *liveView) draw() {
	var b strings.Builder
	if v.drawn > 0 {
		fmt.Fprintf(&b, "\r\x1b[%dA\x1b[J", v.drawn)
	}
	head := fmt.Sprintf("● %s · %s · job %s", v.phase, fmtElapsed(v.now().Sub(v.start)), v.job)
	b.WriteString("\x1b[1m" + v.fit(head, 0) + "\x1b[0m\n")
	for _, l := range v.tail {
		b.WriteString("\x1b[2m  " + v.fit(l, 2) + "\x1b[0m\n")
	}
	io.WriteString(v.w, b.String())
	v.drawn = 1 + len(v.tail)
	v.dirty = false
	v.last = v.now()
}

// fit cuts s to the terminal width (minus indent) so no line wraps: a
// wrapped line would break the cursor arithmetic of the redraw.
func (v *liveView) fit(s string, indent int) string {
	max := v.width - indent - 1
	if max < 10 {
		max = 10
	}
	if utf8.RuneCountInString(s) <= max {
		return s
	}
	r := []rune(s)
	return string(r[:max-1]) + "…"
}

// sanitize drops control characters (escape sequences included) and tabs
// become spaces.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\t':
			return ' '
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == utf8.RuneError:
			return -1
		}
		return r
	}, s)
}

func fmtElapsed(d time.Duration) string {
	d = d.Round(time.Second)
	h, m, s := int(d/time.Hour), int(d/time.Minute)%60, int(d/time.Second)%60
	if h > 0 {
		return fmt.Sprintf("%d:%02d:%02d", h, m, s)
	}
	return fmt.Sprintf("%02d:%02d", m, s)
}
