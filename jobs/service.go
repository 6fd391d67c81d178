package jobs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/kettle-build/kettle/events"
	"github.com/kettle-build/kettle/failure"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

var _ Service = (*Store)(nil)

func sourceObject(id string) string { return "source/" + id }
func resultObject(id string) string { return "result/" + id }

// attemptResultObject is where attempt n of job id stores its result.
func attemptResultObject(id string, n int) string { return fmt.Sprintf("result/%s/%d", id, n) }

// validID accepts only canonical UUIDs, so ids never reach JetStream
// subjects or keys unchecked.
func validID(id string) bool {
	u, err := uuid.Parse(id)
	return err == nil && u.String() == id
}

// Submit implements Service: it stores the source, records the job, writes
// its first `queued` event and enqueues it.
func (s *Store) Submit(ctx context.Context, req Request) (*Job, error) {
	if s.closing.Load() {
		return nil, ErrNotReady
	}
	if (req.Source.URL == "") == (req.Archive == nil) {
		return nil, errors.New("jobs: exactly one of repo_url or an archive is required")
	}
	if len(req.Nonce) > 16 {
		return nil, errors.New("jobs: nonce longer than 16 bytes")
	}
	s.submitMu.Lock()
	defer s.submitMu.Unlock()
	if lim := s.cfg.queueLimit; lim > 0 {
		s.mu.Lock()
		waiting := len(s.queuedLocked())
		running := len(s.active) - waiting
		s.mu.Unlock()
		if waiting >= lim {
			// Jobs that idle workers are about to take do not count:
			// two quick submissions to two idle workers both run.
			idle := 0
			if alive, err := s.liveWorkers(ctx); err == nil && len(alive) > running {
				idle = len(alive) - running
			}
			if waiting >= lim+idle {
				return nil, ErrQueueFull
			}
		}
	}
	if s.cfg.singleBuild {
		if _, err := s.meta.Create(ctx, singleKey, []byte(s.cfg.clock().UTC().Format(time.RFC3339Nano))); err != nil {
			if errors.Is(err, jetstream.ErrKeyExists) {
				return nil, ErrSingleBuildUsed
			}
			return nil, fmt.Errorf("jobs: single-build gate: %w", err)
		}
	}
	id := uuid.NewString()
	log := s.log.With("job", id)
	j := &Job{
		ID:        id,
		Status:    StatusQueued,
		CreatedAt: s.cfg.clock().UTC(),
		Nonce:     hex.EncodeToString(req.Nonce),
		// The submitter's bound travels with the job: whichever process
		// recovers it applies this one.
		MaxAttempts: s.cfg.maxAttempts,
	}
	if s.cfg.singleBuild {
		j.MaxAttempts = 1 // built in this CVM or not at all
	}
	if req.Archive != nil {
		h := sha256.New()
		info, err := s.objs.Put(ctx, jetstream.ObjectMeta{Name: sourceObject(id)}, s.paced(ctx, io.TeeReader(req.Archive, h)))
		if err != nil {
			return nil, fmt.Errorf("jobs: store source: %w", err)
		}
		sum := hex.EncodeToString(h.Sum(nil))
		if want := req.Source.ArchiveSHA256; want != "" && want != sum {
			_ = s.objs.Delete(ctx, sourceObject(id))
			return nil, fmt.Errorf("jobs: archive sha256 %s does not match its content", want)
		}
		j.Source = Source{ArchiveName: req.Source.ArchiveName, ArchiveSHA256: sum, ArchiveSize: int64(info.Size)}
	} else {
		j.Source = Source{URL: req.Source.URL, Ref: req.Source.Ref}
	}
	data, err := json.Marshal(j)
	if err != nil {
		return nil, err
	}
	rev, err := s.jobs.Create(ctx, id, data)
	if err != nil {
		return nil, fmt.Errorf("jobs: record job: %w", err)
	}
	s.apply(j, rev)
	pos := s.position(id)
	if _, err := s.appendEvent(ctx, newCursor(id), events.Event{Type: events.Queued, Position: pos}, nil); err != nil {
		return nil, fmt.Errorf("jobs: first event: %w", err)
	}
	if s.cfg.singleBuild {
		_, _ = s.appendEvent(ctx, newCursor(id), events.Msgf(events.VM, "single-build mode: this CVM accepts no further builds"), nil)
	}
	s.mu.Lock()
	if _, ok := s.lastPos[id]; !ok {
		s.lastPos[id] = pos
	}
	s.mu.Unlock()
	if err := s.enqueue(ctx, id); err != nil {
		// The janitor re-enqueues jobs without a work message; say so.
		log.Error("enqueue failed; the janitor will retry", "err", err)
	}
	log.Info("job accepted", "position", pos, "repo_url", j.Source.URL, "repo_ref", j.Source.Ref,
		"archive_sha256", j.Source.ArchiveSHA256, "archive_size", j.Source.ArchiveSize)
	out := *j
	out.Position = pos
	return &out, nil
}

// getJob reads a job and its revision.
func (s *Store) getJob(ctx context.Context, id string) (*Job, uint64, error) {
	if !validID(id) {
		return nil, 0, ErrNotFound
	}
	e, err := s.jobs.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("jobs: read job: %w", err)
	}
	var j Job
	if err := json.Unmarshal(e.Value(), &j); err != nil {
		return nil, 0, fmt.Errorf("jobs: job %s: %w", id, err)
	}
	return &j, e.Revision(), nil
}

// Get implements Service.
func (s *Store) Get(ctx context.Context, id string) (*Job, error) {
	j, _, err := s.getJob(ctx, id)
	if err != nil {
		return nil, err
	}
	if j.Status == StatusQueued {
		j.Position = s.position(id)
	}
	return j, nil
}

// update applies fn to the current state of job id and stores it with a
// compare-and-set on its revision, retrying on conflicts. fn returns false
// to leave the job as it is; update then reports false.
func (s *Store) update(ctx context.Context, id string, fn func(j *Job) bool) (*Job, bool, error) {
	for attempt := 0; attempt < 100; attempt++ {
		j, rev, err := s.getJob(ctx, id)
		if err != nil {
			return nil, false, err
		}
		if !fn(j) {
			return j, false, nil
		}
		data, err := json.Marshal(j)
		if err != nil {
			return nil, false, err
		}
		nrev, err := s.jobs.Update(ctx, id, data, rev)
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return nil, false, fmt.Errorf("jobs: update job: %w", err)
		}
		s.apply(j, nrev)
		return j, true, nil
	}
	return nil, false, errors.New("jobs: update job: too many conflicts")
}

// fail marks j failed with err's client-safe message and kind.
func (s *Store) fail(j *Job, err error) {
	now := s.cfg.clock().UTC()
	j.Status = StatusFailed
	j.FinishedAt = &now
	j.Error = failure.Message(err)
	j.ErrorType = string(failure.KindOf(err))
}

// completeEvent is the terminal event matching a finished job.
func completeEvent(j *Job) events.Event {
	if j.Status == StatusSucceeded {
		return events.Event{Type: events.Complete, Result: &events.Result{Status: "ok"}}
	}
	return events.Event{Type: events.Complete, Result: &events.Result{Status: "failed", Error: j.Error, ErrorType: j.ErrorType}}
}

// ensureComplete appends the `complete` event of a finished job unless the
// log already ends with one (idempotent: redelivery and recovery use it).
func (s *Store) ensureComplete(ctx context.Context, j *Job) error {
	if j.Status != StatusSucceeded && j.Status != StatusFailed {
		return nil
	}
	_, err := s.appendEvent(ctx, newCursor(j.ID), completeEvent(j), func(last *events.Event) bool {
		return last == nil || !last.Terminal()
	})
	return err
}

// Result implements Service.
func (s *Store) Result(ctx context.Context, id string) (io.ReadCloser, *Job, error) {
	j, _, err := s.getJob(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	if j.Status != StatusSucceeded {
		return nil, j, ErrNoResult
	}
	name := j.ResultObject
	if name == "" {
		name = resultObject(id)
	}
	r, err := s.objs.Get(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, j, ErrNoResult
	}
	if err != nil {
		return nil, j, fmt.Errorf("jobs: open result: %w", err)
	}
	return r, j, nil
}

// Ready implements Service: the store is connected and at least one worker
// (in any process) sent a heartbeat within the worker TTL.
func (s *Store) Ready(ctx context.Context) error {
	if s.closing.Load() || s.nc.Status() != nats.CONNECTED {
		return fmt.Errorf("%w: not connected to NATS", ErrNotReady)
	}
	lister, err := s.workers.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotReady, err)
	}
	defer lister.Stop()
	for k := range lister.Keys() {
		if !strings.HasPrefix(k, probePrefix) {
			return nil
		}
	}
	return fmt.Errorf("%w: no worker is running", ErrNotReady)
}

// hashingWriter counts and hashes what passes through.
type hashingWriter struct {
	h hash.Hash
	n int64
	// progress, when set, sees n grow towards total.
	total    int64
	progress func(done, total int64)
}

func (w *hashingWriter) Write(p []byte) (int, error) {
	w.h.Write(p)
	w.n += int64(len(p))
	if w.progress != nil {
		w.progress(w.n, w.total)
	}
	return len(p), nil
}

// QueueDepth is the number of waiting jobs (the api's queue-depth gauge).
func (s *Store) QueueDepth(ctx context.Context) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queuedLocked()), nil
}
