package api

import (
	"bytes"
	"context"
	"encoding/hex"
	"io"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/kettle-build/kettle/events"
	"github.com/kettle-build/kettle/jobs"
)

// fakeStore is an in-memory jobs.Service double: job logs with live
// following, results as byte slices, switchable submit errors.
type fakeStore struct {
	mu        sync.Mutex
	cond      *sync.Cond
	jobs      map[string]*jobs.Job
	logs      map[string][]events.Event
	results   map[string][]byte
	submitErr error
	readyErr  error
	submitted []jobs.Request
	archives  [][]byte
	onSubmit  func(id string) // runs after a successful submit (a fake worker)
}

func newFakeStore() *fakeStore {
	f := &fakeStore{jobs: map[string]*jobs.Job{}, logs: map[string][]events.Event{}, results: map[string][]byte{}}
	f.cond = sync.NewCond(&f.mu)
	return f
}

func (f *fakeStore) Submit(ctx context.Context, req jobs.Request) (*jobs.Job, error) {
	var archive []byte
	if req.Archive != nil {
		b, err := io.ReadAll(req.Archive)
		if err != nil {
			return nil, err
		}
		archive = b
	}
	f.mu.Lock()
	if f.submitErr != nil {
		err := f.submitErr
		f.mu.Unlock()
		return nil, err
	}
	id := uuid.NewString()
	src := req.Source
	src.ArchivePath = "" // the spool file is the api's, never stored
	j := &jobs.Job{ID: id, Status: jobs.StatusQueued, CreatedAt: time.Now().UTC(), Nonce: hex.EncodeToString(req.Nonce), Source: src}
	f.jobs[id] = j
	f.logs[id] = []events.Event{{Type: events.Queued, Position: 0}}
	f.submitted = append(f.submitted, req)
	f.archives = append(f.archives, archive)
	cb := f.onSubmit
	f.mu.Unlock()
	f.cond.Broadcast()
	cp := *j
	if cb != nil {
		go cb(id)
	}
	return &cp, nil
}

// add creates a job directly with the given log.
func (f *fakeStore) add(status jobs.Status, evs ...events.Event) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := uuid.NewString()
	f.jobs[id] = &jobs.Job{ID: id, Status: status, CreatedAt: time.Now().UTC()}
	f.logs[id] = evs
	return id
}

func (f *fakeStore) emit(id string, evs ...events.Event) {
	f.mu.Lock()
	f.logs[id] = append(f.logs[id], evs...)
	for _, e := range evs {
		if e.Type == events.Complete {
			j := f.jobs[id]
			now := time.Now().UTC()
			j.FinishedAt = &now
			if e.Result.Status == "ok" {
				j.Status = jobs.StatusSucceeded
			} else {
				j.Status, j.Error, j.ErrorType = jobs.StatusFailed, e.Result.Error, e.Result.ErrorType
			}
		} else if e.Type != events.Queued {
			f.jobs[id].Status = jobs.StatusRunning
		}
	}
	f.mu.Unlock()
	f.cond.Broadcast()
}

func (f *fakeStore) setResult(id, name string, b []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.results[id] = b
	f.jobs[id].ResultName = name
	f.jobs[id].ResultSize = int64(len(b))
	f.jobs[id].ResultSHA256 = "abc"
}

func (f *fakeStore) Get(ctx context.Context, id string) (*jobs.Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	j, ok := f.jobs[id]
	if !ok {
		return nil, jobs.ErrNotFound
	}
	cp := *j
	return &cp, nil
}

func (f *fakeStore) Watch(ctx context.Context, id string, from int, fn func(int, events.Event) error) error {
	stop := context.AfterFunc(ctx, func() {
		f.mu.Lock()
		f.cond.Broadcast()
		f.mu.Unlock()
	})
	defer stop()
	i := from
	for {
		f.mu.Lock()
		if _, ok := f.jobs[id]; !ok {
			f.mu.Unlock()
			return jobs.ErrNotFound
		}
		for i >= len(f.logs[id]) && ctx.Err() == nil {
			f.cond.Wait()
		}
		if ctx.Err() != nil {
			f.mu.Unlock()
			return ctx.Err()
		}
		ev := f.logs[id][i]
		f.mu.Unlock()
		if err := fn(i, ev); err != nil {
			return err
		}
		if ev.Type == events.Complete {
			return nil
		}
		i++
	}
}

func (f *fakeStore) Result(ctx context.Context, id string) (io.ReadCloser, *jobs.Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	j, ok := f.jobs[id]
	if !ok {
		return nil, nil, jobs.ErrNotFound
	}
	b, ok := f.results[id]
	if !ok || j.Status != jobs.StatusSucceeded {
		return nil, nil, jobs.ErrNoResult
	}
	cp := *j
	return io.NopCloser(bytes.NewReader(b)), &cp, nil
}

func (f *fakeStore) Ready(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.readyErr
}
