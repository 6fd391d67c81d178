package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

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

// keepAlive is the interval of keep-alive comments on an idle stream.
func (s *Server) keepAlive() time.Duration {
	if s.cfg.keepAlive > 0 {
		return s.cfg.keepAlive
	}
	return DefaultKeepAlive
}

// follow calls fn for every entry of f from index 0 on, in order, and tick
// on every keep-alive interval without one; it returns nil right after
// `complete`. fn may block (pacing, a slow client): the feed holds the
// entries, so nothing is dropped and nothing queues up per watcher.
func (s *Server) follow(ctx context.Context, f jobs.Feed, fn func(jobs.Entry) error, tick func() error) error {
	ka := s.keepAlive()
	t := time.NewTicker(ka)
	defer t.Stop()
	next := 0
	for {
		es, done, err, changed := f.Next(next)
		for _, e := range es {
			if err := fn(e); err != nil {
				return err
			}
			next = e.Index + 1
			if e.Event.Terminal() {
				return nil
			}
		}
		if len(es) > 0 {
			t.Reset(ka)
			continue
		}
		switch {
		case done:
			return nil
		case err != nil:
			return err
		}
		select {
		case <-changed:
		case <-t.C:
			if err := tick(); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// pastEnd waits until the feed holds the log up to `complete` (the job is
// known to be finished) and reports whether from lies beyond it: a watcher
// that has seen everything. It reports false if the log cannot be read
// (the normal path then reports the error) or ctx ends.
func pastEnd(ctx context.Context, f jobs.Feed, from int) bool {
	for {
		es, done, err, changed := f.Next(from)
		switch {
		case done:
			return len(es) == 0
		case err != nil:
			return false
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return false
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
	f, err := s.svc.Follow(r.Context(), id)
	if err != nil {
		s.storeError(w, r, id, err)
		return
	}
	defer f.Close()
	if finished(job) && pastEnd(r.Context(), f, from) {
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
	ka := s.keepAlive()
	t := time.NewTicker(ka)
	defer t.Stop()
	ctx := r.Context()
	cursor := from
	var lastFlush time.Time
	for {
		es, done, err, changed := f.Next(cursor)
		if len(es) > 0 {
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
			for _, e := range es {
				if len(sse.buf) >= 256<<10 {
					break
				}
				sse.event(e.Index, e.Data) // the stored bytes, as they are
				cursor = e.Index + 1
				n++
			}
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
