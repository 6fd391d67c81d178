package jobs

import (
	"context"
	"testing"
)

// TestToolchainIsJobState: the detect event's typed Toolchain field becomes
// job state while the job runs (no message is parsed for it), and the
// stored detect event is the peer's form, without the field.
func TestToolchainIsJobState(t *testing.T) {
	s := openTest(t, t.TempDir())
	started := make(chan struct{})
	release := make(chan struct{})
	startWorker(t, s, "w1", &fakeBuilder{dir: t.TempDir(), gate: func(ctx context.Context, j *Job) error {
		close(started)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}})
	j := submitArchive(t, s, "src")
	<-started
	ctx := context.Background()
	waitFor(t, func() bool { g, _ := s.Get(ctx, j.ID); return g.Building })
	g, err := s.Get(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if g.Status != StatusRunning || g.Toolchain != "cargo" {
		t.Fatalf("running job: status %s toolchain %q", g.Status, g.Toolchain)
	}
	close(release)
	for _, e := range collect(t, s, j.ID, 0) {
		if e.ev.Toolchain != "" {
			t.Errorf("event %d read back with toolchain %q: it is not part of the stored form", e.idx, e.ev.Toolchain)
		}
	}
}
