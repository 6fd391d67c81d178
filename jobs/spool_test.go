package jobs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kettle-build/kettle/events"
	"github.com/kettle-build/kettle/failure"
)

// spoolWatcher is a Builder that records where and how the uploaded source
// was spooled, then succeeds, fails or panics.
type spoolWatcher struct {
	mu      sync.Mutex
	paths   []string
	modes   []os.FileMode
	dirMode os.FileMode
	outcome string // "ok", "fail", "panic"
	dir     string
}

func (w *spoolWatcher) Build(ctx context.Context, j *Job, sink events.Sink) (*Outcome, error) {
	st, err := os.Stat(j.Source.ArchivePath)
	if err != nil {
		return nil, err
	}
	dst, err := os.Stat(filepath.Dir(j.Source.ArchivePath))
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	w.paths = append(w.paths, j.Source.ArchivePath)
	w.modes = append(w.modes, st.Mode().Perm())
	w.dirMode = dst.Mode().Perm()
	w.mu.Unlock()
	switch w.outcome {
	case "fail":
		return &Outcome{Toolchain: "cargo"}, failure.New(failure.BuildFailed, "build failed")
	case "panic":
		panic("builder bug")
	}
	p := filepath.Join(w.dir, j.ID+".tar.gz")
	if err := os.WriteFile(p, []byte("result"), 0o600); err != nil {
		return nil, err
	}
	return &Outcome{ResultPath: p, ResultName: "demo", Toolchain: "cargo"}, nil
}

// TestSpoolRemovedOnEveryOutcome: an uploaded source is spooled into the
// store's private spool dir inside its data dir (0700 dir, 0600 file) for its build
// and removed afterwards whether the build succeeded, failed or panicked.
func TestSpoolRemovedOnEveryOutcome(t *testing.T) {
	for _, outcome := range []string{"ok", "fail", "panic"} {
		t.Run(outcome, func(t *testing.T) {
			dir := t.TempDir()
			s := openTest(t, dir)
			w := &spoolWatcher{outcome: outcome, dir: t.TempDir()}
			startWorker(t, s, "w", w)
			j := submitArchive(t, s, "source of "+outcome)
			evs := collect(t, s, j.ID, 0)
			res := evs[len(evs)-1].ev.Result
			if want := map[string]string{"ok": "ok", "fail": "failed", "panic": "failed"}[outcome]; res == nil || res.Status != want {
				t.Fatalf("complete %+v, want %s", res, want)
			}
			spool := filepath.Join(dir, "spool")
			w.mu.Lock()
			defer w.mu.Unlock()
			if len(w.paths) != 1 || filepath.Dir(w.paths[0]) != spool {
				t.Fatalf("spooled at %v, want inside %s", w.paths, spool)
			}
			if w.modes[0] != 0o600 || w.dirMode != 0o700 {
				t.Errorf("file mode %v, dir mode %v; want 0600 and 0700", w.modes[0], w.dirMode)
			}
			// The outcome is recorded after the cleanup: nothing is left.
			if ents, err := os.ReadDir(spool); err != nil || len(ents) != 0 {
				t.Errorf("spool dir after the build: %v %v", ents, err)
			}
		})
	}
}

// TestSpoolSweptOnOpen: a spooled source left by a killed process is
// removed when the store opens again.
func TestSpoolSweptOnOpen(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	s.Close()
	stale := filepath.Join(dir, "spool", "source-123")
	if err := os.MkdirAll(filepath.Dir(stale), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stale, []byte("someone's source"), 0o600); err != nil {
		t.Fatal(err)
	}
	openTest(t, dir)
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale spool file still there: %v", err)
	}
}

// TestConnectWorkerNeedsSpool: a worker over Connect has no data dir, so no
// default spool; it refuses to run rather than fall back to TMPDIR.
func TestConnectWorkerNeedsSpool(t *testing.T) {
	front := openTest(t, t.TempDir(), WithListen("127.0.0.1:0"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	back, err := Connect(ctx, front.URL(), WithClientAuth(ClientAuth{CredsFile: front.CredsFile()}))
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	err = back.RunWorker(ctx, "w", &spoolWatcher{dir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "spool") {
		t.Fatalf("RunWorker without a spool dir: %v", err)
	}
}
