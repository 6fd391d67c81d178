// Package events defines the build log event: the unit of a job's SSE stream
// and of the live output of `kettle build`. The JSON form is the peer's
// (`type` first, then the payload), so peer clients read it unchanged.
package events

import (
	"encoding/json"
	"fmt"
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
}

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
