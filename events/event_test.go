package events

import (
	"encoding/json"
	"testing"
)

func TestEventJSON(t *testing.T) {
	for _, tc := range []struct {
		ev   Event
		want string
	}{
		{Event{Type: Queued, Position: 0}, `{"type":"queued","position":0}`},
		{Event{Type: Build, Msg: "   Compiling serde v1.0.0"}, `{"type":"build","msg":"   Compiling serde v1.0.0"}`},
		{Event{Type: Build, Msg: ""}, `{"type":"build","msg":""}`},
		{Event{Type: Build, Msg: "<a & b>"}, `{"type":"build","msg":"\u003ca \u0026 b\u003e"}`},
		{Event{Type: Complete, Result: &Result{Status: "ok"}}, `{"type":"complete","result":{"status":"ok"}}`},
		{Event{Type: Complete, Result: &Result{Status: "failed", Error: "cargo build failed", ErrorType: "BuildFailed"}},
			`{"type":"complete","result":{"status":"failed","error":"cargo build failed","error_type":"BuildFailed"}}`},
	} {
		got, err := json.Marshal(tc.ev)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != tc.want {
			t.Errorf("Marshal(%+v) = %s, want %s", tc.ev, got, tc.want)
		}
		var back Event
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("Unmarshal(%s): %v", got, err)
		}
		if back.Type != tc.ev.Type || back.Msg != tc.ev.Msg || back.Position != tc.ev.Position || back.Terminal() != tc.ev.Terminal() {
			t.Errorf("round trip of %s = %+v", got, back)
		}
	}
}

func TestEventUnmarshalPeerForms(t *testing.T) {
	var e Event
	if err := json.Unmarshal([]byte(`{"type":"info","message":"Detected: cargo"}`), &e); err != nil || e.Msg != "Detected: cargo" {
		t.Errorf("older peer form: %+v, %v", e, err)
	}
	if err := json.Unmarshal([]byte(`{"msg":"no type"}`), &e); err == nil {
		t.Error("event without type accepted")
	}
}

func TestCompleteWithoutResult(t *testing.T) {
	got, _ := json.Marshal(Event{Type: Complete})
	if string(got) != `{"type":"complete","result":{"status":"failed","error":"missing result","error_type":"InternalError"}}` {
		t.Errorf("complete without result = %s", got)
	}
}

// TestDetectedWire: the toolchain is a field of the detect event, and the
// wire form stays the peer's (`msg` only).
func TestDetectedWire(t *testing.T) {
	e := Detected("cargo", "Cargo")
	if e.Type != Detect || e.Toolchain != "cargo" || e.Msg != "Detected Cargo project" {
		t.Fatalf("Detected = %+v", e)
	}
	got, _ := json.Marshal(e)
	if string(got) != `{"type":"detect","msg":"Detected Cargo project"}` {
		t.Errorf("wire form %s", got)
	}
}
