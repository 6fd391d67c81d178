package main

import (
	"archive/zip"
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/kettle-build/kettle/events"
	"github.com/kettle-build/kettle/jobs"
)

// TestWorkerOnce: `kettle worker --nats URL --once` joins a store over the
// network, takes one job, reports its outcome and exits 0.
func TestWorkerOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := jobs.OpenEmbedded(ctx, t.TempDir(), jobs.WithListen("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// A project with no known lockfile: the build fails fast.
	var zbuf bytes.Buffer
	zw := zip.NewWriter(&zbuf)
	w, _ := zw.Create("proj/README")
	w.Write([]byte("nothing to build\n"))
	zw.Close()
	j, err := s.Submit(ctx, jobs.Request{Nonce: []byte{1}, Archive: &zbuf, Source: jobs.Source{ArchiveName: "proj.zip"}})
	if err != nil {
		t.Fatal(err)
	}
	code := runWorkerCmd(ctx, []string{"--nats", s.URL(), "--nats-creds", s.CredsFile(), "--once", "--name", "cvm-1",
		"--sandbox", "none", "--attester", "insecure", "--work-dir", t.TempDir()})
	if code != exitOK {
		t.Fatalf("exit %d", code)
	}
	var last events.Event
	var vm string
	if err := s.Watch(ctx, j.ID, 0, func(i int, ev events.Event) error {
		if ev.Type == events.VM && vm == "" {
			vm = ev.Msg
		}
		last = ev
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if vm != "worker cvm-1 took the job" {
		t.Fatalf("vm event %q", vm)
	}
	if last.Result == nil || last.Result.ErrorType != "UnsupportedToolchain" {
		t.Fatalf("complete %+v", last.Result)
	}
	if code := runWorkerCmd(ctx, []string{"--once"}); code != exitBadArgs {
		t.Fatalf("without --nats: exit %d", code)
	}
}
