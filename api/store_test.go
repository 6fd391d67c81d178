package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kettle-build/kettle/events"
	"github.com/kettle-build/kettle/jobs"
)

// lineBuilder emits n build events once start is closed.
type lineBuilder struct {
	n     int
	start chan struct{}
	dir   string
}

func (b *lineBuilder) Build(ctx context.Context, job *jobs.Job, sink events.Sink) (*jobs.Outcome, error) {
	select {
	case <-b.start:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	for i := 0; i < b.n; i++ {
		sink.Emit(events.Msgf(events.Build, "line %d %s", i, strings.Repeat("y", 100)))
		if i%50 == 0 {
			time.Sleep(time.Millisecond) // a live stream, not one burst
		}
	}
	p := filepath.Join(b.dir, job.ID+".tar.gz")
	if err := os.WriteFile(p, []byte("\x1f\x8bresult"), 0o644); err != nil {
		return nil, err
	}
	return &jobs.Outcome{ResultPath: p, ResultName: "lines", Toolchain: "cargo"}, nil
}

// TestWatchersRealStore: many SSE watchers and a slow one on the real
// JetStream store all get every event exactly once, in order, while the
// log is written live.
func TestWatchersRealStore(t *testing.T) {
	dir := t.TempDir()
	logger := slog.New(slog.DiscardHandler)
	store, err := jobs.OpenEmbedded(context.Background(), filepath.Join(dir, "store"), jobs.WithLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	const watchers, lines = 100, 300
	b := &lineBuilder{n: lines, start: make(chan struct{}), dir: dir}
	wctx, stop := context.WithCancel(context.Background())
	defer stop()
	go store.RunWorker(wctx, "t", b)
	srv := httptest.NewServer(New(store, WithLogger(logger), WithSpoolDir(dir)))
	defer srv.Close()

	body := `{"nonce":"01","source_data":"` + base64.StdEncoding.EncodeToString([]byte("\x1f\x8b\x08\x00src")) + `"}`
	resp, err := http.Post(srv.URL+"/build", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		JobID string `json:"job_id"`
	}
	json.NewDecoder(resp.Body).Decode(&v)
	resp.Body.Close()
	if v.JobID == "" {
		t.Fatal("no job id")
	}

	var connected, fast, slow sync.WaitGroup
	errs := make(chan error, watchers+1)
	fastDone := make(chan struct{})
	logs := make([][]sseEvent, watchers+1)
	for w := 0; w <= watchers; w++ {
		wg := &fast
		if w == watchers {
			wg = &slow
		}
		connected.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(srv.URL + "/build/" + v.JobID + "/events")
			if err != nil {
				connected.Done()
				errs <- err
				return
			}
			defer resp.Body.Close()
			var r io.Reader = resp.Body
			if w == watchers {
				r = &slowReader{r: resp.Body, wait: fastDone}
			}
			connected.Done()
			logs[w], _ = readSSE(t, r)
		}()
	}
	connected.Wait()
	close(b.start)
	// The fast watchers finish while the slow one still trickles.
	fastWait := make(chan struct{})
	go func() { fast.Wait(); close(fastWait) }()
	select {
	case <-fastWait:
	case <-time.After(60 * time.Second):
		t.Error("fast watchers held up")
	}
	close(fastDone)
	slow.Wait()
	<-fastWait
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	want := len(logs[0])
	if want < lines+3 {
		t.Fatalf("watcher 0 got %d events, want ≥ %d", want, lines+3)
	}
	for w, evs := range logs {
		if len(evs) != want {
			t.Fatalf("watcher %d got %d events, watcher 0 %d", w, len(evs), want)
		}
		for i, e := range evs {
			if e.id != i || e.data != logs[0][i].data {
				t.Fatalf("watcher %d event %d: id %d %s", w, i, e.id, e.data)
			}
		}
		if !strings.HasPrefix(evs[len(evs)-1].data, `{"type":"complete"`) {
			t.Fatalf("watcher %d: last event %s", w, evs[len(evs)-1].data)
		}
	}
	for i := 0; i < lines; i++ {
		found := false
		for _, e := range logs[0] {
			if strings.Contains(e.data, fmt.Sprintf(`"line %d y`, i)) {
				found = true
				break
			}
		}
		if !found {
			t.Fatalf("line %d missing", i)
		}
	}
}
