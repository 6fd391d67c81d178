package worker

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kettle-build/kettle/attest"
	"github.com/kettle-build/kettle/events"
	"github.com/kettle-build/kettle/internal/testenv"
	"github.com/kettle-build/kettle/jobs"
	"github.com/kettle-build/kettle/sandbox"
)

// TestThroughStore submits an archive to a real embedded job store whose
// worker is this package's Builder, follows the log and downloads the
// result, as `kettle serve` does.
func TestThroughStore(t *testing.T) {
	home, _ := os.UserHomeDir()
	t.Setenv("PATH", os.Getenv("PATH")+":"+filepath.Join(home, ".cargo", "bin"))
	testenv.NeedTool(t, "cargo")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := jobs.OpenEmbedded(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	att, err := attest.New(ctx, "insecure")
	if err != nil {
		t.Fatal(err)
	}
	b := New(Config{WorkDir: t.TempDir(), Runner: sandbox.NewNone(), Attester: att})
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.RunWorker(wctx, "w1", b) }()
	defer func() { stop(); <-done }()

	archive := filepath.Join(t.TempDir(), "ws.tar.gz")
	tarDir(t, filepath.Join("..", "testdata", "projects", "cargo-workspace"), "cargo-workspace", archive)
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	j, err := s.Submit(ctx, jobs.Request{Nonce: []byte("0123456789abcdef"), Archive: f, Source: jobs.Source{ArchiveName: "ws.tar.gz"}})
	if err != nil {
		t.Fatal(err)
	}
	var seen []events.Type
	var last events.Event
	if err := s.Watch(ctx, j.ID, 0, func(i int, ev events.Event) error {
		if len(seen) == 0 || seen[len(seen)-1] != ev.Type {
			seen = append(seen, ev.Type)
		}
		last = ev
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if last.Result == nil || last.Result.Status != "ok" {
		t.Fatalf("build failed: %+v (%v)", last.Result, seen)
	}
	want := []events.Type{events.Queued, events.VM, events.Init, events.Detect, events.Build, events.Provenance, events.Attest, events.Complete}
	if len(seen) != len(want) {
		t.Fatalf("event kinds %v, want %v", seen, want)
	}
	for i := range want {
		if seen[i] != want[i] {
			t.Fatalf("event kinds %v, want %v", seen, want)
		}
	}
	r, got, err := s.Result(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got.ResultName != "cargo-workspace" || got.Toolchain != "cargo" {
		t.Fatalf("job %+v", got)
	}
	tmp := filepath.Join(t.TempDir(), "r.tar.gz")
	out, _ := os.Create(tmp)
	if _, err := out.ReadFrom(r); err != nil {
		t.Fatal(err)
	}
	out.Close()
	checkBundle(t, &jobs.Outcome{ResultPath: tmp}, "cargo-workspace", []string{"provenance.json", "manifest.json", "evidence.json", "build-config/Cargo.lock"})
}
