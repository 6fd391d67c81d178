package client

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/kettle-build/kettle/events"
)

type eventT = events.Event

func readAll(s string) ([]SSEEvent, error) {
	r := NewSSEReader(strings.NewReader(s))
	var out []SSEEvent
	for {
		ev, err := r.Next()
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return out, err
		}
		out = append(out, *ev)
	}
}

func TestSSEReader(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string // id|data per event
		wantErr  error
	}{
		{"lf", "id: 1\ndata: a\n\n", []string{"1|a"}, nil},
		{"crlf", "id: 1\r\ndata: a\r\n\r\n", []string{"1|a"}, nil},
		{"cr", "id: 1\rdata: a\r\r", []string{"1|a"}, nil},
		{"multi-line data", "data: a\ndata: b\n\n", []string{"|a\nb"}, nil},
		{"no space after colon", "id:7\ndata:x\n\n", []string{"7|x"}, nil},
		{"comments and keep-alives", ": keep-alive\n\n: hi\nid: 2\ndata: x\n\n", []string{"2|x"}, nil},
		{"id persists", "id: 3\ndata: x\n\ndata: y\n\n", []string{"3|x", "3|y"}, nil},
		{"event without data is dropped", "id: 4\n\ndata: z\n\n", []string{"4|z"}, nil},
		{"unknown fields ignored", "foo: bar\nevent: message\nretry: 10\ndata: q\n\n", []string{"|q"}, nil},
		{"cut mid-event", "id: 1\ndata: a\n\nid: 2\ndata: b", []string{"1|a"}, io.ErrUnexpectedEOF},
		{"cut before blank line", "id: 1\ndata: a\n", nil, io.ErrUnexpectedEOF},
		{"id with NUL ignored", "id: 1\n\ndata: a\nid: x\x00y\n\n", []string{"1|a"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readAll(tc.in)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			var s []string
			for _, e := range got {
				s = append(s, e.ID+"|"+string(e.Data))
			}
			if strings.Join(s, ",") != strings.Join(tc.want, ",") {
				t.Errorf("events = %q, want %q", s, tc.want)
			}
		})
	}
}

func TestSSEReaderRetryField(t *testing.T) {
	got, err := readAll("retry: 1500\ndata: x\n\n")
	if err != nil || len(got) != 1 || got[0].Retry != 1500*time.Millisecond {
		t.Fatalf("got %+v, %v", got, err)
	}
}

// TestSSEReaderCounts: comments (keep-alives) and ignored fields are
// counted, for readers that check a server's wire form.
func TestSSEReaderCounts(t *testing.T) {
	r := NewSSEReader(strings.NewReader(": keep-alive\n\nfoo: bar\nbaz\ndata: q\n\n: x\ndata: r\n\n"))
	a, err := r.Next()
	if err != nil || a.Unknown != 2 || string(a.Data) != "q" || r.Comments != 1 {
		t.Fatalf("first %+v, %v, comments %d", a, err, r.Comments)
	}
	b, err := r.Next()
	if err != nil || b.Unknown != 0 || string(b.Data) != "r" || r.Comments != 2 {
		t.Fatalf("second %+v, %v, comments %d", b, err, r.Comments)
	}
}

func TestSSEReaderTooLarge(t *testing.T) {
	line := "data: " + strings.Repeat("x", 1<<20) + "\n"
	_, err := readAll(strings.Repeat(line, 5) + "\n")
	if !errors.Is(err, ErrProtocol) {
		t.Errorf("many lines: err = %v", err)
	}
	_, err = readAll("data: " + strings.Repeat("x", MaxEventSize+10) + "\n\n")
	if !errors.Is(err, ErrProtocol) {
		t.Errorf("one long line: err = %v", err)
	}
}

// FuzzSSEReader: the reader of a server's (untrusted) stream never panics,
// never returns more data than it read, and agrees with itself whether the
// input arrives whole or byte by byte.
func FuzzSSEReader(f *testing.F) {
	for _, s := range []string{"id: 1\ndata: a\n\n", "data: a\r\ndata: b\r\r\n", ": c\n\nid:\x00\ndata\n\n", "retry: 99999999999\ndata: x\n\n", "\r\r\r"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		whole, errWhole := readAll(string(in))
		total := 0
		for _, e := range whole {
			total += len(e.Data)
		}
		if total > len(in) {
			t.Fatalf("%d bytes of data from %d bytes of input", total, len(in))
		}
		r := NewSSEReader(&oneByte{in})
		var n int
		for {
			ev, err := r.Next()
			if err != nil {
				if (err == io.EOF) != (errWhole == nil) {
					t.Fatalf("byte-wise err %v, whole err %v", err, errWhole)
				}
				break
			}
			if n >= len(whole) || string(ev.Data) != string(whole[n].Data) || ev.ID != whole[n].ID {
				t.Fatalf("byte-wise event %d differs", n)
			}
			n++
		}
		if n != len(whole) {
			t.Fatalf("byte-wise %d events, whole %d", n, len(whole))
		}
	})
}

type oneByte struct{ b []byte }

func (o *oneByte) Read(p []byte) (int, error) {
	if len(o.b) == 0 {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	p[0] = o.b[0]
	o.b = o.b[1:]
	return 1, nil
}
