package events

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		name string
		msg  string
		n    int // pieces
	}{
		{"short", "hello", 1},
		{"3 KB", strings.Repeat("a", 3000), 1},
		{"300 KB", strings.Repeat("b", 300_000), 86},
		{"escapes", strings.Repeat("<\x1b\"", 2000), 0},
		{"utf8", strings.Repeat("é漢🙂", 2000), 0},
		{"invalid utf8", strings.Repeat("\xff", 2000), 0},
		{"empty", "", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parts := Split(tc.msg, 0)
			if tc.n > 0 && len(parts) != tc.n {
				t.Errorf("%d pieces, want %d", len(parts), tc.n)
			}
			if strings.Join(parts, "") != tc.msg {
				t.Fatal("pieces do not join to the message")
			}
			for i, p := range parts {
				b, _ := json.Marshal(Event{Type: Build, Msg: p, Cont: i > 0})
				if len(b) > MaxMsgJSON+40 {
					t.Fatalf("piece %d encodes to %d bytes", i, len(b))
				}
				if utf8.ValidString(tc.msg) && !utf8.ValidString(p) {
					t.Fatalf("piece %d cuts a rune", i)
				}
			}
		})
	}
}

func TestSplitEventCont(t *testing.T) {
	evs := SplitEvent(Event{Type: Build, Msg: strings.Repeat("x", 10_000)}, 0)
	if len(evs) != 3 || evs[0].Cont || !evs[1].Cont || !evs[2].Cont {
		t.Fatalf("%+v", evs)
	}
	b, _ := json.Marshal(evs[1])
	if !strings.HasSuffix(string(b), `,"cont":true}`) {
		t.Fatalf("json %s", b)
	}
	var back Event
	if err := json.Unmarshal(b, &back); err != nil || !back.Cont || back.Msg != evs[1].Msg {
		t.Fatalf("round trip %+v %v", back, err)
	}
	one, _ := json.Marshal(Event{Type: Build, Msg: "a"})
	if string(one) != `{"type":"build","msg":"a"}` {
		t.Fatalf("a whole line carries no cont: %s", one)
	}
}

func FuzzSplit(f *testing.F) {
	f.Add("hello", 0)
	f.Add(strings.Repeat("<é\x00\xff", 500), 100)
	f.Fuzz(func(t *testing.T, s string, max int) {
		if max > 1<<16 || max < 0 {
			return
		}
		parts := Split(s, max)
		if strings.Join(parts, "") != s {
			t.Fatal("pieces do not join")
		}
		lim := max
		if lim < 8 {
			lim = MaxMsgJSON
		}
		for _, p := range parts {
			b, _ := json.Marshal(p)
			if len(b)-2 > lim && utf8.RuneCountInString(p) > 1 {
				t.Fatalf("piece of %d encoded bytes > %d", len(b)-2, lim)
			}
		}
	})
}
