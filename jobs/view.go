package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/kettle-build/kettle/events"
	"github.com/kettle-build/kettle/failure"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The view: every process keeps the queued and running jobs in memory,
// fed by a watcher on the jobs bucket (and by its own writes, so that it
// never lags behind itself). Queue positions, the queue limit and recovery
// of jobs whose worker died are computed from it.

func (s *Store) startView(ctx context.Context) error {
	w, err := s.jobs.WatchAll(s.ctx)
	if err != nil {
		return fmt.Errorf("jobs: watch job state: %w", err)
	}
	loaded := make(chan struct{})
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		defer w.Stop()
		initial := true
		for {
			select {
			case <-s.ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					if initial {
						initial = false
						close(loaded)
					}
					continue
				}
				if e.Operation() != jetstream.KeyValuePut {
					s.forget(e.Key(), e.Revision())
					continue
				}
				var j Job
				if err := json.Unmarshal(e.Value(), &j); err != nil {
					s.log.Error("corrupt job state", "job", e.Key(), "err", err)
					continue
				}
				s.apply(&j, e.Revision())
			}
		}
	}()
	select {
	case <-loaded:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Minute):
		return errors.New("jobs: loading job state timed out")
	}
}

// apply records revision rev of job j in the view, ignoring stale revisions.
func (s *Store) apply(j *Job, rev uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.active[j.ID]; ok && a.rev >= rev {
		return
	}
	if g, ok := s.gone[j.ID]; ok && g >= rev {
		return
	}
	switch j.Status {
	case StatusQueued, StatusRunning:
		s.active[j.ID] = activeJob{job: j, rev: rev}
		if j.Status == StatusRunning {
			delete(s.lastPos, j.ID) // a job queued again starts afresh
		}
	default:
		delete(s.active, j.ID)
		delete(s.lastPos, j.ID)
		_, seen := s.gone[j.ID]
		s.gone[j.ID] = rev
		if !seen && s.cfg.onFinished != nil {
			c := *j
			s.cfg.onFinished(&c)
		}
	}
	s.kick()
}

func (s *Store) forget(id string, rev uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.active, id)
	delete(s.lastPos, id)
	s.gone[id] = rev
	s.kick()
}

// kick asks the position loop to run; s.mu is held or not, either is fine.
func (s *Store) kick() {
	select {
	case s.posKick <- struct{}{}:
	default:
	}
}

// queuedLocked returns the waiting jobs in queue order.
func (s *Store) queuedLocked() []*Job {
	var q []*Job
	for _, a := range s.active {
		if a.job.Status == StatusQueued {
			q = append(q, a.job)
		}
	}
	sort.Slice(q, func(i, k int) bool {
		if !q[i].CreatedAt.Equal(q[k].CreatedAt) {
			return q[i].CreatedAt.Before(q[k].CreatedAt)
		}
		return q[i].ID < q[k].ID
	})
	return q
}

// position of a queued job (0 = next), or 0 if it is not waiting.
func (s *Store) position(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, j := range s.queuedLocked() {
		if j.ID == id {
			return i
		}
	}
	return 0
}

// positionLoop emits a `queued` event for each waiting job whose position
// changed. Every process does this from its own view; the log's conditional
// append makes the result exact: an event is written only while the job's
// log still ends in a `queued` event with another position.
func (s *Store) positionLoop() {
	defer s.bg.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.posKick:
		}
		s.mu.Lock()
		q := s.queuedLocked()
		var changed []*Job
		var pos []int
		for i, j := range q {
			if p, ok := s.lastPos[j.ID]; !ok || p != i {
				changed = append(changed, j)
				pos = append(pos, i)
			}
		}
		s.mu.Unlock()
		for k, j := range changed {
			p := pos[k]
			ok, err := s.appendEvent(s.ctx, newCursor(j.ID), events.Event{Type: events.Queued, Position: p},
				func(last *events.Event) bool {
					return last != nil && last.Type == events.Queued && last.Position != p
				})
			if err != nil {
				if s.ctx.Err() == nil {
					s.log.Warn("queue position update failed", "job", j.ID, "err", err)
				}
				continue
			}
			_ = ok
			s.mu.Lock()
			if a, in := s.active[j.ID]; in && a.job.Status == StatusQueued {
				s.lastPos[j.ID] = p
			}
			s.mu.Unlock()
		}
	}
}

// janitorLoop recovers jobs whose worker died and re-enqueues waiting jobs
// that lost their work message (a front end that died mid-submit).
func (s *Store) janitorLoop() {
	defer s.bg.Done()
	every := s.cfg.workerTTL / 2
	if every < 100*time.Millisecond {
		every = 100 * time.Millisecond
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		s.janitor(s.ctx)
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Store) janitor(ctx context.Context) {
	s.mu.Lock()
	var running, queued []*Job
	for _, a := range s.active {
		switch a.job.Status {
		case StatusRunning:
			running = append(running, a.job)
		case StatusQueued:
			queued = append(queued, a.job)
		}
	}
	for id := range s.gone {
		if len(s.gone) < 10000 {
			break
		}
		delete(s.gone, id) // bound memory; stale revisions are rare by then
	}
	s.mu.Unlock()
	if len(running) == 0 {
		clear(s.suspects)
	} else {
		// A worker is lost only when its heartbeat is missing from
		// listings at least half a TTL apart, while this process could
		// write to the heartbeat bucket. After a NATS node dies, the new
		// leader of the bucket may find every key expired before workers
		// could beat again (an election takes seconds); a live worker
		// beats again within a quarter TTL once the bucket takes writes.
		_, err := s.workers.Put(ctx, s.probeKey, nil)
		var alive map[string]bool
		if err == nil {
			alive, err = s.liveWorkers(ctx)
		}
		if err != nil {
			clear(s.suspects) // no evidence either way
			return
		}
		for _, j := range s.suspects.lost(time.Now(), s.cfg.workerTTL/2, running, alive, s.buildingHere) {
			if err := s.recover(ctx, j); err != nil && ctx.Err() == nil {
				s.log.Warn("recovering job failed", "job", j.ID, "err", err)
			}
		}
	}
	now := s.cfg.clock()
	for _, j := range queued {
		if now.Sub(j.CreatedAt) < 10*time.Second {
			continue // Submit may still be publishing its work message
		}
		if _, err := s.work.GetLastMsgForSubject(ctx, workSubject+j.ID); errors.Is(err, jetstream.ErrMsgNotFound) {
			s.log.Info("re-enqueueing job without work message", "job", j.ID)
			if err := s.enqueue(ctx, j.ID); err != nil && ctx.Err() == nil {
				s.log.Warn("re-enqueue failed", "job", j.ID, "err", err)
			}
		}
	}
}

// suspicion tracks the running jobs whose worker's heartbeat the janitor
// found missing: job id/worker instance id → when first found missing.
type suspicion map[string]time.Time

// lost returns the jobs of running whose worker has been missing from
// every listing (alive, taken at now) for at least grace, and forgets
// those whose worker is back or that no longer run. here reports a job
// this process builds itself (never lost).
func (sp suspicion) lost(now time.Time, grace time.Duration, running []*Job, alive map[string]bool, here func(id string) bool) []*Job {
	var out []*Job
	seen := map[string]bool{}
	for _, j := range running {
		if alive[j.WorkerID] || here(j.ID) {
			continue
		}
		k := j.ID + "/" + j.WorkerID
		seen[k] = true
		first, ok := sp[k]
		if !ok {
			sp[k] = now
		}
		if ok && now.Sub(first) >= grace {
			out = append(out, j)
		}
	}
	for k := range sp {
		if !seen[k] {
			delete(sp, k)
		}
	}
	return out
}

func (s *Store) liveWorkers(ctx context.Context) (map[string]bool, error) {
	lister, err := s.workers.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	alive := map[string]bool{}
	for k := range lister.Keys() {
		if !strings.HasPrefix(k, probePrefix) {
			alive[k] = true
		}
	}
	return alive, nil
}

func (s *Store) buildingHere(id string) bool {
	s.buildsMu.Lock()
	defer s.buildsMu.Unlock()
	_, ok := s.builds[id]
	return ok
}

// maxAttemptsOf is how many workers may take j.
func (s *Store) maxAttemptsOf(j *Job) int {
	if j.MaxAttempts > 0 {
		return j.MaxAttempts
	}
	return s.cfg.maxAttempts
}

// recover handles a running job whose worker is gone (killed, machine
// lost, cut off from NATS past its heartbeat): back to the queue for
// another worker while attempts remain, else Interrupted. Only a lost
// worker leads here; a build that failed on its own merits was recorded
// by its worker and is never retried.
func (s *Store) recover(ctx context.Context, dead *Job) error {
	log := s.log.With("job", dead.ID)
	max := s.maxAttemptsOf(dead)
	if dead.Attempts >= max {
		msg := fmt.Sprintf("build interrupted: its worker was lost on each of its %d attempts", dead.Attempts)
		if max == 1 {
			// --max-attempts 1, or a single-build CVM: no other CVM may
			// build what this one accepted.
			msg = "build interrupted: its worker was lost, and this job allows no other attempt"
		}
		err := failure.New(failure.Interrupted, "%s", msg)
		j, ok, uerr := s.update(ctx, dead.ID, func(j *Job) bool {
			if j.Status != StatusRunning || j.WorkerID != dead.WorkerID {
				return false
			}
			j.LostWorkers = append(j.LostWorkers, dead.Worker)
			s.fail(j, err)
			return true
		})
		if uerr != nil || !ok {
			return uerr
		}
		log.Warn("worker lost and no attempt left: job interrupted", "worker", dead.Worker, "attempts", j.Attempts)
		// Fence the lost worker's log writes before the final event.
		_, _ = s.appendEvent(ctx, attemptCursor(j.ID, j.Attempts+1), events.Msgf(events.VM,
			"worker %s lost; no attempt left (%d of %d used)", dead.Worker, j.Attempts, max), notFinal)
		_ = s.work.Purge(ctx, jetstream.WithPurgeSubject(workSubject+dead.ID))
		_ = s.objs.Delete(ctx, sourceObject(dead.ID))
		return s.ensureComplete(ctx, j)
	}
	j, ok, err := s.update(ctx, dead.ID, func(j *Job) bool {
		if j.Status != StatusRunning || j.WorkerID != dead.WorkerID {
			return false
		}
		j.LostWorkers = append(j.LostWorkers, dead.Worker)
		j.Status, j.Worker, j.WorkerID, j.StartedAt, j.Building, j.Toolchain = StatusQueued, "", "", nil, false, ""
		return true
	})
	if err != nil || !ok {
		return err
	}
	log.Warn("worker lost: job queued again", "worker", dead.Worker, "attempts", j.Attempts, "max_attempts", max)
	// Written as the next attempt: from here on the lost worker, should it
	// come back, can add nothing to this log.
	c := attemptCursor(j.ID, j.Attempts+1)
	if _, err := s.appendEvent(ctx, c, events.Msgf(events.VM, "worker %s lost; the job is queued again for attempt %d of %d",
		dead.Worker, j.Attempts+1, max), notFinal); err != nil {
		return err
	}
	if _, err := s.appendEvent(ctx, c, events.Event{Type: events.Queued, Position: s.position(j.ID)}, notFinal); err != nil {
		return err
	}
	if err := s.work.Purge(ctx, jetstream.WithPurgeSubject(workSubject+j.ID)); err != nil {
		return err
	}
	return s.enqueue(ctx, j.ID)
}

// enqueue publishes job id's work message. At most one exists per job
// (DiscardNewPerSubject); finding one already there is success.
func (s *Store) enqueue(ctx context.Context, id string) error {
	_, err := s.js.PublishMsg(ctx, &nats.Msg{Subject: workSubject + id, Data: []byte(id)})
	if err != nil {
		if _, gerr := s.work.GetLastMsgForSubject(ctx, workSubject+id); gerr == nil {
			return nil
		}
		return fmt.Errorf("enqueue: %w", err)
	}
	return nil
}
