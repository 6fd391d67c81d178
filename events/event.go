// Package events defines the build log event: the unit of a job's SSE stream
// and of the live output of `kettle build`. The JSON form is the peer's
// (`type` first, then the payload), so peer clients read it unchanged.
package events

import (
	"encoding/json"
	"fmt"
	"time"
)

// Type names an event kind.
type Type string

// Event kinds, in the order a build emits them.
const (
	Queued     Type = "queued"
	VM         Type = "vm"
	Init       Type = "init"
	Detect     Type = "detect"
	Build      Type = "build"
	Provenance Type = "provenance"
	Attest     Type = "attest"
	Complete   Type = "complete"
)

// Result is the payload of the terminal `complete` event.
type Result struct {
	Status    string `json:"status"` // "ok" or "failed"
	Error     string `json:"error,omitempty"`
	ErrorType string `json:"error_type,omitempty"`
}

// Event is one entry of a build's log.
type Event struct {
	Type     Type
	Msg      string  // every type but queued and complete
	Position int     // queued only
	Result   *Result // complete only
	// Cont marks a piece of a long output line that continues the
	// previous event's Msg (see Split): a client joins them to get the line.
	Cont bool
	// Phase, when set, reports that a phase of the job ended. It is a
	// field, never text: sinks record it (job state, metrics) without
	// reading Msg. It is not part of the JSON form, and an event with a
	// Phase and no Msg (see PhaseEvent) is not a log line: the job store
	// keeps it out of the stored log and SSE.
	Phase *Phase
	// Toolchain, on the `detect` event, names the detected driver
	// ("cargo", "nix", "pnpm", "go"; see Detected). Like Phase it is a
	// field, never text, and not part of the JSON form: the peer's detect
	// event carries only msg, so the stored log and SSE stay the peer's
	// bytes while the job store records it as job state.
	Toolchain string
}

// Detected is the `detect` event of a build with driver name (the
// toolchain) and title ("Cargo"): the peer's message, the typed name.
func Detected(name, title string) Event {
	return Event{Type: Detect, Msg: "Detected " + title + " project", Toolchain: name}
}

// Phase names, in the order a job runs them.
const (
	PhaseClone      = "clone"   // git clone of repo_url
	PhaseExtract    = "extract" // unpacking an uploaded archive
	PhaseDetect     = "detect"
	PhaseEvaluate   = "evaluate" // lockfile and toolchain inputs (nix: evaluation)
	PhaseFetch      = "fetch"
	PhaseBuild      = "build"
	PhaseCollect    = "collect" // artifacts copied and hashed
	PhaseProvenance = "provenance"
	PhaseAttest     = "attest"
	PhasePack       = "pack"  // the result tarball
	PhaseStore      = "store" // the tarball into the job store
)

// Phase is one timed step of a job.
type Phase struct {
	Name     string
	Start    time.Time
	Duration time.Duration
}

type phaseJSON struct {
	Name     string    `json:"name"`
	Start    time.Time `json:"start"`
	Duration float64   `json:"duration"` // seconds
}

// MarshalJSON writes {"name","start" (RFC 3339 UTC),"duration" (seconds)}.
func (p Phase) MarshalJSON() ([]byte, error) {
	return json.Marshal(phaseJSON{p.Name, p.Start.UTC(), p.Duration.Seconds()})
}

// UnmarshalJSON reads MarshalJSON's form.
func (p *Phase) UnmarshalJSON(b []byte) error {
	var v phaseJSON
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*p = Phase{Name: v.Name, Start: v.Start, Duration: time.Duration(v.Duration * float64(time.Second))}
	return nil
}

// PhaseEvent reports that phase name, begun at start, just ended. Its
// type is the log section the phase belongs to.
func PhaseEvent(t Type, name string, start time.Time) Event {
	return Event{Type: t, Phase: &Phase{Name: name, Start: start, Duration: time.Since(start)}}
}

// PhaseOnly reports whether e only marks the end of a phase (no log line).
func (e Event) PhaseOnly() bool { return e.Phase != nil && e.Msg == "" }

// Sink receives events in order. Implementations must not drop events.
type Sink interface {
	Emit(Event)
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(Event)

// Emit calls f(e).
func (f SinkFunc) Emit(e Event) { f(e) }

// Discard is a Sink that ignores every event.
var Discard Sink = SinkFunc(func(Event) {})

// Msgf builds a message event.
func Msgf(t Type, format string, args ...any) Event {
	return Event{Type: t, Msg: fmt.Sprintf(format, args...)}
}

// Terminal reports whether e ends a build's log.
func (e Event) Terminal() bool { return e.Type == Complete }

type queuedJSON struct {
	Type     Type `json:"type"`
	Position int  `json:"position"`
}

type msgJSON struct {
	Type Type   `json:"type"`
	Msg  string `json:"msg"`
	Cont bool   `json:"cont,omitempty"`
}

type completeJSON struct {
	Type   Type    `json:"type"`
	Result *Result `json:"result"`
}

// MarshalJSON writes the peer's compact form, `type` first.
func (e Event) MarshalJSON() ([]byte, error) {
	switch e.Type {
	case Queued:
		return json.Marshal(queuedJSON{e.Type, e.Position})
	case Complete:
		r := e.Result
		if r == nil {
			r = &Result{Status: "failed", Error: "missing result", ErrorType: "InternalError"}
		}
		return json.Marshal(completeJSON{e.Type, r})
	default:
		return json.Marshal(msgJSON{e.Type, e.Msg, e.Cont})
	}
}

// UnmarshalJSON reads any event the peer or this service writes.
func (e *Event) UnmarshalJSON(b []byte) error {
	var raw struct {
		Type     Type    `json:"type"`
		Msg      string  `json:"msg"`
		Message  string  `json:"message"` // older peer API
		Position int     `json:"position"`
		Result   *Result `json:"result"`
		Cont     bool    `json:"cont"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	if raw.Type == "" {
		return fmt.Errorf("event without type")
	}
	msg := raw.Msg
	if msg == "" {
		msg = raw.Message
	}
	*e = Event{Type: raw.Type, Msg: msg, Position: raw.Position, Result: raw.Result, Cont: raw.Cont}
	return nil
}
