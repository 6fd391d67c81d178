package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/kettle-build/kettle/events"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// logCursor remembers the tail of one job's log so a single writer need not
// read it back before every append.
type logCursor struct {
	subj  string
	known bool
	seq   uint64 // stream sequence of the last event (0: empty log)
	next  int    // index of the next event
	last  *events.Event
	// lastAttempt is the attempt stamp of the last event (0: none).
	lastAttempt int
	// attempt, when > 0, fences this writer: it appends only while the
	// log's stamp is not past it, and stamps what it appends. A worker
	// writes with its attempt; recovery writes with the next one, so a
	// worker presumed dead can no longer add to the log of a retry.
	attempt int
}

func newCursor(id string) *logCursor { return &logCursor{subj: eventsSubject + id} }

// attemptCursor is a cursor fenced at attempt n (see logCursor.attempt).
func attemptCursor(id string, n int) *logCursor {
	c := newCursor(id)
	c.attempt = n
	return c
}

// errFenced: a later attempt has written to the log.
var errFenced = errors.New("job log belongs to a later attempt")

// load reads the log's last event.
func (s *Store) load(ctx context.Context, c *logCursor) error {
	m, err := s.evs.GetLastMsgForSubject(ctx, c.subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		c.known, c.seq, c.next, c.last, c.lastAttempt = true, 0, 0, nil, 0
		return nil
	}
	if err != nil {
		return fmt.Errorf("read log tail: %w", err)
	}
	idx, err := strconv.Atoi(m.Header.Get(headerIndex))
	if err != nil {
		return fmt.Errorf("log message %d without index", m.Sequence)
	}
	var ev events.Event
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		return fmt.Errorf("log message %d: %w", m.Sequence, err)
	}
	c.known, c.seq, c.next, c.last = true, m.Sequence, idx+1, &ev
	c.lastAttempt, _ = strconv.Atoi(m.Header.Get(headerAttempt))
	return nil
}

// appendEvent appends ev at the log's next index. Every writer publishes
// with the expected last sequence of the job's subject, so concurrent
// writers (a worker, another process updating queue positions, a janitor)
// never interleave out of order or reuse an index. cond, when set, sees the
// current last event (nil for an empty log) and may veto the append; it is
// re-evaluated after every conflict. It reports whether ev was appended; a
// fenced cursor (attemptCursor) whose attempt is over returns errFenced.
func (s *Store) appendEvent(ctx context.Context, c *logCursor, ev events.Event, cond func(last *events.Event) bool) (bool, error) {
	data, err := json.Marshal(ev)
	if err != nil {
		return false, err
	}
	var lastErr error
	for attempt := 0; attempt < 50; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return false, ctx.Err()
			case <-time.After(time.Duration(attempt) * 5 * time.Millisecond):
			}
		}
		if !c.known {
			if err := s.load(ctx, c); err != nil {
				lastErr = err
				continue
			}
		}
		if c.attempt > 0 && c.lastAttempt > c.attempt {
			return false, errFenced
		}
		if cond != nil && !cond(c.last) {
			return false, nil
		}
		// Stamps never decrease: unfenced writers (queue positions, the
		// final event) carry the last one on.
		stamp := max(c.attempt, c.lastAttempt)
		msg := nats.NewMsg(c.subj)
		msg.Data = data
		msg.Header.Set(headerIndex, strconv.Itoa(c.next))
		if stamp > 0 {
			msg.Header.Set(headerAttempt, strconv.Itoa(stamp))
		}
		ack, err := s.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(c.seq))
		if err == nil {
			e := ev
			c.seq, c.next, c.last, c.lastAttempt = ack.Sequence, c.next+1, &e, stamp
			return true, nil
		}
		lastErr = err
		want := c.next
		c.known = false
		if isWrongLastSeq(err) {
			continue
		}
		// The ack may have been lost after the server stored the event:
		// if the tail is exactly ours, it was appended.
		if s.load(ctx, c) == nil && c.next == want+1 && c.last != nil {
			if b, _ := json.Marshal(c.last); bytes.Equal(b, data) {
				return true, nil
			}
		}
		c.known = false
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
	}
	return false, fmt.Errorf("append event: %w", lastErr)
}

func isWrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
	}
	return false
}

// Entry is one event of a job's log as this process holds it: its index,
// the bytes the store holds (the event's compact JSON, the peer's wire
// form, never modified: an SSE frame is written from them) and the event
// decoded once from them, for consumers that need its fields.
type Entry struct {
	Index int
	Data  []byte
	Event events.Event
}

// Feed is this process's one shared view of a job's log (Service.Follow):
// every subscriber reads the same entries through its own cursor, so a
// slow one only lags behind and each sees every event once, in order.
type Feed interface {
	// Next returns the entries with index ≥ from available now (a view
	// that stays valid: entries are never modified), whether the log is
	// final (its `complete` arrived), the error that stopped following
	// the log, and a channel closed on the next change.
	Next(from int) (entries []Entry, done bool, err error, changed <-chan struct{})
	// Close releases the subscription; the last one stops following.
	Close()
}

// Watch calls fn for every event of job id from index from on, through
// svc's feed (see Service.Watch's contract).
func Watch(ctx context.Context, svc Service, id string, from int, fn func(index int, ev events.Event) error) error {
	f, err := svc.Follow(ctx, id)
	if err != nil {
		return err
	}
	defer f.Close()
	return WatchFeed(ctx, f, from, fn)
}

// WatchFeed is Watch over an open feed.
func WatchFeed(ctx context.Context, f Feed, from int, fn func(index int, ev events.Event) error) error {
	for {
		es, done, err, changed := f.Next(from)
		for _, e := range es {
			if fn != nil {
				if err := fn(e.Index, e.Event); err != nil {
					return err
				}
			}
			from = e.Index + 1
			if e.Event.Terminal() {
				return nil
			}
		}
		switch {
		case len(es) > 0:
			continue
		case done:
			return nil // from is past the end of a finished log
		case err != nil:
			return err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// hub follows one job's log with a single ordered consumer and serves any
// number of subscribers (Feed) from memory: each has its own cursor into
// the shared slice, so a slow one only slows itself and every one sees
// every event exactly once, in order.
type hub struct {
	id     string
	mu     sync.RWMutex // subscribers read-lock: 1,000 of them wake per event
	evs    []Entry
	done   bool // the `complete` event arrived: the log is final
	err    error
	notify chan struct{} // closed and replaced on every change
	refs   int
	stopFn func() // set before ready closes
	// ready closes once the consumer started (or failed: startErr).
	ready    chan struct{}
	startErr error
}

// next is Feed.Next of every subscriber of h.
func (h *hub) next(from int) ([]Entry, bool, error, <-chan struct{}) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	pos := sort.Search(len(h.evs), func(i int) bool { return h.evs[i].Index >= from })
	// The slice only grows and entries are never written again, so this
	// view stays valid after the lock is released.
	return h.evs[pos:len(h.evs):len(h.evs)], h.done, h.err, h.notify
}

// feed is one subscription to a hub.
type feed struct {
	s    *Store
	h    *hub
	once sync.Once
}

func (f *feed) Next(from int) ([]Entry, bool, error, <-chan struct{}) { return f.h.next(from) }

func (f *feed) Close() { f.once.Do(func() { f.s.release(f.h) }) }

func (h *hub) stop() {
	select {
	case <-h.ready:
	default:
		return // still starting: its creator holds a reference
	}
	if h.stopFn != nil {
		h.stopFn()
	}
}

func (h *hub) publish(fn func()) {
	h.mu.Lock()
	fn()
	close(h.notify)
	h.notify = make(chan struct{})
	h.mu.Unlock()
}

// acquire returns the hub of job id, starting it if needed. The consumer is
// created outside s.mu so that many watchers arriving at once do not queue
// behind each other's round trips.
func (s *Store) acquire(ctx context.Context, id string) (*hub, error) {
	s.mu.Lock()
	h, ok := s.hubs[id]
	if ok {
		h.refs++
		s.mu.Unlock()
		select {
		case <-h.ready:
		case <-ctx.Done():
			s.release(h)
			return nil, ctx.Err()
		}
		if h.startErr != nil {
			s.release(h)
			return nil, h.startErr
		}
		return h, nil
	}
	h = &hub{id: id, notify: make(chan struct{}), refs: 1, ready: make(chan struct{})}
	s.hubs[id] = h
	s.mu.Unlock()

	it, err := s.startFollow(ctx, id)
	if err != nil {
		h.startErr = err
		s.mu.Lock()
		if s.hubs[id] == h {
			delete(s.hubs, id)
		}
		s.mu.Unlock()
		close(h.ready)
		s.release(h)
		return nil, err
	}
	var once sync.Once
	h.stopFn = func() { once.Do(it.Stop) }
	close(h.ready) // this call holds a reference: nobody stopped the hub yet
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		s.follow(h, it)
	}()
	return h, nil
}

func (s *Store) startFollow(ctx context.Context, id string) (jetstream.MessagesContext, error) {
	cons, err := s.js.OrderedConsumer(ctx, eventsStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{eventsSubject + id},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("follow log: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("follow log: %w", err)
	}
	return it, nil
}

func (s *Store) release(h *hub) {
	s.mu.Lock()
	h.refs--
	last := h.refs == 0
	if last && s.hubs[h.id] == h {
		delete(s.hubs, h.id)
	}
	s.mu.Unlock()
	if last {
		h.stop()
	}
}

func (s *Store) follow(h *hub, it jetstream.MessagesContext) {
	next := -1
	for {
		msg, err := it.Next()
		if err != nil {
			if !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				s.log.Warn("following job log failed", "job", h.id, "err", err)
			}
			s.mu.Lock()
			if s.hubs[h.id] == h {
				delete(s.hubs, h.id) // the next watcher starts afresh
			}
			s.mu.Unlock()
			h.publish(func() {
				if !h.done {
					h.err = fmt.Errorf("job log: %w", err)
				}
			})
			return
		}
		idx, err := strconv.Atoi(msg.Headers().Get(headerIndex))
		data := msg.Data()
		var ev events.Event
		if err == nil {
			err = json.Unmarshal(data, &ev) // the one decode of this event
		}
		if err != nil {
			s.log.Error("corrupt log event skipped", "job", h.id, "err", err)
			continue
		}
		if idx < next {
			continue // cannot happen with an ordered consumer; be safe
		}
		if bytes.ContainsAny(data, "\r\n") {
			// Valid JSON, but not the compact form appendEvent writes: a
			// line break would end the SSE frame written from these bytes.
			if data, err = json.Marshal(ev); err != nil {
				s.log.Error("corrupt log event skipped", "job", h.id, "err", err)
				continue
			}
		}
		next = idx + 1
		h.publish(func() {
			h.evs = append(h.evs, Entry{Index: idx, Data: data, Event: ev})
			if ev.Terminal() {
				h.done = true
			}
		})
		if ev.Terminal() {
			// Nothing follows `complete`; keep the events, drop the consumer.
			h.stop()
			return
		}
	}
}

// Follow implements Service: it subscribes to the job's hub, starting it
// if this process has none.
func (s *Store) Follow(ctx context.Context, id string) (Feed, error) {
	if _, _, err := s.getJob(ctx, id); err != nil {
		return nil, err
	}
	h, err := s.acquire(ctx, id)
	if err != nil {
		return nil, err
	}
	return &feed{s: s, h: h}, nil
}

// Watch is Watch(ctx, s, id, from, fn): Service.Watch's contract.
func (s *Store) Watch(ctx context.Context, id string, from int, fn func(index int, ev events.Event) error) error {
	return Watch(ctx, s, id, max(from, 0), fn)
}
