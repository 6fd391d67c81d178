package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/kettle-build/kettle/events"
)

// MaxEventSize bounds one SSE event (a build log line is far smaller); a
// server that sends more is broken or hostile.
const MaxEventSize = 4 << 20

// ErrGap: the server skipped events (a resumed stream did not continue
// where the last one stopped). Events are never silently lost.
var ErrGap = errors.New("event stream skipped events")

// SSEEvent is one Server-Sent Event as read from the wire.
type SSEEvent struct {
	ID    string // the last `id:` seen (SSE keeps it across events)
	HasID bool   // this event carried its own `id:` field
	Event string // the `event:` field, empty for "message"
	Data  []byte
	Retry time.Duration // a `retry:` field, when given
	// Unknown counts this event's lines with a field the SSE rules ignore
	// (a strict reader, such as a test of the server's wire form, may
	// refuse them).
	Unknown int
}

// SSEReader parses a text/event-stream (the WHATWG rules: LF, CRLF or CR
// line ends, comments, multi-line data, events dispatched on a blank line;
// an event cut off by the end of the stream is dropped).
type SSEReader struct {
	sc     *bufio.Scanner
	lastID string
	// Comments counts the comment lines read so far (keep-alives).
	Comments int
}

// NewSSEReader reads events from r; no event may exceed MaxEventSize.
func NewSSEReader(r io.Reader) *SSEReader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxEventSize)
	sc.Split(scanSSELines)
	return &SSEReader{sc: sc}
}

// scanSSELines splits on LF, CRLF or lone CR.
func scanSSELines(data []byte, atEOF bool) (int, []byte, error) {
	if atEOF && len(data) == 0 {
		return 0, nil, nil
	}
	if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
		if data[i] == '\n' {
			return i + 1, data[:i], nil
		}
		if i+1 < len(data) {
			if data[i+1] == '\n' {
				return i + 2, data[:i], nil
			}
			return i + 1, data[:i], nil
		}
		if atEOF {
			return i + 1, data[:i], nil
		}
		return 0, nil, nil // CR at the end: wait to see whether LF follows
	}
	if atEOF {
		// A last line without its end: the event it belongs to is not
		// complete, so Next drops it.
		return len(data), nil, io.ErrUnexpectedEOF
	}
	return 0, nil, nil
}

// Next returns the next complete event, io.EOF at a clean end of stream,
// or io.ErrUnexpectedEOF when the stream ended inside an event.
func (r *SSEReader) Next() (*SSEEvent, error) {
	var (
		ev      SSEEvent
		data    []byte
		hasData bool
		size    int
	)
	for r.sc.Scan() {
		line := r.sc.Bytes()
		if len(line) == 0 {
			if !hasData {
				ev = SSEEvent{} // an event without data is not dispatched
				size = 0
				continue
			}
			ev.ID = r.lastID
			ev.Data = data
			return &ev, nil
		}
		size += len(line)
		if size > MaxEventSize {
			return nil, fmt.Errorf("%w: event larger than %d bytes", ErrProtocol, MaxEventSize)
		}
		if line[0] == ':' {
			r.Comments++ // comment (keep-alive)
			continue
		}
		field, value, _ := bytes.Cut(line, []byte{':'})
		value = bytes.TrimPrefix(value, []byte{' '})
		switch string(field) {
		case "data":
			if hasData {
				data = append(data, '\n')
			}
			data = append(data, value...)
			hasData = true
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				r.lastID = string(value)
				ev.HasID = true
			}
		case "event":
			ev.Event = string(value)
		case "retry":
			if n, err := strconv.ParseUint(string(value), 10, 31); err == nil {
				ev.Retry = time.Duration(n) * time.Millisecond
			}
		default:
			ev.Unknown++
		}
	}
	if err := r.sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("%w: event larger than %d bytes", ErrProtocol, MaxEventSize)
		}
		return nil, err
	}
	if hasData || size > 0 {
		return nil, io.ErrUnexpectedEOF
	}
	return nil, io.EOF
}

// Events follows the event log of job id from index from (0 = the whole
// log), calling fn with each event's index and event, in order, exactly
// once, until the terminal `complete` event, whose result it returns. A
// dropped or stalled stream is resumed with Last-Event-ID after the last
// event received; an event cut off mid-way is received again whole. An
// error from fn stops the stream and is returned.
func (c *Client) Events(ctx context.Context, id string, from int, fn func(i int, ev events.Event) error) (*events.Result, error) {
	if from < 0 {
		return nil, fmt.Errorf("events: from must be ≥ 0")
	}
	var q url.Values
	if from > 0 {
		q = url.Values{"from": {strconv.Itoa(from)}}
	}
	u := c.url("/build/"+url.PathEscape(id)+"/events", q)
	next := from
	var (
		result *events.Result
		fnErr  error
	)
	err := c.retry(ctx, "events", func() (bool, error) {
		start := next
		hdr := http.Header{"Accept": {"text/event-stream"}, "Cache-Control": {"no-cache"}}
		if next > from {
			hdr.Set("Last-Event-ID", strconv.Itoa(next-1))
		}
		var opened time.Time
		err := c.stream(ctx, u, hdr, &opened, func(se *SSEEvent) error {
			i := next
			if se.ID != "" {
				n, err := strconv.Atoi(se.ID)
				if err != nil || n < 0 {
					return fmt.Errorf("%w: event id %q is not an index", ErrProtocol, se.ID)
				}
				i = n
			}
			switch {
			case i < next:
				return nil // already delivered before a reconnect
			case i > next:
				return fmt.Errorf("%w: expected event %d, got %d", ErrGap, next, i)
			}
			var ev events.Event
			if err := json.Unmarshal(se.Data, &ev); err != nil {
				return fmt.Errorf("%w: event %d: %v", ErrProtocol, i, err)
			}
			next++
			if err := fn(i, ev); err != nil {
				fnErr = err
				return err
			}
			if ev.Terminal() {
				r := ev.Result
				if r == nil {
					r = &events.Result{Status: "failed", Error: "complete event without a result", ErrorType: "InternalError"}
				}
				result = r
				return errStreamDone
			}
			return nil
		})
		if errors.Is(err, errStreamDone) {
			return true, nil
		}
		if fnErr != nil {
			return true, fnErr
		}
		if err == nil {
			// The server closed the stream before `complete` (a restart, a
			// proxy timeout): resume.
			err = fmt.Errorf("event stream ended after event %d without completing: %w", next-1, io.ErrUnexpectedEOF)
		}
		// A stream that stayed open a while counts as progress too: a proxy
		// that closes long quiet streams must not use up the budget.
		return next > start || (!opened.IsZero() && time.Since(opened) > longStream), err
	}, func(err error) bool {
		return fnErr == nil && !errors.Is(err, ErrGap) && transient(err)
	})
	if err != nil {
		return nil, fmt.Errorf("events of %s: %w", id, err)
	}
	return result, nil
}

var errStreamDone = errors.New("stream done")

// longStream is how long a stream must have lasted for its end to count as
// progress.
const longStream = 10 * time.Second

// stream makes one SSE request and calls fn for each event until the body
// ends (nil), fn fails, or the connection stays silent past the idle timeout.
func (c *Client) stream(ctx context.Context, u string, hdr http.Header, opened *time.Time, fn func(*SSEEvent) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, err := c.newRequest(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	idle := c.idle
	var timer *time.Timer
	if idle > 0 {
		timer = time.AfterFunc(idle+5*time.Second, func() { cancel(errIdle) }) // headers may lag a busy server
		defer timer.Stop()
	}
	resp, err := c.do(req)
	if err != nil {
		if cause := context.Cause(ctx); errors.Is(cause, errIdle) {
			return cause
		}
		return c.netError(err)
	}
	if resp.StatusCode/100 != 2 {
		return readError(resp)
	}
	defer resp.Body.Close()
	*opened = time.Now()
	var body io.Reader = resp.Body
	if timer != nil {
		body = &idleReader{r: resp.Body, t: timer, d: idle}
	}
	sr := NewSSEReader(body)
	for {
		se, err := sr.Next()
		if err != nil {
			if cause := context.Cause(ctx); errors.Is(cause, errIdle) {
				return cause
			}
			if err == io.EOF {
				return nil
			}
			if err == io.ErrUnexpectedEOF {
				return fmt.Errorf("event stream cut mid-event: %w", err)
			}
			return err
		}
		if err := fn(se); err != nil {
			return err
		}
	}
}

var errIdle = errors.New("event stream silent for too long")

// idleReader pushes the idle deadline back on every read that returns data.
type idleReader struct {
	r io.Reader
	t *time.Timer
	d time.Duration
}

func (i *idleReader) Read(p []byte) (int, error) {
	n, err := i.r.Read(p)
	if n > 0 {
		i.t.Reset(i.d)
	}
	return n, err
}
