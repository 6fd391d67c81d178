package jobs

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kettle-build/kettle/failure"
)

// joinWorker runs a worker in its own store connected to front over the
// network, as a `kettle worker` process would; closing the returned store
// drops it like a crash (the job stays running, its heartbeat ends).
func joinWorker(t *testing.T, front *Store, name string, b Builder) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, err := Connect(ctx, front.URL(), WithWorkerTTL(time.Second), WithAckWait(3*time.Second), WithTempDir(t.TempDir()),
		WithClientAuth(ClientAuth{CredsFile: front.CredsFile()}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	go w.RunWorker(context.Background(), name, b)
	return w
}

// blocking is a builder that reports each job it starts and blocks in the
// build phase until its context ends.
func blocking(t *testing.T, started chan<- string) *fakeBuilder {
	return &fakeBuilder{dir: t.TempDir(), gate: func(ctx context.Context, j *Job) error {
		started <- j.ID
		<-ctx.Done()
		return ctx.Err()
	}}
}

// TestLostWorker: a job whose worker is lost is retried on another worker
// up to its max attempts; a build that failed by itself is not; a
// single-build job is never built elsewhere.
func TestLostWorker(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		opts []Option
		// lose: how many workers take the job and are lost
		lose       int
		ownFailure bool
		status     Status
		errorType  string
		attempts   int
		msgs       []string // vm events in order (after the nonce-less first one)
	}{
		{name: "retried", lose: 1, status: StatusSucceeded, attempts: 2,
			msgs: []string{"worker lost1 took the job", "worker lost1 lost; the job is queued again for attempt 2 of 3", "worker lost1 lost; attempt 2 on good"}},
		{name: "twice", lose: 2, status: StatusSucceeded, attempts: 3,
			msgs: []string{"worker lost1 took the job", "worker lost1 lost; the job is queued again for attempt 2 of 3",
				"worker lost1 lost; attempt 2 on lost2", "worker lost2 lost; the job is queued again for attempt 3 of 3", "worker lost2 lost; attempt 3 on good"}},
		{name: "used-up", opts: []Option{WithMaxAttempts(2)}, lose: 2, status: StatusFailed, errorType: "Interrupted", attempts: 2,
			msgs: []string{"worker lost1 took the job", "worker lost1 lost; the job is queued again for attempt 2 of 2",
				"worker lost1 lost; attempt 2 on lost2", "worker lost2 lost; no attempt left (2 of 2 used)"}},
		{name: "single-build", opts: []Option{WithSingleBuild()}, lose: 1, status: StatusFailed, errorType: "Interrupted", attempts: 1,
			msgs: []string{"single-build mode: this CVM accepts no further builds", "worker lost1 took the job", "worker lost1 lost; no attempt left (1 of 1 used)"}},
		{name: "own-failure", ownFailure: true, status: StatusFailed, errorType: "BuildFailed", attempts: 1,
			msgs: []string{"worker bad took the job"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			front := openTest(t, t.TempDir(), append([]Option{WithListen("127.0.0.1:0"), WithWorkerTTL(time.Second)}, tc.opts...)...)
			j := submitArchive(t, front, "src")
			started := make(chan string, 4)
			for i := 1; i <= tc.lose; i++ {
				w := joinWorker(t, front, fmt.Sprintf("lost%d", i), blocking(t, started))
				<-started
				waitFor(t, func() bool { g, _ := front.Get(ctx, j.ID); return g.Building && g.Attempts == i })
				w.Close()
				// Wait for the recovery before the next worker joins, so
				// that it is the one that takes the job.
				waitFor(t, func() bool { g, _ := front.Get(ctx, j.ID); return g.Status != StatusRunning })
			}
			var counted []*fakeBuilder
			if tc.ownFailure {
				bad := &fakeBuilder{dir: t.TempDir(), fail: failure.New(failure.BuildFailed, "cargo build failed (exit status 101)")}
				joinWorker(t, front, "bad", bad)
				counted = append(counted, bad)
				collect(t, front, j.ID, 0) // failed before the healthy worker joins
			}
			// A healthy worker: it builds the retry, and must never get a
			// job that already ended.
			good := &fakeBuilder{lines: 1, dir: t.TempDir()}
			joinWorker(t, front, "good", good)
			evs := collect(t, front, j.ID, 0)
			checkIndexes(t, evs, 0)
			var msgs []string
			for _, e := range evs {
				if e.ev.Type == "vm" {
					msgs = append(msgs, e.ev.Msg)
				}
			}
			if strings.Join(msgs, "\n") != strings.Join(tc.msgs, "\n") {
				t.Errorf("vm events:\n%s\nwant\n%s\n(log %s)", strings.Join(msgs, "\n"), strings.Join(tc.msgs, "\n"), types(evs))
			}
			g, _ := front.Get(ctx, j.ID)
			if g.Status != tc.status || g.ErrorType != tc.errorType || g.Attempts != tc.attempts {
				t.Fatalf("job %+v", g)
			}
			if r := evs[len(evs)-1].ev.Result; r.ErrorType != tc.errorType {
				t.Fatalf("complete %+v", r)
			}
			if tc.ownFailure || tc.status == StatusFailed {
				time.Sleep(500 * time.Millisecond) // a wrong retry would start now
				good.mu.Lock()
				n := len(good.built)
				good.mu.Unlock()
				if n != 0 {
					t.Fatalf("a finished job was built again on another worker")
				}
			}
			for _, b := range counted {
				b.mu.Lock()
				if len(b.built) != 1 {
					t.Errorf("failing builder ran %d times", len(b.built))
				}
				b.mu.Unlock()
			}
		})
	}
}

// TestFinishedHookCountsCluster: every store sees every finished job once,
// whichever process built it, including those finished before it opened.
func TestFinishedHookCountsCluster(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]map[string]Status{"front": {}, "other": {}}
	hook := func(who string) Option {
		return WithFinished(func(j *Job) {
			mu.Lock()
			defer mu.Unlock()
			if _, dup := seen[who][j.ID]; dup {
				t.Errorf("%s saw job %s finish twice", who, j.ID)
			}
			seen[who][j.ID] = j.Status
		})
	}
	front := openTest(t, t.TempDir(), WithListen("127.0.0.1:0"), hook("front"))
	joinWorker(t, front, "w", &fakeBuilder{lines: 1, dir: t.TempDir()})
	a := submitArchive(t, front, "a")
	collect(t, front, a.ID, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	other, err := Connect(ctx, front.URL(), WithClientAuth(ClientAuth{CredsFile: front.CredsFile()}), hook("other"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	b := submitArchive(t, other, "b")
	collect(t, other, b.ID, 0)
	waitFor(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen["front"]) == 2 && len(seen["other"]) == 2
	})
	mu.Lock()
	defer mu.Unlock()
	for who, m := range seen {
		if m[a.ID] != StatusSucceeded || m[b.ID] != StatusSucceeded {
			t.Errorf("%s: %v", who, m)
		}
	}
}

// TestSuspicion: a worker counts as lost only when its heartbeat stays
// missing from the janitor's listings for the grace period; one listing
// without it (heartbeats expired while a NATS node was replaced) is not
// enough, and a worker seen again starts over.
func TestSuspicion(t *testing.T) {
	t0 := time.Unix(1000, 0)
	a := &Job{ID: "a", WorkerID: "wa"}
	b := &Job{ID: "b", WorkerID: "wb"}
	here := &Job{ID: "h", WorkerID: "wh"} // built by this process
	running := []*Job{a, b, here}
	building := func(id string) bool { return id == "h" }
	steps := []struct {
		at    time.Duration
		alive []string
		lost  string
	}{
		{0, nil, ""},                                  // first sighting of a, b missing
		{400 * time.Millisecond, nil, ""},             // within the grace
		{500 * time.Millisecond, []string{"wb"}, "a"}, // a missing for the grace; b is back
		{600 * time.Millisecond, nil, "a"},            // a still lost; b's clock started again
		{900 * time.Millisecond, nil, "a"},            // b: 300 ms
		{1100 * time.Millisecond, nil, "a,b"},
	}
	sp := suspicion{}
	for _, st := range steps {
		alive := map[string]bool{}
		for _, w := range st.alive {
			alive[w] = true
		}
		var got []string
		for _, j := range sp.lost(t0.Add(st.at), 500*time.Millisecond, running, alive, building) {
			got = append(got, j.ID)
		}
		if g := strings.Join(got, ","); g != st.lost {
			t.Errorf("at %v: lost %q, want %q", st.at, g, st.lost)
		}
	}
	// A job that left running (recovered, finished) is forgotten.
	sp.lost(t0.Add(2*time.Second), 500*time.Millisecond, []*Job{b}, map[string]bool{}, building)
	if _, ok := sp["a/wa"]; ok || len(sp) != 1 {
		t.Errorf("suspicions after a left running: %v", sp)
	}
}
