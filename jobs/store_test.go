package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kettle-build/kettle/events"
	"github.com/kettle-build/kettle/failure"
)

// fakeBuilder is a test double of the worker: it emits a few events and
// writes a result derived from the job, optionally waiting on a gate.
type fakeBuilder struct {
	lines int
	// gate, when set, is called after `detect` (or before it when
	// beforeDetect) and may block until the test releases the build.
	gate         func(ctx context.Context, j *Job) error
	beforeDetect bool
	fail         error
	dir          string
	mu           sync.Mutex
	built        []string
}

func (f *fakeBuilder) Build(ctx context.Context, j *Job, sink events.Sink) (*Outcome, error) {
	f.mu.Lock()
	f.built = append(f.built, j.ID)
	f.mu.Unlock()
	if j.Source.ArchivePath != "" {
		if _, err := os.Stat(j.Source.ArchivePath); err != nil {
			return nil, fmt.Errorf("archive not materialised: %w", err)
		}
	}
	if f.gate != nil && f.beforeDetect {
		if err := f.gate(ctx, j); err != nil {
			return nil, err
		}
	}
	sink.Emit(events.Msgf(events.Init, "Extracted 3 files"))
	sink.Emit(events.Detected("cargo", "Cargo"))
	if f.gate != nil && !f.beforeDetect {
		if err := f.gate(ctx, j); err != nil {
			return nil, err
		}
	}
	sink.Emit(events.Msgf(events.Build, "Running `cargo build --locked --release`"))
	for i := 0; i < f.lines; i++ {
		sink.Emit(events.Msgf(events.Build, "line %d", i))
	}
	sink.Emit(events.Msgf(events.Provenance, "Wrote provenance.json"))
	sink.Emit(events.Event{Type: events.Complete, Result: &events.Result{Status: "ok"}}) // ignored by the store
	if f.fail != nil {
		return &Outcome{Toolchain: "cargo"}, f.fail
	}
	p := filepath.Join(f.dir, j.ID+".tar.gz")
	if err := os.WriteFile(p, []byte("result of "+j.ID+" nonce "+j.Nonce), 0o644); err != nil {
		return nil, err
	}
	return &Outcome{ResultPath: p, ResultName: "demo", Toolchain: "cargo", Artifacts: []Artifact{{Name: "demo", SHA256: "ab", Size: 3}}}, nil
}

// testNonce is a full 16-byte nonce: shorter ones add a `vm` note.
const (
	testNonce    = "0123456789abcdef"
	testNonceHex = "30313233343536373839616263646566"
)

func openTest(t *testing.T, dir string, opts ...Option) *Store {
	t.Helper()
	opts = append([]Option{WithWorkerTTL(3 * time.Second), WithAckWait(3 * time.Second)}, opts...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := OpenEmbedded(ctx, dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func startWorker(t *testing.T, s *Store, name string, b Builder) context.CancelFunc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := s.RunWorker(ctx, name, b); err != nil {
			t.Errorf("RunWorker: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); s.cancelBuilds(errClosed); <-done })
	return cancel
}

func submitArchive(t *testing.T, s Service, body string) *Job {
	t.Helper()
	j, err := s.Submit(context.Background(), Request{Nonce: []byte(testNonce), Archive: strings.NewReader(body), Source: Source{ArchiveName: "demo.zip"}})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

type logged struct {
	idx int
	ev  events.Event
}

func collect(t *testing.T, s Service, id string, from int) []logged {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out []logged
	err := Watch(ctx, s, id, from, func(i int, ev events.Event) error {
		out = append(out, logged{i, ev})
		return nil
	})
	if err != nil {
		t.Fatalf("Watch %s: %v (got %d events)", id, err, len(out))
	}
	return out
}

func types(evs []logged) string {
	var b []string
	for _, e := range evs {
		b = append(b, string(e.ev.Type))
	}
	return strings.Join(b, ",")
}

func checkIndexes(t *testing.T, evs []logged, from int) {
	t.Helper()
	for i, e := range evs {
		if e.idx != from+i {
			t.Fatalf("event %d has index %d, want %d", i, e.idx, from+i)
		}
	}
}

func readResult(t *testing.T, s Service, id string) []byte {
	t.Helper()
	r, j, err := s.Result(context.Background(), id)
	if err != nil {
		t.Fatalf("Result: %v", err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != j.ResultSize {
		t.Fatalf("result size %d, job says %d", len(b), j.ResultSize)
	}
	return b
}

func TestSubmitBuildResult(t *testing.T) {
	s := openTest(t, t.TempDir())
	if err := s.Ready(context.Background()); !errors.Is(err, ErrNotReady) {
		t.Fatalf("Ready without workers = %v", err)
	}
	fb := &fakeBuilder{lines: 5, dir: t.TempDir()}
	startWorker(t, s, "w1", fb)
	j := submitArchive(t, s, "PK\x03\x04 archive")
	if j.Status != StatusQueued || j.Position != 0 || !validID(j.ID) {
		t.Fatalf("submitted job %+v", j)
	}
	evs := collect(t, s, j.ID, 0)
	checkIndexes(t, evs, 0)
	want := "queued,vm,init,detect,build,build,build,build,build,build,provenance,complete"
	if types(evs) != want {
		t.Fatalf("events %s\nwant   %s", types(evs), want)
	}
	if evs[1].ev.Msg != "worker w1 took the job" {
		t.Errorf("vm event %q", evs[1].ev.Msg)
	}
	if r := evs[len(evs)-1].ev.Result; r == nil || r.Status != "ok" {
		t.Fatalf("complete %+v", r)
	}
	got := readResult(t, s, j.ID)
	if string(got) != "result of "+j.ID+" nonce "+testNonceHex {
		t.Fatalf("result %q", got)
	}
	g, err := s.Get(context.Background(), j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if g.Status != StatusSucceeded || g.ResultName != "demo" || g.Toolchain != "cargo" || g.StartedAt == nil || g.FinishedAt == nil || len(g.ResultSHA256) != 64 {
		t.Fatalf("job %+v", g)
	}
	if len(g.Artifacts) != 1 || g.Artifacts[0] != (Artifact{Name: "demo", SHA256: "ab", Size: 3}) {
		t.Fatalf("artifacts %+v: not the outcome's", g.Artifacts)
	}
	if g.Source.ArchiveName != "demo.zip" || len(g.Source.ArchiveSHA256) != 64 || g.Source.ArchiveSize != int64(len("PK\x03\x04 archive")) {
		t.Fatalf("source %+v", g.Source)
	}
	if err := s.Ready(context.Background()); err != nil {
		t.Fatalf("Ready with a worker = %v", err)
	}
	// Unknown and malformed ids.
	for _, id := range []string{"00000000-0000-4000-8000-000000000000", "../x", "kettle.>"} {
		if _, err := s.Get(context.Background(), id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%q) = %v", id, err)
		}
		if err := s.Watch(context.Background(), id, 0, nil); !errors.Is(err, ErrNotFound) {
			t.Errorf("Watch(%q) = %v", id, err)
		}
	}
}

func TestBuildFailure(t *testing.T) {
	s := openTest(t, t.TempDir())
	startWorker(t, s, "w1", &fakeBuilder{dir: t.TempDir(), fail: failure.Wrap(failure.BuildFailed, errors.New("exit 101 in /srv/secret/dir"), "cargo build failed (exit status 101)")})
	j, err := s.Submit(context.Background(), Request{Nonce: []byte{1}, Source: Source{URL: "https://example.com/r.git", Ref: "main"}})
	if err != nil {
		t.Fatal(err)
	}
	evs := collect(t, s, j.ID, 0)
	r := evs[len(evs)-1].ev.Result
	if r.Status != "failed" || r.ErrorType != "BuildFailed" || r.Error != "cargo build failed (exit status 101)" {
		t.Fatalf("complete %+v", r)
	}
	g, _ := s.Get(context.Background(), j.ID)
	if g.Status != StatusFailed || g.ErrorType != "BuildFailed" || g.Toolchain != "cargo" || g.Source.URL == "" {
		t.Fatalf("job %+v", g)
	}
	if _, _, err := s.Result(context.Background(), j.ID); !errors.Is(err, ErrNoResult) {
		t.Fatalf("Result of failed job: %v", err)
	}
}

func TestManyWatchersExactlyOnce(t *testing.T) {
	s := openTest(t, t.TempDir())
	release := make(chan struct{})
	fb := &fakeBuilder{lines: 3000, dir: t.TempDir(), gate: func(ctx context.Context, j *Job) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}}
	startWorker(t, s, "w1", fb)
	j := submitArchive(t, s, "src")
	const watchers = 200
	var wg sync.WaitGroup
	results := make([][]logged, watchers+1)
	errs := make([]error, watchers+1)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for w := 0; w <= watchers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			errs[w] = s.Watch(ctx, j.ID, 0, func(i int, ev events.Event) error {
				results[w] = append(results[w], logged{i, ev})
				if w == watchers && i%100 == 0 {
					time.Sleep(20 * time.Millisecond) // the slow one
				}
				return nil
			})
		}(w)
	}
	time.Sleep(100 * time.Millisecond) // some watchers join before the build runs, some during
	close(release)
	wg.Wait()
	want := 4 + 1 + 3000 + 1 + 1 // queued vm init detect, Running, lines, provenance, complete
	for w := range results {
		if errs[w] != nil {
			t.Fatalf("watcher %d: %v", w, errs[w])
		}
		if len(results[w]) != want {
			t.Fatalf("watcher %d got %d events, want %d", w, len(results[w]), want)
		}
		checkIndexes(t, results[w], 0)
		for i := 0; i < 3000; i++ {
			if m := results[w][5+i].ev.Msg; m != fmt.Sprintf("line %d", i) {
				t.Fatalf("watcher %d event %d = %q", w, 5+i, m)
			}
		}
	}
}

func TestWatchFrom(t *testing.T) {
	s := openTest(t, t.TempDir())
	startWorker(t, s, "w1", &fakeBuilder{lines: 3, dir: t.TempDir()})
	j := submitArchive(t, s, "src")
	all := collect(t, s, j.ID, 0)
	for _, from := range []int{1, 4, len(all) - 1} {
		got := collect(t, s, j.ID, from)
		if len(got) != len(all)-from {
			t.Fatalf("from %d: %d events, want %d", from, len(got), len(all)-from)
		}
		checkIndexes(t, got, from)
	}
	if got := collect(t, s, j.ID, len(all)+5); len(got) != 0 {
		t.Fatalf("from past the end: %d events", len(got))
	}
}

func TestQueuePositionsAndLimit(t *testing.T) {
	s := openTest(t, t.TempDir(), WithQueueLimit(3))
	var ids []string
	for i := 0; i < 3; i++ {
		j := submitArchive(t, s, fmt.Sprint("src", i))
		if j.Position != i {
			t.Fatalf("job %d position %d", i, j.Position)
		}
		ids = append(ids, j.ID)
	}
	if _, err := s.Submit(context.Background(), Request{Nonce: []byte{1}, Source: Source{URL: "https://x/y"}}); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("4th submit: %v", err)
	}
	if g, _ := s.Get(context.Background(), ids[2]); g.Position != 2 {
		t.Fatalf("Get position %d", g.Position)
	}
	release := make(chan struct{})
	startWorker(t, s, "w1", &fakeBuilder{dir: t.TempDir(), gate: func(ctx context.Context, j *Job) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}})
	// The first job is taken: the others move up, each logging it once.
	waitFor(t, func() bool { g, _ := s.Get(context.Background(), ids[0]); return g.Status == StatusRunning })
	waitFor(t, func() bool { g, _ := s.Get(context.Background(), ids[2]); return g.Position == 1 })
	// Let the position events be written before the next job is taken.
	waitFor(t, func() bool {
		c := newCursor(ids[2])
		return s.load(context.Background(), c) == nil && c.last != nil && c.last.Type == events.Queued && c.last.Position == 1
	})
	close(release)
	for i, id := range ids {
		evs := collect(t, s, id, 0)
		var pos []int
		for _, e := range evs {
			if e.ev.Type == events.Queued {
				pos = append(pos, e.ev.Position)
			}
		}
		want := map[int]string{0: "[0]", 1: "[1 0]", 2: "[2 1 0]"}[i]
		if fmt.Sprint(pos) != want {
			t.Errorf("job %d queued positions %v, want %s", i, pos, want)
		}
		if evs[len(evs)-1].ev.Result.Status != "ok" {
			t.Errorf("job %d failed", i)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSingleBuildAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, WithSingleBuild())
	one := submitArchive(t, s, "one")
	c := newCursor(one.ID)
	if err := s.load(context.Background(), c); err != nil || c.next != 2 || c.last.Type != events.VM || !strings.Contains(c.last.Msg, "single-build") {
		t.Fatalf("single-build notice: %v %+v", err, c)
	}
	if _, err := s.Submit(context.Background(), Request{Nonce: []byte{1}, Source: Source{URL: "https://x/y"}}); !errors.Is(err, ErrSingleBuildUsed) {
		t.Fatalf("second submit: %v", err)
	}
	s.Close()
	s = openTest(t, dir, WithSingleBuild())
	if _, err := s.Submit(context.Background(), Request{Nonce: []byte{1}, Source: Source{URL: "https://x/y"}}); !errors.Is(err, ErrSingleBuildUsed) {
		t.Fatalf("submit after reopen: %v", err)
	}
}

func TestDataDirLocked(t *testing.T) {
	dir := t.TempDir()
	openTest(t, dir)
	if _, err := OpenEmbedded(context.Background(), dir); err == nil {
		t.Fatal("second OpenEmbedded on the same data dir succeeded")
	}
}

func TestMaxEvents(t *testing.T) {
	s := openTest(t, t.TempDir(), WithMaxEvents(10))
	startWorker(t, s, "w1", &fakeBuilder{lines: 25, dir: t.TempDir()})
	j := submitArchive(t, s, "src")
	evs := collect(t, s, j.ID, 0)
	// queued vm init detect + 10 build lines (Running + 9) + summary + provenance + complete
	if len(evs) != 4+10+1+2 {
		t.Fatalf("%d events: %s", len(evs), types(evs))
	}
	if m := evs[14].ev.Msg; !strings.Contains(m, "16 more output lines omitted") {
		t.Fatalf("summary %q", m)
	}
	if evs[15].ev.Type != events.Provenance {
		t.Fatalf("after the summary: %s", evs[15].ev.Type)
	}
}

func TestRetention(t *testing.T) {
	s := openTest(t, t.TempDir(), WithRetention(2*time.Second))
	startWorker(t, s, "w1", &fakeBuilder{dir: t.TempDir()})
	j := submitArchive(t, s, "src")
	collect(t, s, j.ID, 0)
	readResult(t, s, j.ID)
	waitFor(t, func() bool {
		_, err := s.Get(context.Background(), j.ID)
		return errors.Is(err, ErrNotFound)
	})
	if _, _, err := s.Result(context.Background(), j.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Result after retention: %v", err)
	}
	waitFor(t, func() bool {
		_, err := s.objs.GetInfo(context.Background(), resultObject(j.ID))
		_, lerr := s.evs.GetLastMsgForSubject(context.Background(), eventsSubject+j.ID)
		return err != nil && lerr != nil
	})
}

func TestShutdownInterruptsAfterDeadline(t *testing.T) {
	s := openTest(t, t.TempDir())
	started := make(chan string, 1)
	startWorker(t, s, "w1", &fakeBuilder{dir: t.TempDir(), gate: func(ctx context.Context, j *Job) error {
		started <- j.ID
		<-ctx.Done()
		return ctx.Err()
	}})
	j := submitArchive(t, s, "src")
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	g, _ := s.Get(context.Background(), j.ID)
	if g.Status != StatusFailed || g.ErrorType != "Interrupted" {
		t.Fatalf("job after shutdown: %+v", g)
	}
	evs := collect(t, s, j.ID, 0)
	if r := evs[len(evs)-1].ev.Result; r.ErrorType != "Interrupted" {
		t.Fatalf("complete %+v", r)
	}
}

func TestShutdownLetsBuildsFinish(t *testing.T) {
	s := openTest(t, t.TempDir())
	started := make(chan string, 1)
	startWorker(t, s, "w1", &fakeBuilder{dir: t.TempDir(), gate: func(ctx context.Context, j *Job) error {
		started <- j.ID
		time.Sleep(300 * time.Millisecond)
		return nil
	}})
	j := submitArchive(t, s, "src")
	<-started
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if g, _ := s.Get(context.Background(), j.ID); g.Status != StatusSucceeded {
		t.Fatalf("job after graceful shutdown: %+v", g)
	}
}

// TestCrashRecovery closes the store mid-build without Shutdown (as a
// crash would leave it) and reopens the same data dir.
func TestCrashRecovery(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	done := &fakeBuilder{lines: 3, dir: t.TempDir()}
	stop := startWorker(t, s, "w0", done)
	finished := submitArchive(t, s, "finished")
	before := collect(t, s, finished.ID, 0)
	resultBefore := readResult(t, s, finished.ID)
	stop()

	building := make(chan string, 1)
	fetching := make(chan string, 1)
	block := func(ch chan string) func(ctx context.Context, j *Job) error {
		return func(ctx context.Context, j *Job) error {
			ch <- j.ID
			<-ctx.Done()
			return ctx.Err()
		}
	}
	startWorker(t, s, "w1", &fakeBuilder{dir: t.TempDir(), gate: block(building)})
	a := submitArchive(t, s, "A")
	<-building
	startWorker(t, s, "w2", &fakeBuilder{dir: t.TempDir(), gate: block(fetching), beforeDetect: true})
	b := submitArchive(t, s, "B")
	<-fetching
	c := submitArchive(t, s, "C") // waits in the queue
	waitFor(t, func() bool { g, _ := s.Get(context.Background(), a.ID); return g.Building })
	s.Close()

	s = openTest(t, dir)
	fb := &fakeBuilder{lines: 2, dir: t.TempDir()}
	startWorker(t, s, "w3", fb)
	// A was building when the store went down: it is built again.
	evA := collect(t, s, a.ID, 0)
	checkIndexes(t, evA, 0)
	if r := evA[len(evA)-1].ev.Result; r.Status != "ok" {
		t.Fatalf("A: complete %+v (%s)", r, types(evA))
	}
	if g, _ := s.Get(context.Background(), a.ID); g.Status != StatusSucceeded || g.Attempts != 2 {
		t.Fatalf("A: %+v", g)
	}
	evB := collect(t, s, b.ID, 0)
	checkIndexes(t, evB, 0)
	if r := evB[len(evB)-1].ev.Result; r.Status != "ok" {
		t.Fatalf("B: complete %+v (%s)", r, types(evB))
	}
	if g, _ := s.Get(context.Background(), b.ID); g.Attempts != 2 {
		t.Fatalf("B attempts %d", g.Attempts)
	}
	evC := collect(t, s, c.ID, 0)
	if r := evC[len(evC)-1].ev.Result; r.Status != "ok" {
		t.Fatalf("C: complete %+v", r)
	}
	after := collect(t, s, finished.ID, 0)
	if logJSON(after) != logJSON(before) {
		t.Fatalf("finished log changed:\n%v\n%v", before, after)
	}
	if !bytes.Equal(readResult(t, s, finished.ID), resultBefore) {
		t.Fatal("finished result changed across restart")
	}
	if string(readResult(t, s, b.ID)) != "result of "+b.ID+" nonce "+testNonceHex {
		t.Fatal("B result wrong")
	}
}

// TestTwoProcesses: a front end with the embedded server and no worker,
// and a worker that joins over the network with Connect.
func TestTwoProcesses(t *testing.T) {
	front := openTest(t, t.TempDir(), WithListen("127.0.0.1:0"))
	if front.URL() == "" {
		t.Fatal("no URL with WithListen")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	back, err := Connect(ctx, front.URL(), WithWorkerTTL(3*time.Second), WithTempDir(t.TempDir()), WithClientAuth(ClientAuth{CredsFile: front.CredsFile()}))
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if err := front.Ready(ctx); !errors.Is(err, ErrNotReady) {
		t.Fatalf("front Ready before a worker: %v", err)
	}
	startWorker(t, back, "remote", &fakeBuilder{lines: 2, dir: t.TempDir()})
	waitFor(t, func() bool { return front.Ready(ctx) == nil })
	j := submitArchive(t, front, "src")
	evs := collect(t, front, j.ID, 0)
	if r := evs[len(evs)-1].ev.Result; r.Status != "ok" {
		t.Fatalf("complete %+v", r)
	}
	if evs[1].ev.Msg != "worker remote took the job" {
		t.Fatalf("vm %q", evs[1].ev.Msg)
	}
	if string(readResult(t, front, j.ID)) != "result of "+j.ID+" nonce "+testNonceHex {
		t.Fatal("result wrong")
	}
}

func logJSON(evs []logged) string {
	var b strings.Builder
	for _, e := range evs {
		j, _ := e.ev.MarshalJSON()
		fmt.Fprintf(&b, "%d %s\n", e.idx, j)
	}
	return b.String()
}

// TestReenqueueLostWorkMessage: a front end died between recording a job
// and enqueueing it; the janitor puts it on the queue.
func TestReenqueueLostWorkMessage(t *testing.T) {
	s := openTest(t, t.TempDir())
	ctx := context.Background()
	j := &Job{ID: "6f1c2a54-9b1e-4c36-8f7e-1d2b3c4d5e6f", Status: StatusQueued, CreatedAt: time.Now().Add(-time.Minute).UTC(),
		Source: Source{URL: "https://example.com/x.git"}, Nonce: "01"}
	data, _ := json.Marshal(j)
	if _, err := s.jobs.Create(ctx, j.ID, data); err != nil {
		t.Fatal(err)
	}
	if _, err := s.appendEvent(ctx, newCursor(j.ID), events.Event{Type: events.Queued}, nil); err != nil {
		t.Fatal(err)
	}
	startWorker(t, s, "w1", &fakeBuilder{dir: t.TempDir()})
	evs := collect(t, s, j.ID, 0)
	if r := evs[len(evs)-1].ev.Result; r.Status != "ok" {
		t.Fatalf("complete %+v", r)
	}
}

func TestParallelWorkers(t *testing.T) {
	s := openTest(t, t.TempDir())
	var mu sync.Mutex
	running, peak := 0, 0
	fb := &fakeBuilder{dir: t.TempDir(), gate: func(ctx context.Context, j *Job) error {
		mu.Lock()
		running++
		if running > peak {
			peak = running
		}
		mu.Unlock()
		// Hold until three builds run at once (or give up and let the
		// peak check fail).
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			mu.Lock()
			p := peak
			mu.Unlock()
			if p >= 3 {
				break
			}
		}
		mu.Lock()
		running--
		mu.Unlock()
		return nil
	}}
	for i := 0; i < 3; i++ {
		startWorker(t, s, fmt.Sprint("w", i), fb)
	}
	var ids []string
	for i := 0; i < 6; i++ {
		ids = append(ids, submitArchive(t, s, fmt.Sprint(i)).ID)
	}
	for _, id := range ids {
		evs := collect(t, s, id, 0)
		if evs[len(evs)-1].ev.Result.Status != "ok" {
			t.Fatalf("job %s failed", id)
		}
	}
	if peak != 3 {
		t.Fatalf("peak parallel builds %d, want 3", peak)
	}
}

// TestQueueLimitIdleWorkers: with two idle workers and a limit of one,
// two quick submissions both run, a third waits, a fourth is refused.
func TestQueueLimitIdleWorkers(t *testing.T) {
	s := openTest(t, t.TempDir(), WithQueueLimit(1))
	release := make(chan struct{})
	gate := func(ctx context.Context, j *Job) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}
	startWorker(t, s, "w1", &fakeBuilder{dir: t.TempDir(), gate: gate})
	startWorker(t, s, "w2", &fakeBuilder{dir: t.TempDir(), gate: gate})
	waitFor(t, func() bool { a, _ := s.liveWorkers(context.Background()); return len(a) == 2 })
	a := submitArchive(t, s, "a")
	b := submitArchive(t, s, "b")
	for _, id := range []string{a.ID, b.ID} {
		waitFor(t, func() bool { g, _ := s.Get(context.Background(), id); return g.Status == StatusRunning })
	}
	c := submitArchive(t, s, "c")
	if c.Position != 0 {
		t.Fatalf("third job position %d", c.Position)
	}
	if _, err := s.Submit(context.Background(), Request{Nonce: []byte{1}, Source: Source{URL: "https://x/y"}}); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("fourth submit: %v", err)
	}
	close(release)
	collect(t, s, c.ID, 0)
}

// TestPresumedDeadWorker: a job recovered while its worker still runs (a
// stalled heartbeat, a partition) goes to a new attempt; the late worker's
// events after the recovery and its result are dropped, and the result of
// the retry is never overwritten.
func TestPresumedDeadWorker(t *testing.T) {
	s := openTest(t, t.TempDir())
	started, release := make(chan string, 2), make(chan struct{})
	late := &fakeBuilder{lines: 5, dir: t.TempDir(), gate: func(ctx context.Context, j *Job) error {
		started <- j.ID
		<-release // ignores cancellation: the slowest possible worker
		return nil
	}}
	startWorker(t, s, "slow", late)
	j := submitArchive(t, s, "src")
	<-started
	ctx := context.Background()
	waitFor(t, func() bool { g, _ := s.Get(ctx, j.ID); return g.Building })
	// The sink appends in the background: the recovery marker goes after
	// the late worker's `detect`, whose append may still be on its way.
	waitFor(t, func() bool { c := newCursor(j.ID); return s.load(ctx, c) == nil && c.next >= 4 })
	g, _ := s.Get(ctx, j.ID)
	if err := s.recover(ctx, g); err != nil {
		t.Fatal(err)
	}
	// The retry runs on a second worker while the late one still waits.
	fast := &fakeBuilder{lines: 2, dir: t.TempDir()}
	startWorker(t, s, "fast", fast)
	evs := collect(t, s, j.ID, 0)
	if r := evs[len(evs)-1].ev.Result; r.Status != "ok" {
		t.Fatalf("complete %+v (%s)", r, types(evs))
	}
	want := readResult(t, s, j.ID)
	close(release)
	waitFor(t, func() bool { return !s.buildingHere(j.ID) })
	// The late worker wrote nothing after the recovery marker.
	c := newCursor(j.ID)
	if err := s.load(ctx, c); err != nil || !c.last.Terminal() || c.next != len(evs) {
		t.Fatalf("log tail after the late worker: next %d (want %d), last %+v, %v", c.next, len(evs), c.last, err)
	}
	if types(evs) != "queued,vm,init,detect,vm,queued,vm,init,detect,build,build,build,provenance,complete" {
		t.Fatalf("log %s", types(evs))
	}
	if evs[6].ev.Msg != "worker slow lost; attempt 2 on fast" {
		t.Fatalf("retry event %q", evs[6].ev.Msg)
	}
	g, _ = s.Get(ctx, j.ID)
	if g.Status != StatusSucceeded || g.Worker != "fast" || g.Attempts != 2 {
		t.Fatalf("job %+v", g)
	}
	if got := readResult(t, s, j.ID); !bytes.Equal(got, want) {
		t.Fatalf("result changed after the late worker: %q vs %q", got, want)
	}
	if _, err := s.objs.GetInfo(ctx, attemptResultObject(j.ID, 1)); err == nil {
		t.Fatal("the late worker's result was stored")
	}
}

// TestWatchersJoiningTogether: watchers of several logs arrive at once
// (sharing hubs while they start), some give up immediately.
func TestWatchersJoiningTogether(t *testing.T) {
	s := openTest(t, t.TempDir())
	startWorker(t, s, "w1", &fakeBuilder{lines: 20, dir: t.TempDir()})
	var ids []string
	for i := 0; i < 4; i++ {
		ids = append(ids, submitArchive(t, s, fmt.Sprint(i)).ID)
	}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	var wg sync.WaitGroup
	counts := make([]int, 4*40)
	errs := make([]error, 4*40)
	for w := range counts {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			ctx := context.Background()
			if w%10 == 9 {
				ctx = canceled
			}
			errs[w] = s.Watch(ctx, ids[w%4], 0, func(int, events.Event) error { counts[w]++; return nil })
		}(w)
	}
	wg.Wait()
	for w := range counts {
		if w%10 == 9 {
			continue
		}
		// Queue positions vary with timing; the full log is the reference.
		if want := len(collect(t, s, ids[w%4], 0)); errs[w] != nil || counts[w] != want {
			t.Fatalf("watcher %d: %d events (want %d), %v", w, counts[w], want, errs[w])
		}
	}
	s.mu.Lock()
	n := len(s.hubs)
	s.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d hubs left after every watcher ended", n)
	}
}

// TestListedArtifacts: a job records at most MaxListedArtifacts artifacts
// (its record must stay small whatever a build leaves behind).
func TestListedArtifacts(t *testing.T) {
	many := make([]Artifact, MaxListedArtifacts+5)
	if got := listed(many); len(got) != MaxListedArtifacts {
		t.Fatalf("%d artifacts listed", len(got))
	}
	if got := listed(many[:3]); len(got) != 3 {
		t.Fatalf("%d artifacts listed, want 3", len(got))
	}
}
