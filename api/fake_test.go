package api

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/kettle-build/kettle/events"
	"github.com/kettle-build/kettle/jobs"
)

// fakeStore is an in-memory jobs.Service double: job logs (stored as
// their JSON, as the real store holds them) with live following, results
// as byte slices, switchable submit errors.
type fakeStore struct {
	mu        sync.Mutex
	changed   chan struct{} // closed and replaced on every log change
	jobs      map[string]*jobs.Job
	logs      map[string][]jobs.Entry
	results   map[string][]byte
	submitErr error
	readyErr  error
	submitted []jobs.Request
	archives  [][]byte
	onSubmit  func(id string) // runs after a successful submit (a fake worker)
}

func newFakeStore() *fakeStore {
	f := &fakeStore{jobs: map[string]*jobs.Job{}, logs: map[string][]jobs.Entry{}, results: map[string][]byte{}, changed: make(chan struct{})}
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
	f.appendLocked(id, events.Event{Type: events.Queued, Position: 0})
	f.submitted = append(f.submitted, req)
	f.archives = append(f.archives, archive)
	cb := f.onSubmit
	f.mu.Unlock()
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
	f.appendLocked(id, evs...)
	return id
}

// appendLocked stores evs as the real store does (their JSON) and wakes
// the followers.
func (f *fakeStore) appendLocked(id string, evs ...events.Event) {
	for _, e := range evs {
		b, err := json.Marshal(e)
		if err != nil {
			panic(err)
		}
		f.logs[id] = append(f.logs[id], jobs.Entry{Index: len(f.logs[id]), Data: b, Event: e})
	}
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeStore) emit(id string, evs ...events.Event) {
	f.mu.Lock()
	f.appendLocked(id, evs...)
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

func (f *fakeStore) Follow(ctx context.Context, id string) (jobs.Feed, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.jobs[id]; !ok {
		return nil, jobs.ErrNotFound
	}
	return fakeFeed{f, id}, nil
}

type fakeFeed struct {
	f  *fakeStore
	id string
}

func (ff fakeFeed) Next(from int) ([]jobs.Entry, bool, error, <-chan struct{}) {
	ff.f.mu.Lock()
	defer ff.f.mu.Unlock()
	log := ff.f.logs[ff.id]
	done := len(log) > 0 && log[len(log)-1].Event.Terminal()
	if from >= len(log) {
		return nil, done, nil, ff.f.changed
	}
	return log[from:len(log):len(log)], done, nil, ff.f.changed
}

func (fakeFeed) Close() {}

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

// addRaw appends an entry whose stored bytes are data, as they are.
func (f *fakeStore) addRaw(id string, ev events.Event, data string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logs[id] = append(f.logs[id], jobs.Entry{Index: len(f.logs[id]), Data: []byte(data), Event: ev})
	close(f.changed)
	f.changed = make(chan struct{})
}
