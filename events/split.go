package events

import "unicode/utf8"

// MaxMsgJSON bounds the JSON-encoded size of one event's message. Small
// enough that a whole SSE frame (with its `id:`/`data:` lines and the
// HTTP chunk header) fits in net/http's 4 KiB connection buffer, so one
// flush is one write and a client that parses each read on its own (the
// seed's JavaScript client does) never sees half an event.
const MaxMsgJSON = 3500

// Split cuts msg into pieces whose JSON-encoded form is at most max bytes
// each (max < 8 counts as MaxMsgJSON), on rune boundaries. A message that
// fits is returned whole; the pieces after the first are continuations
// (Event.Cont).
func Split(msg string, max int) []string {
	if max < 8 {
		max = MaxMsgJSON
	}
	if len(msg) <= max/6 { // every rune costs at most 6 encoded bytes per byte
		return []string{msg}
	}
	var out []string
	start, size := 0, 0
	for i, r := range msg {
		n := encodedLen(r, msg[i:])
		if size+n > max && i > start {
			out = append(out, msg[start:i])
			start, size = i, 0
		}
		size += n
	}
	return append(out, msg[start:])
}

// encodedLen is the size encoding/json gives the rune r (which starts s).
func encodedLen(r rune, s string) int {
	switch {
	case r == '"' || r == '\\' || r == '\n' || r == '\r' || r == '\t':
		return 2
	case r < 0x20 || r == '<' || r == '>' || r == '&' || r == '\u2028' || r == '\u2029':
		return 6
	case r == utf8.RuneError:
		if _, n := utf8.DecodeRuneInString(s); n == 1 {
			return 6 // invalid byte: written as \ufffd
		}
	}
	return utf8.RuneLen(r)
}

// SplitEvent returns e as one or more events whose messages obey Split;
// events without a message are returned as they are.
func SplitEvent(e Event, max int) []Event {
	if e.Type == Queued || e.Type == Complete {
		return []Event{e}
	}
	parts := Split(e.Msg, max)
	if len(parts) == 1 {
		return []Event{e}
	}
	out := make([]Event, len(parts))
	for i, p := range parts {
		out[i] = Event{Type: e.Type, Msg: p, Cont: e.Cont || i > 0}
	}
	// The typed fields belong to the event, not to a piece: keep them once.
	out[0].Phase, out[0].Toolchain = e.Phase, e.Toolchain
	return out
}
