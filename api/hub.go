package api

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"

	"github.com/kettle-build/kettle/events"
)

// A hub shares one store Watch among all SSE watchers of a job in this
// process: the log is read from the store once, each event is encoded once
// into its SSE frame, and every watcher keeps only a cursor into the shared
// frames. A slow watcher just lags behind in the index — it holds no buffer
// and slows nobody — and a watcher with any `from` reads the same frames,
// so each gets every event exactly once, in order.
type hub struct {
	mu     sync.Mutex
	frames [][]byte      // frame i = `id: i`, `data: <json>`, blank line
	done   bool          // the `complete` frame is the last one
	err    error         // the store's Watch failed (no more frames)
	notify chan struct{} // closed and replaced on every change
	refs   int
	cancel context.CancelFunc
}

type hubs struct {
	mu sync.Mutex
	m  map[string]*hub
}

// acquire returns the job's hub, starting its store Watch if it is new.
func (s *Server) acquire(id string) *hub {
	s.hubs.mu.Lock()
	defer s.hubs.mu.Unlock()
	if s.hubs.m == nil {
		s.hubs.m = map[string]*hub{}
	}
	h := s.hubs.m[id]
	if h == nil {
		ctx, cancel := context.WithCancel(context.Background())
		h = &hub{notify: make(chan struct{}), cancel: cancel}
		s.hubs.m[id] = h
		go h.run(ctx, s, id)
	}
	h.refs++
	return h
}

// release drops a watcher; the last one stops the hub (a later watcher
// starts a fresh one that replays from the store).
func (s *Server) release(id string, h *hub) {
	s.hubs.mu.Lock()
	defer s.hubs.mu.Unlock()
	h.refs--
	if h.refs == 0 {
		h.cancel()
		if s.hubs.m[id] == h {
			delete(s.hubs.m, id)
		}
	}
}

func (h *hub) run(ctx context.Context, s *Server, id string) {
	err := s.svc.Watch(ctx, id, 0, func(i int, ev events.Event) error {
		data, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		frame := make([]byte, 0, len(data)+24)
		frame = append(frame, "id: "...)
		frame = strconv.AppendInt(frame, int64(i), 10)
		frame = append(frame, "\ndata: "...)
		frame = append(frame, data...)
		frame = append(frame, '\n', '\n')
		h.mu.Lock()
		defer h.mu.Unlock()
		if i != len(h.frames) {
			return fmt.Errorf("store delivered event %d, expected %d", i, len(h.frames))
		}
		h.frames = append(h.frames, frame)
		if ev.Type == events.Complete {
			h.done = true
		}
		close(h.notify)
		h.notify = make(chan struct{})
		return nil
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.done {
		if err == nil {
			err = fmt.Errorf("event log of %s ended without complete", id)
		}
		h.err = err
		if ctx.Err() == nil {
			s.log.Warn("watch", "job", id, "err", err)
		}
	}
	close(h.notify)
	h.notify = make(chan struct{})
}

// next returns the frames from cursor on that are available now, whether
// the log is complete, the hub's error, and a channel closed on change.
func (h *hub) next(cursor int) (frames [][]byte, done bool, err error, changed <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if cursor < len(h.frames) {
		// Frames are never modified and the slice only grows, so this view
		// stays valid after the lock is released.
		frames = h.frames[cursor:len(h.frames):len(h.frames)]
	}
	return frames, h.done, h.err, h.notify
}

// pastEnd waits until the hub has replayed the log up to `complete` (the
// job is known to be finished) and reports whether from lies beyond it: a
// watcher that has seen everything. It reports false if the log cannot be
// read (the normal path then reports the error) or ctx ends.
func (h *hub) pastEnd(ctx context.Context, from int) bool {
	for {
		frames, done, err, changed := h.next(from)
		switch {
		case done:
			return len(frames) == 0
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
