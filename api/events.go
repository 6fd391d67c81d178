package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/kettle-build/kettle/events"
	"github.com/kettle-build/kettle/jobs"
)

// sseWriter writes Server-Sent Events and flushes them; every write has a
// deadline so a client that stopped reading is eventually dropped while one
// that reads slowly only slows itself.
type sseWriter struct {
	w    http.ResponseWriter
	rc   *http.ResponseController
	wait time.Duration
	set  time.Time // when the deadline was last set
	buf  []byte
}

func newSSE(w http.ResponseWriter, wait time.Duration) *sseWriter {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	return &sseWriter{w: w, rc: http.NewResponseController(w), wait: wait}
}

// deadline pushes the write deadline out to now+wait; it is refreshed only
// when a quarter of it has passed, which keeps it off the hot path.
func (s *sseWriter) deadline() {
	if s.wait <= 0 {
		return
	}
	now := time.Now()
	if now.Sub(s.set) < s.wait/4 {
		return
	}
	s.set = now
	_ = s.rc.SetWriteDeadline(now.Add(s.wait)) // unsupported writers just have none
}

// event buffers one event: `id: N` (when id ≥ 0) and `data: <json>`.
func (s *sseWriter) event(id int, data []byte) {
	if id >= 0 {
		s.buf = append(s.buf, "id: "...)
		s.buf = strconv.AppendInt(s.buf, int64(id), 10)
		s.buf = append(s.buf, '\n')
	}
	s.buf = append(s.buf, "data: "...)
	s.buf = append(s.buf, data...)
	s.buf = append(s.buf, '\n', '\n')
}

func (s *sseWriter) comment(text string) {
	s.buf = append(s.buf, ": "...)
	s.buf = append(s.buf, text...)
	s.buf = append(s.buf, '\n', '\n')
}

// flush sends what is buffered.
func (s *sseWriter) flush() error {
	if len(s.buf) == 0 {
		return nil
	}
	s.deadline()
	_, err := s.w.Write(s.buf)
	s.buf = s.buf[:0]
	if err != nil {
		return err
	}
	return s.rc.Flush()
}

type indexed struct {
	i  int
	ev events.Event
}

// watch runs svc.Watch in its own goroutine and hands events over through a
// small bounded channel: the store's delivery to this watcher waits for the
// client, which keeps per-watcher memory constant. send is called for each
// event with more=true when another event is already waiting, so writes can
// be batched into one flush; tick is called on every keep-alive interval.
// It returns nil after the `complete` event.
func (s *Server) watch(ctx context.Context, id string, from int,
	send func(i int, ev events.Event, more bool) error, tick func() error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := make(chan indexed, 64) // bounded: a slow client stalls only its own Watch
	done := make(chan error, 1)
	go func() {
		done <- s.svc.Watch(ctx, id, from, func(i int, ev events.Event) error {
			select {
			case ch <- indexed{i, ev}:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	ka := s.cfg.keepAlive
	if ka <= 0 {
		ka = DefaultKeepAlive
	}
	t := time.NewTicker(ka)
	defer t.Stop()
	for {
		select {
		case x := <-ch:
			// The watch goroutine may already hold the next event: send a
			// burst (a replay, a fast build) as one write.
		burst:
			for {
				select {
				case y := <-ch:
					if err := send(x.i, x.ev, true); err != nil {
						return err
					}
					x = y
				default:
					if err := send(x.i, x.ev, false); err != nil {
						return err
					}
					break burst
				}
			}
			t.Reset(ka)
		case err := <-done:
			// Drain: Watch can't return while a send is pending, so
			// everything it delivered has been sent already.
			return err
		case <-t.C:
			if err := tick(); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// startIndex reads ?from=N and Last-Event-ID: K (resume after K; it wins,
// since EventSource resends it with the original URL on reconnect).
func startIndex(r *http.Request) (int, string) {
	from := 0
	if v := r.URL.Query().Get("from"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, "from must be a non-negative integer"
		}
		from = n
	}
	if v := strings.TrimSpace(r.Header.Get("Last-Event-ID")); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < -1 {
			return 0, "Last-Event-ID must be an event index"
		}
		from = n + 1
	}
	return from, ""
}

// events serves GET /build/{id}/events: replay, then live, ending right
// after `complete`.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	setJobID(r, id)
	from, bad := startIndex(r)
	if bad != "" {
		httpError(w, http.StatusBadRequest, bad)
		return
	}
	job, ok := s.knownJob(w, r, id)
	if !ok {
		return
	}
	s.m.Watchers.Inc()
	defer s.m.Watchers.Dec()
	h := s.acquire(id)
	defer s.release(id, h)
	if finished(job) && h.pastEnd(r.Context(), from) {
		// A reconnect after `complete` (EventSource sends Last-Event-ID by
		// itself): 204 is what makes EventSource stop reconnecting.
		w.WriteHeader(http.StatusNoContent)
		return
	}
	sse := newSSE(w, s.cfg.writeWait)
	sse.deadline()
	if sse.rc.Flush() != nil { // headers out now: the client knows the id is valid
		return
	}
	ka := s.cfg.keepAlive
	if ka <= 0 {
		ka = DefaultKeepAlive
	}
	t := time.NewTicker(ka)
	defer t.Stop()
	ctx := r.Context()
	cursor := from
	var lastFlush time.Time
	for {
		frames, done, err, changed := h.next(cursor)
		if len(frames) > 0 {
			// At most one write per coalescing interval: a busy log goes
			// out in batches (bounded extra latency, far fewer syscalls
			// with many watchers); a quiet one goes out at once.
			if wait := s.cfg.coalesce - time.Since(lastFlush); wait > 0 && !done {
				select {
				case <-time.After(wait):
				case <-ctx.Done():
					return
				}
				continue
			}
			n := 0
			for len(frames) > 0 && len(sse.buf) < 256<<10 {
				sse.buf = append(sse.buf, frames[0]...)
				frames = frames[1:]
				n++
			}
			cursor += n
			s.m.EventsSent.Add(float64(n))
			if sse.flush() != nil {
				return
			}
			lastFlush = time.Now()
			t.Reset(ka)
			continue
		}
		if done {
			return // the last frame sent was `complete`
		}
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("event stream ended", "job", id, "err", err)
			}
			return
		}
		select {
		case <-changed:
		case <-t.C:
			sse.comment("keep-alive")
			if sse.flush() != nil {
				return
			}
		case <-ctx.Done():
			return
		}
	}
}

// finished reports whether the job's log has its `complete` event.
func finished(j *jobs.Job) bool {
	return j != nil && (j.Status == jobs.StatusSucceeded || j.Status == jobs.StatusFailed)
}

// knownJob answers 404 (or 503/500) unless the job exists.
func (s *Server) knownJob(w http.ResponseWriter, r *http.Request, id string) (*jobs.Job, bool) {
	if !validID(id) {
		httpError(w, http.StatusNotFound, "unknown build id")
		return nil, false
	}
	j, err := s.svc.Get(r.Context(), id)
	switch {
	case err == nil:
		return j, true
	case errors.Is(err, jobs.ErrNotFound):
		httpError(w, http.StatusNotFound, "unknown build id")
	default:
		s.storeError(w, r, id, err)
	}
	return nil, false
}

// validID accepts the UUID form of job ids (anything else cannot exist and
// must not reach the store as a subject name).
func validID(id string) bool {
	if len(id) != 36 {
		return false
	}
	for i, c := range id {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// storeError answers an unexpected store error without its details.
func (s *Server) storeError(w http.ResponseWriter, r *http.Request, id string, err error) {
	if errors.Is(err, jobs.ErrNotReady) {
		w.Header().Set("Retry-After", strconv.Itoa(int(s.cfg.retryAfter.Seconds())))
		httpError(w, http.StatusServiceUnavailable, "job store not ready, retry later")
		return
	}
	if r.Context().Err() != nil {
		return // the client left
	}
	s.log.Error("store", "job", id, "err", err)
	httpError(w, http.StatusInternalServerError, "internal error")
}
