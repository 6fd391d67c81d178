package jobs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/kettle-build/kettle/events"
	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/internal/bytesize"
	"github.com/nats-io/nats.go/jetstream"
)

// RunWorker takes jobs from the work queue one at a time and builds them
// with b until ctx ends or Shutdown starts; call it N times for N parallel
// workers. The end of ctx stops taking jobs, but a build in progress runs on
// until it finishes or Shutdown's deadline (or Close) interrupts it. It
// returns nil after such a stop, or the error that made it give up.
func (s *Store) RunWorker(ctx context.Context, name string, b Builder) error {
	return s.runWorker(ctx, name, b, false)
}

// RunOnce is RunWorker for `kettle worker --once`: it returns after the
// first job it built (a fresh confidential VM per build).
func (s *Store) RunOnce(ctx context.Context, name string, b Builder) error {
	return s.runWorker(ctx, name, b, true)
}

var keyUnsafe = regexp.MustCompile(`[^A-Za-z0-9_-]`)

func (s *Store) runWorker(ctx context.Context, name string, b Builder, once bool) error {
	if name == "" {
		name = "worker"
	}
	if s.cfg.tempDir == "" {
		return errors.New("jobs: a worker needs a private spool directory for uploaded sources (WithTempDir)")
	}
	wid := keyUnsafe.ReplaceAllString(name, "_") + "-" + strings.ReplaceAll(uuid.NewString(), "-", "")[:12]
	log := s.log.With("worker", name, "worker_id", wid)
	beat := func(ctx context.Context) error {
		// A request lost with a dying NATS node would otherwise hold the
		// next beats for JetStream's 5 s timeout, past a short TTL.
		ctx, cancel := context.WithTimeout(ctx, max(s.cfg.workerTTL/2, 250*time.Millisecond))
		defer cancel()
		_, err := s.workers.Put(ctx, wid, []byte(name))
		return err
	}
	if err := beat(ctx); err != nil {
		return fmt.Errorf("jobs: register worker: %w", err)
	}
	take, stop := context.WithCancel(ctx)
	defer stop()
	go func() { // Shutdown also ends taking
		select {
		case <-s.takeCtx.Done():
			stop()
		case <-take.Done():
		}
	}()
	hbDone, hbQuit := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(hbDone)
		t := time.NewTicker(s.cfg.workerTTL / 4)
		defer t.Stop()
		for {
			select {
			case <-s.ctx.Done():
				return
			case <-t.C:
				// The heartbeat lasts while a build runs, even after
				// taking stopped: the job is still ours.
				if err := beat(s.ctx); err != nil && s.ctx.Err() == nil {
					log.Warn("worker heartbeat failed", "err", err)
				}
			case <-hbQuit:
				return
			}
		}
	}()
	defer func() {
		stop()
		close(hbQuit)
		<-hbDone
		if s.ctx.Err() == nil {
			dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = s.workers.Purge(dctx, wid)
			cancel()
		}
	}()
	log.Info("worker started")
	for {
		if take.Err() != nil {
			log.Info("worker stopped")
			return nil
		}
		fctx, cancel := context.WithTimeout(take, 5*time.Second)
		batch, err := s.cons.Fetch(1, jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			if take.Err() != nil || s.ctx.Err() != nil {
				return nil
			}
			log.Warn("taking a job failed", "err", err)
			select {
			case <-take.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		built := false
		for msg := range batch.Messages() {
			if take.Err() != nil {
				_ = msg.Nak() // give it straight back
				continue
			}
			if s.handle(name, wid, b, msg) {
				built = true
			}
		}
		cancel()
		if once && built {
			return nil
		}
	}
}

// handle processes one work message; it reports whether it ran a build.
func (s *Store) handle(name, wid string, b Builder, msg jetstream.Msg) bool {
	id := strings.TrimPrefix(msg.Subject(), workSubject)
	log := s.log.With("job", id, "worker", name)
	ctx := s.ctx
	j, _, err := s.getJob(ctx, id)
	if errors.Is(err, ErrNotFound) {
		log.Warn("work message for an unknown or expired job dropped")
		_ = msg.Ack()
		return false
	}
	if err != nil {
		log.Warn("reading job failed; retrying later", "err", err)
		_ = msg.NakWithDelay(time.Second)
		return false
	}
	switch j.Status {
	case StatusSucceeded, StatusFailed:
		if err := s.ensureComplete(ctx, j); err != nil {
			_ = msg.NakWithDelay(time.Second)
			return false
		}
		_ = msg.Ack()
		return false
	case StatusRunning:
		alive, err := s.liveWorkers(ctx)
		if err != nil {
			_ = msg.NakWithDelay(time.Second)
			return false
		}
		if alive[j.WorkerID] {
			_ = msg.Ack() // a live worker owns it: this is a stale message
			return false
		}
		// Its worker is lost: requeue it (a fresh work message) or end it.
		if err := s.recover(ctx, j); err != nil {
			log.Warn("recovering job failed", "err", err)
			_ = msg.NakWithDelay(time.Second)
			return false
		}
		_ = msg.Ack()
		return false
	}
	if s.takeCtx.Err() != nil {
		_ = msg.Nak() // shutting down: leave it to another worker
		return false
	}
	if j.Attempts >= s.maxAttemptsOf(j) {
		// Only a job queued by an older version gets here: recover
		// ends a job that used its attempts up.
		err := failure.New(failure.Interrupted, "build interrupted: its worker was lost on each of its %d attempts", j.Attempts)
		if j, ok, _ := s.update(ctx, id, func(j *Job) bool {
			if j.Status == StatusQueued {
				s.fail(j, err)
				return true
			}
			return false
		}); ok {
			_ = s.ensureComplete(ctx, j)
			_ = s.objs.Delete(ctx, sourceObject(id))
		}
		_ = msg.Ack()
		return false
	}
	if s.lostHere(j, name) {
		// A retry goes to another worker if there is one: this one was
		// presumed dead with the job once already.
		if alive, err := s.liveWorkers(ctx); err == nil && len(alive) > 1 {
			_ = msg.NakWithDelay(s.cfg.workerTTL / 2)
			return false
		}
	}
	j, ok, err := s.update(ctx, id, func(j *Job) bool {
		if j.Status != StatusQueued {
			return false
		}
		now := s.cfg.clock().UTC()
		j.Status, j.StartedAt, j.Worker, j.WorkerID = StatusRunning, &now, name, wid
		j.Attempts++
		j.Building, j.Toolchain = false, "" // this attempt detects again
		return true
	})
	if err != nil {
		log.Warn("taking job failed", "err", err)
		_ = msg.NakWithDelay(time.Second)
		return false
	}
	if !ok {
		_ = msg.Ack()
		return false
	}
	s.run(log, wid, b, j, msg)
	return true
}

// lostHere reports whether worker name was lost with job j before.
func (s *Store) lostHere(j *Job, name string) bool {
	for _, w := range j.LostWorkers {
		if w == name {
			return true
		}
	}
	return false
}

// run builds a taken job and records the outcome.
func (s *Store) run(log *slog.Logger, wid string, b Builder, j *Job, msg jetstream.Msg) {
	bctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	s.buildsMu.Lock()
	s.builds[j.ID] = cancel
	s.buildWG.Add(1)
	s.buildsMu.Unlock()
	defer func() {
		s.buildsMu.Lock()
		delete(s.builds, j.ID)
		s.buildsMu.Unlock()
		s.buildWG.Done()
	}()
	if s.closing.Load() {
		cancel(errClosed)
	}

	// Keep the work message ours while the build runs, and stop building
	// as soon as the job is no longer ours (this worker was presumed
	// lost, e.g. cut off from NATS past its heartbeat, and the job went
	// to another): nothing it would still produce may be recorded.
	hb := make(chan struct{})
	go func() {
		t := time.NewTicker(s.cfg.ackWait / 3)
		defer t.Stop()
		own := time.NewTicker(max(s.cfg.workerTTL/4, 50*time.Millisecond))
		defer own.Stop()
		for {
			select {
			case <-hb:
				return
			case <-t.C:
				_ = msg.InProgress()
			case <-own.C:
				if !s.stillOurs(j.ID, wid) {
					cancel(errLost)
					return
				}
			}
		}
	}()
	defer close(hb)

	started := time.Now()
	sink := s.newSink(j.ID, wid, j.Attempts, func() { cancel(errLost) })
	if n := len(j.LostWorkers); n > 0 && j.Attempts > 1 {
		sink.Emit(events.Msgf(events.VM, "worker %s lost; attempt %d on %s", j.LostWorkers[n-1], j.Attempts, j.Worker))
	} else {
		sink.Emit(events.Msgf(events.VM, "worker %s took the job", j.Worker))
	}
	if note := NonceNote(j.Nonce); note != "" {
		sink.Emit(events.Msgf(events.VM, "%s", note))
	}
	log.Info("build started", "attempt", j.Attempts)

	var out *Outcome
	archive, cleanup, err := s.materialize(bctx, j)
	for tries := 1; isStoreTrouble(err) && tries < 60 && bctx.Err() == nil; tries++ {
		// NATS is unreachable or electing a leader (a node died): that
		// is no reason to fail the build.
		log.Warn("reading the source failed; retrying", "err", err)
		select {
		case <-bctx.Done():
		case <-time.After(time.Second):
		}
		archive, cleanup, err = s.materialize(bctx, j)
	}
	if err == nil {
		out, err = s.build(bctx, b, j, archive, sink)
		cleanup()
	}
	sink.close()
	if cause := context.Cause(bctx); errors.Is(cause, errClosed) {
		// Close without Shutdown: behave like a crash. The job stays
		// running; whoever opens the store next recovers it.
		log.Warn("store closed during the build; job left for recovery")
		return
	} else if errors.Is(cause, errLost) {
		log.Warn("this worker was presumed lost and the job went to another attempt; build abandoned", "attempt", j.Attempts)
		if out != nil && out.ResultPath != "" {
			os.Remove(out.ResultPath)
		}
		_ = msg.Ack() // a stale message: the retry has its own
		return
	} else if errors.Is(cause, errInterrupted) && err != nil {
		err = failure.Wrap(failure.Interrupted, err, "build interrupted: the service shut down before the build finished")
	}
	// Storing a large result takes a while; the bound only guards against
	// a wedged connection. It is a timer, not a deadline: without one,
	// JetStream bounds each request (and each chunk's ack) by its default
	// timeout, so a reply lost with a NATS node fails in seconds and is
	// retried below, instead of holding on for the whole bound.
	fctx, fcancel := context.WithCancel(s.ctx)
	defer fcancel()
	bound := time.AfterFunc(15*time.Minute, fcancel)
	defer bound.Stop()
	took := time.Since(started)
	phases := sink.phaseList()
	for {
		// NATS trouble (a node died, a leader is being elected) must not
		// lose the outcome: the work message stays ours meanwhile, and
		// this worker's heartbeat says it is alive.
		ferr := s.finish(fctx, log, wid, j, out, err, took, phases)
		if ferr == nil {
			break
		}
		if fctx.Err() != nil {
			log.Error("recording the build outcome failed; the job is left for recovery", "err", ferr)
			if out != nil && out.ResultPath != "" {
				os.Remove(out.ResultPath)
			}
			_ = msg.NakWithDelay(time.Second)
			return
		}
		log.Warn("recording the build outcome failed; retrying", "err", ferr)
		select {
		case <-fctx.Done():
		case <-time.After(time.Second):
		}
	}
	_ = msg.Ack()
}

// build calls the builder on a copy of j whose source names the local
// archive file (if any), turning a panic into an InternalError.
func (s *Store) build(ctx context.Context, b Builder, j *Job, archive string, sink events.Sink) (out *Outcome, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = failure.Wrap(failure.InternalError, fmt.Errorf("builder panic: %v", r), "internal error")
		}
	}()
	jc := *j
	jc.Source.ArchivePath = archive
	return b.Build(ctx, &jc, sink)
}

// materialize fetches an uploaded archive into a file of the spool dir
// (0700 dir, 0600 file, never TMPDIR: see WithTempDir); the returned
// cleanup removes it, and the caller runs it whatever the build's outcome.
// It returns "" for a git source.
func (s *Store) materialize(ctx context.Context, j *Job) (string, func(), error) {
	if j.Source.URL != "" {
		return "", func() {}, nil
	}
	r, err := s.objs.Get(ctx, sourceObject(j.ID))
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return "", nil, failure.Wrap(failure.InternalError, fmt.Errorf("open source object: %w", err), "the uploaded source is no longer available")
	}
	if err != nil {
		return "", nil, storeTrouble{fmt.Errorf("open source object: %w", err)}
	}
	defer r.Close()
	if err := os.MkdirAll(s.cfg.tempDir, 0o700); err != nil {
		return "", nil, failure.Wrap(failure.InternalError, fmt.Errorf("spool dir: %w", err), "internal error")
	}
	f, err := os.CreateTemp(s.cfg.tempDir, "source-*")
	if err != nil {
		return "", nil, failure.Wrap(failure.InternalError, err, "internal error")
	}
	cleanup := func() { os.Remove(f.Name()) }
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(f, h), r)
	if err != nil {
		f.Close()
		cleanup()
		return "", nil, storeTrouble{fmt.Errorf("read source object: %w", err)}
	}
	err = f.Close()
	if err == nil && hex.EncodeToString(h.Sum(nil)) != j.Source.ArchiveSHA256 {
		err = errors.New("source object digest mismatch")
	}
	if err != nil {
		cleanup()
		return "", nil, failure.Wrap(failure.InternalError, fmt.Errorf("read source object: %w", err), "internal error")
	}
	return f.Name(), cleanup, nil
}

// finish stores the result, the final state and the `complete` event, in
// that order: a client that sees `complete` can download at once.
func (s *Store) finish(ctx context.Context, log *slog.Logger, wid string, j *Job, out *Outcome, berr error, took time.Duration, phases []events.Phase) error {
	var sum string
	var size int64
	if berr == nil && (out == nil || out.ResultPath == "") {
		berr = failure.Wrap(failure.InternalError, errors.New("builder returned no result"), "internal error")
	}
	obj := attemptResultObject(j.ID, j.Attempts)
	cur, _, err := s.getJob(ctx, j.ID)
	if errors.Is(err, ErrNotFound) {
		// Expired or removed while it was built: nothing to record.
		if out != nil && out.ResultPath != "" {
			os.Remove(out.ResultPath)
		}
		log.Warn("job no longer exists; outcome dropped")
		return nil
	}
	if err != nil {
		return storeTrouble{err}
	}
	if cur.WorkerID == wid && cur.Attempts == j.Attempts && (cur.Status == StatusSucceeded || cur.Status == StatusFailed) {
		// Recorded by an earlier try of this call whose answer was lost.
		if out != nil && out.ResultPath != "" {
			os.Remove(out.ResultPath)
		}
		return s.ensureComplete(ctx, cur)
	}
	if berr == nil && (cur.Status != StatusRunning || cur.WorkerID != wid) {
		// Taken over meanwhile: storing would only be thrown away.
		os.Remove(out.ResultPath)
		log.Warn("job was taken over while building; outcome dropped")
		return nil
	}
	if berr == nil {
		t0 := time.Now()
		err := s.storeResult(ctx, obj, out.ResultPath, &sum, &size, s.storeProgress(ctx, log, attemptCursor(j.ID, j.Attempts)))
		if err == nil {
			phases = append(phases, events.Phase{Name: events.PhaseStore, Start: t0, Duration: time.Since(t0)})
		}
		if isStoreTrouble(err) {
			return err // the caller tries again with the result file
		} else if err != nil {
			berr = err
		}
	}
	fj, ok, err := s.update(ctx, j.ID, func(cur *Job) bool {
		if cur.Status != StatusRunning || cur.WorkerID != wid {
			return false // recovered by someone else meanwhile
		}
		if out != nil && out.Toolchain != "" {
			cur.Toolchain = out.Toolchain
		}
		if len(phases) > 0 {
			cur.Phases = phases
		}
		if berr != nil {
			s.fail(cur, berr)
			return true
		}
		now := s.cfg.clock().UTC()
		cur.Status, cur.FinishedAt = StatusSucceeded, &now
		cur.ResultSHA256, cur.ResultSize, cur.ResultName, cur.ResultObject = sum, size, out.ResultName, obj
		cur.Artifacts = listed(out.Artifacts)
		return true
	})
	if err != nil {
		return err
	}
	if out != nil && out.ResultPath != "" {
		os.Remove(out.ResultPath)
	}
	if !ok {
		log.Warn("job was taken over while building; outcome dropped", "status", fj.Status)
		if sum != "" {
			_ = s.objs.Delete(ctx, obj) // this attempt's own object only
		}
		return nil
	}
	_ = s.objs.Delete(ctx, sourceObject(j.ID))
	if berr != nil {
		log.Warn("build failed", "error_type", fj.ErrorType, "error", fj.Error, "cause", failure.Detail(berr), "duration", took)
	} else {
		log.Info("build succeeded", "toolchain", fj.Toolchain, "result_sha256", sum, "result_size", size, "duration", took)
	}
	return s.ensureComplete(ctx, fj)
}

// storeResult copies the result tarball at p into the object store, unless
// it is over the result size limit: then the job fails with LimitExceeded
// and nothing is stored.
func (s *Store) storeResult(ctx context.Context, obj, p string, sum *string, size *int64, progress func(done, total int64)) error {
	max := s.cfg.maxResult
	tooLarge := func(size string) error {
		return failure.New(failure.LimitExceeded, "result too large: the result tarball is %s, over the result size limit of %s (--max-result)",
			size, bytesize.Format(max))
	}
	f, err := os.Open(p)
	if err != nil {
		return failure.Wrap(failure.InternalError, fmt.Errorf("open result: %w", err), "internal error")
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return failure.Wrap(failure.InternalError, fmt.Errorf("stat result: %w", err), "internal error")
	} else if fi.Size() > max {
		return tooLarge(bytesize.Format(fi.Size()))
	}
	hw := &hashingWriter{h: sha256.New(), total: fi.Size(), progress: progress}
	// The limit holds even if the file grew after the check.
	_, err = s.objs.Put(ctx, jetstream.ObjectMeta{Name: obj}, s.paced(ctx, io.TeeReader(io.LimitReader(f, max+1), hw)))
	if err == nil && hw.n > max {
		_ = s.objs.Delete(ctx, obj)
		return tooLarge("more than " + bytesize.Format(max))
	}
	if err != nil {
		return storeTrouble{fmt.Errorf("store result: %w", err)}
	}
	*sum, *size = hex.EncodeToString(hw.h.Sum(nil)), hw.n
	return nil
}

// storeProgressEvery is how often storing a result says how far it got:
// a result that stores in under that says nothing (its time is in the
// store phase).
var storeProgressEvery = 500 * time.Millisecond

// storeProgress appends "Storing the result: x of y" to the attempt's log
// every storeProgressEvery while a result is copied into the object store
// (after the build's sink is closed, before `complete`).
func (s *Store) storeProgress(ctx context.Context, log *slog.Logger, c *logCursor) func(done, total int64) {
	last := time.Now()
	return func(done, total int64) {
		now := time.Now()
		if now.Sub(last) < storeProgressEvery || done >= total {
			return
		}
		last = now
		ev := events.Msgf(events.VM, "Storing the result: %s of %s", bytesize.Format(done), bytesize.Format(total))
		if _, err := s.appendEvent(ctx, c, ev, notFinal); err != nil {
			log.Debug("appending store progress failed", "err", err) // informational only
		}
	}
}

// storeTrouble is a failure to reach the job store (NATS unreachable, a
// stream without a leader while a node is replaced), not of the build:
// the step is tried again instead of failing the job.
type storeTrouble struct{ error }

func (e storeTrouble) Unwrap() error { return e.error }

func isStoreTrouble(err error) bool {
	var st storeTrouble
	return errors.As(err, &st)
}

// sink appends a build's events to its job's log from one goroutine, in
// order, without blocking the build. Its events.Budget caps `build` output
// lines by count (maxEvents) and by stored bytes (maxLogBytes): once either
// is reached, further output lines are dropped, the build goes on, and the
// next other event (or the end) is preceded by one summary of what was
// dropped. It is the one output cap: the pipeline caps nothing.
type sink struct {
	s        *Store
	id       string
	wid      string
	log      *slog.Logger
	cur      *logCursor
	mu       sync.Mutex
	queue    []events.Event
	wake     chan struct{}
	done     chan struct{}
	budget   events.Budget // the log's cap (--max-events, --max-log-bytes)
	closed   bool
	building bool
	lost     func()         // the log went to a later attempt
	phases   []events.Phase // ended phases, for Job.Phases
}

// maxPhases bounds Job.Phases (a job has a dozen; the bound only keeps a
// misbehaving builder from growing the job record).
const maxPhases = 64

func (k *sink) phaseList() []events.Phase {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]events.Phase(nil), k.phases...)
}

func (s *Store) newSink(id, wid string, attempt int, lost func()) *sink {
	k := &sink{s: s, id: id, wid: wid, log: s.log.With("job", id), cur: attemptCursor(id, attempt),
		budget: events.Budget{MaxLines: s.cfg.maxEvents, MaxBytes: s.cfg.maxLogBytes}, wake: make(chan struct{}, 1), done: make(chan struct{}), lost: lost}
	go k.publish()
	return k
}

// eventOverhead is what one stored event costs besides its message: the
// JSON around it, the index header and JetStream's per-message record.
const eventOverhead = 96

// storedSize is an upper bound of what ev's message occupies once stored:
// JSON escaping turns a control character or <, >, & into six bytes, so a
// line of them counts six times its length.
func storedSize(msg string) int64 {
	n := int64(eventOverhead)
	for i := 0; i < len(msg); i++ {
		switch c := msg[i]; {
		case c < 0x20 || c == '<' || c == '>' || c == '&':
			n += 6
		case c == '"' || c == '\\':
			n += 2
		case c == 0xe2 && i+2 < len(msg) && msg[i+1] == 0x80 && (msg[i+2] == 0xa8 || msg[i+2] == 0xa9):
			n += 6 // U+2028, U+2029
			i += 2
		default:
			n++
		}
	}
	return n
}

// Emit implements events.Sink.
func (k *sink) Emit(ev events.Event) {
	if ev.Type == events.Complete || ev.Type == events.Queued {
		return // the store owns these
	}
	if ev.Phase != nil {
		k.mu.Lock()
		if len(k.phases) < maxPhases {
			k.phases = append(k.phases, *ev.Phase)
		}
		k.mu.Unlock()
		if ev.PhaseOnly() {
			return // job state, not a log line
		}
	}
	if ev.Toolchain != "" {
		k.markBuilding(ev.Toolchain)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return
	}
	keep, summary := k.budget.Admit(ev, storedSize(ev.Msg), eventOverhead)
	if summary != nil {
		k.queue = append(k.queue, *summary)
	}
	if !keep {
		return
	}
	k.queue = append(k.queue, ev)
	k.signal()
}

func (k *sink) signal() {
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

// markBuilding records the detected toolchain and that the build phase
// started (informational: a lost worker's job is retried either way).
func (k *sink) markBuilding(toolchain string) {
	k.mu.Lock()
	if k.building {
		k.mu.Unlock()
		return
	}
	k.building = true
	k.mu.Unlock()
	_, _, err := k.s.update(k.s.ctx, k.id, func(j *Job) bool {
		if j.Status != StatusRunning || j.WorkerID != k.wid || j.Building {
			return false
		}
		j.Building, j.Toolchain = true, toolchain
		return true
	})
	if err != nil {
		k.log.Warn("recording build start failed", "err", err)
	}
}

func notFinal(last *events.Event) bool { return last == nil || !last.Terminal() }

func (k *sink) close() {
	k.mu.Lock()
	if summary := k.budget.Flush(); summary != nil {
		k.queue = append(k.queue, *summary)
	}
	k.closed = true
	k.signal()
	k.mu.Unlock()
	<-k.done
}

func (k *sink) publish() {
	defer close(k.done)
	for {
		k.mu.Lock()
		batch := k.queue
		k.queue = nil
		closed := k.closed
		k.mu.Unlock()
		for _, ev := range batch {
			for {
				// Never write past `complete`: if the job was recovered
				// elsewhere (this worker presumed dead), its log is final.
				ok, err := k.s.appendEvent(k.s.ctx, k.cur, ev, notFinal)
				if errors.Is(err, errFenced) || (err == nil && !ok) {
					k.log.Warn("job log already belongs to a later attempt or is complete; dropping this worker's events")
					k.mu.Lock()
					k.closed, k.queue = true, nil
					k.mu.Unlock()
					if k.lost != nil {
						k.lost()
					}
					return
				}
				if err == nil {
					break
				}
				if k.s.ctx.Err() != nil {
					return // the store is closing: nothing can be written
				}
				k.log.Warn("appending event failed; retrying", "err", err)
				time.Sleep(200 * time.Millisecond)
			}
		}
		if closed && len(batch) == 0 {
			return
		}
		if len(batch) == 0 {
			<-k.wake
		}
	}
}

// stillOurs reports whether worker instance wid still owns job id. A read
// that fails (NATS unreachable) says yes: the fenced log and the CAS on the
// job state keep a worker that is wrong about it from recording anything.
func (s *Store) stillOurs(id, wid string) bool {
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	j, _, err := s.getJob(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return false
	}
	if err != nil {
		return true
	}
	return j.Status == StatusRunning && j.WorkerID == wid
}
