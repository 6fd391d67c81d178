package jobs

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const crashEnv = "KETTLE_JOBS_CRASH_HELPER"

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashEnv); dir != "" {
		crashHelper(dir)
		return
	}
	os.Exit(m.Run())
}

type crashIDs struct {
	Finished, Building, Fetching, Queued string
	Result                               []byte
}

func block(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }

// crashHelper runs in a child process: it finishes one job, leaves one
// building, one taken but not yet building and one queued, reports their
// ids and waits to be killed with SIGKILL.
func crashHelper(dir string) {
	fail := func(err error) {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	ctx := context.Background()
	s, err := OpenEmbedded(ctx, filepath.Join(dir, "store"), WithWorkerTTL(3*time.Second), WithAckWait(3*time.Second))
	if err != nil {
		fail(err)
	}
	w1 := &fakeBuilder{lines: 3, dir: dir, gate: func(ctx context.Context, j *Job) error {
		if j.Nonce == "aa" {
			return block(ctx)
		}
		return nil
	}}
	go s.RunWorker(ctx, "w1", w1)
	submit := func(nonce byte) *Job {
		j, err := s.Submit(ctx, Request{Nonce: []byte{nonce}, Archive: strings.NewReader("src"), Source: Source{ArchiveName: "x.zip"}})
		if err != nil {
			fail(err)
		}
		return j
	}
	wait := func(id string, cond func(*Job) bool) {
		for {
			j, err := s.Get(ctx, id)
			if err != nil {
				fail(err)
			}
			if cond(j) {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	var ids crashIDs
	f := submit(0)
	ids.Finished = f.ID
	wait(f.ID, func(j *Job) bool { return j.Status == StatusSucceeded })
	r, _, err := s.Result(ctx, f.ID)
	if err != nil {
		fail(err)
	}
	var buf bytes.Buffer
	buf.ReadFrom(r)
	r.Close()
	ids.Result = buf.Bytes()
	a := submit(0xaa)
	ids.Building = a.ID
	wait(a.ID, func(j *Job) bool { return j.Building })
	go s.RunWorker(ctx, "w2", &fakeBuilder{dir: dir, beforeDetect: true, gate: func(ctx context.Context, j *Job) error { return block(ctx) }})
	b := submit(0xbb)
	ids.Fetching = b.ID
	wait(b.ID, func(j *Job) bool { return j.Status == StatusRunning })
	ids.Queued = submit(0xcc).ID
	out, _ := json.Marshal(ids)
	fmt.Println("READY", string(out))
	select {}
}

// TestKill9 kills a process holding the embedded store with SIGKILL in the
// middle of builds and reopens its data dir.
func TestKill9(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashEnv+"="+dir)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "READY ") {
		t.Fatalf("helper: %q %v", line, err)
	}
	var ids crashIDs
	if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "READY ")), &ids); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()

	s := openTest(t, filepath.Join(dir, "store"))
	startWorker(t, s, "w3", &fakeBuilder{lines: 2, dir: t.TempDir()})
	ctx := context.Background()

	// The job whose worker died mid-build is built again, and its log
	// keeps both attempts in order.
	evA := collect(t, s, ids.Building, 0)
	checkIndexes(t, evA, 0)
	if r := evA[len(evA)-1].ev.Result; r.Status != "ok" {
		t.Fatalf("building job: complete %+v (%s)", r, types(evA))
	}
	// vm: the 1-byte nonce note; then the loss, the new queue entry and
	// the second attempt.
	if !strings.HasPrefix(types(evA), "queued,vm,vm,init,detect,vm,queued,vm,vm,init,detect,build") {
		t.Fatalf("building job log %s", types(evA))
	}
	if m := evA[5].ev.Msg; m != "worker w1 lost; the job is queued again for attempt 2 of 3" {
		t.Errorf("loss event %q", m)
	}
	if m := evA[7].ev.Msg; m != "worker w1 lost; attempt 2 on w3" {
		t.Errorf("retry event %q", m)
	}
	if g, _ := s.Get(ctx, ids.Building); g.Attempts != 2 || g.Worker != "w3" || fmt.Sprint(g.LostWorkers) != "[w1]" {
		t.Fatalf("retried job: %+v", g)
	}
	for _, id := range []string{ids.Fetching, ids.Queued} {
		ev := collect(t, s, id, 0)
		checkIndexes(t, ev, 0)
		if r := ev[len(ev)-1].ev.Result; r.Status != "ok" {
			t.Fatalf("job %s: complete %+v (%s)", id, r, types(ev))
		}
	}
	if g, _ := s.Get(ctx, ids.Fetching); g.Attempts != 2 || g.Worker != "w3" {
		t.Fatalf("re-run job: %+v", g)
	}
	if got := readResult(t, s, ids.Finished); !bytes.Equal(got, ids.Result) {
		t.Fatalf("finished result changed: %q vs %q", got, ids.Result)
	}
	evF := collect(t, s, ids.Finished, 0)
	// vm twice: the 1-byte nonce gets a note
	if types(evF) != "queued,vm,vm,init,detect,build,build,build,build,provenance,complete" {
		t.Fatalf("finished log %s", types(evF))
	}
	// New builds work.
	j := submitArchive(t, s, "new")
	if ev := collect(t, s, j.ID, 0); ev[len(ev)-1].ev.Result.Status != "ok" {
		t.Fatal("new build after restart failed")
	}
}
