package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kettle-build/kettle/bench/harness"
	"github.com/kettle-build/kettle/internal/testenv"
)

// Upload spools live in <data-dir>/spool (API uploads while they arrive,
// workers' copies while they build), never in TMPDIR where a build could
// name them (finding cargo-artifact-dir-symlink-host-read, variant
// cargo-steal-spool). These tests run a real `kettle serve` with TMPDIR set
// to a directory of their own and check, on every path an upload can take,
// that the spool ends empty and TMPDIR stays empty.

type spoolServer struct {
	*harness.Server
	c     *harness.Client
	spool string
	tmp   string
}

func startSpoolServer(t *testing.T, args ...string) *spoolServer {
	t.Helper()
	data := filepath.Join(harness.DataDir(t), "data")
	tmp := filepath.Join(t.TempDir(), "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	base := []string{"--attester", "insecure", "--sandbox", sandboxMode(), "--allow-local-repos",
		"--allow-private-networks", "--log-format", "json", "--shutdown-timeout", "2s"}
	s, c := harness.StartTest(t, harness.Config{Bin: kettleBin, DataDir: data, Args: append(base, args...),
		Env: []string{"TMPDIR=" + tmp}}, true)
	return &spoolServer{Server: s, c: c, spool: filepath.Join(data, "spool"), tmp: tmp}
}

// entries lists dir ("" entries when it does not exist).
func entries(dir string) []string {
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// waitEntries waits up to 15 s for dir to hold something (want) or nothing.
func waitEntries(t *testing.T, dir string, want bool) []string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := entries(dir)
		if (len(got) > 0) == want {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: entries %v after 15 s (want non-empty: %v)", filepath.Base(dir), got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM, waits for the server to exit and checks that neither
// the spool nor TMPDIR holds anything of it.
func (s *spoolServer) stop(t *testing.T) {
	t.Helper()
	if err := s.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if exited, _ := s.Wait(time.Minute); !exited {
		t.Fatal("server did not exit within a minute of SIGTERM")
	}
	if got := entries(s.spool); len(got) != 0 {
		t.Errorf("spool after shutdown: %v", got)
	}
	if got := entries(s.tmp); len(got) != 0 {
		t.Errorf("TMPDIR after shutdown: %v", got)
	}
}

// partialUpload opens a POST /build that announces a large body, sends a
// first part of an archive and returns the connection, still open.
func partialUpload(t *testing.T, s *spoolServer, multipart bool) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("x"), 512<<10)
	ct, head := "application/json", `{"nonce":"`+harness.NewNonce()+`","source_name":"a.tar.gz","source_data":"H4sI`+base64.StdEncoding.EncodeToString(chunk)
	if multipart {
		ct = "multipart/form-data; boundary=X"
		head = "--X\r\nContent-Disposition: form-data; name=\"source\"; filename=\"a.tar.gz\"\r\n\r\n\x1f\x8b" + string(chunk)
	}
	if _, err := fmt.Fprintf(conn, "POST /build HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s", ct, 64<<20, head); err != nil {
		t.Fatal(err)
	}
	return conn
}

// TestSpoolAbandonedUpload: a client that hangs up mid-upload leaves
// nothing behind (JSON and multipart).
func TestSpoolAbandonedUpload(t *testing.T) {
	s := startSpoolServer(t)
	for _, mp := range []bool{false, true} {
		conn := partialUpload(t, s, mp)
		// The upload is being spooled in the data dir, not in TMPDIR.
		got := waitEntries(t, s.spool, true)
		if len(got) != 1 || !strings.HasPrefix(got[0], "upload-") {
			t.Errorf("spool during the upload: %v", got)
		}
		if st, err := os.Stat(s.spool); err != nil || st.Mode().Perm() != 0o700 {
			t.Errorf("spool dir: %v %v", st, err)
		}
		if got := entries(s.tmp); len(got) != 0 {
			t.Errorf("TMPDIR during the upload: %v", got)
		}
		conn.Close()
		waitEntries(t, s.spool, false)
	}
	s.stop(t)
}

// TestSpoolRefusedUploads: an upload over --max-upload (413) and one that
// stalls past the server's patience or is cut by a malformed body leave
// nothing behind.
func TestSpoolRefusedUploads(t *testing.T) {
	s := startSpoolServer(t, "--max-upload", "1MiB")
	// 413 while streaming: the archive is 2 MiB.
	body := harness.Base64JSONBody(harness.NewNonce(), "big.tar.gz",
		io.MultiReader(bytes.NewReader([]byte{0x1f, 0x8b}), io.LimitReader(zeroNoise{}, 2<<20)))
	// The client answers an error status with an error naming it.
	if _, err := s.c.SubmitRaw(context.Background(), "application/json", body); err == nil || !strings.Contains(err.Error(), "HTTP 413") {
		t.Errorf("oversized upload: %v, want HTTP 413", err)
	}
	// A body that ends inside source_data (400).
	conn, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	part := `{"nonce":"` + harness.NewNonce() + `","source_data":"H4sIAAAA`
	fmt.Fprintf(conn, "POST /build HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(part), part)
	r, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	conn.Close()
	if r.StatusCode != http.StatusBadRequest {
		t.Errorf("truncated body: status %d", r.StatusCode)
	}
	waitEntries(t, s.spool, false)
	s.stop(t)
}

// TestSpoolAfterBuilds: a worker's copy of an uploaded source sits in the
// spool while it builds and is gone afterwards, after a failed build and
// after an honest one.
func TestSpoolAfterBuilds(t *testing.T) {
	testenv.NeedTool(t, "cargo")
	s := startSpoolServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// A source with no lockfile fails (UnsupportedToolchain).
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.MkdirAll(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(empty, "README"), []byte("no lockfile\n"), 0o644)
	id, err := s.c.SubmitArchive(ctx, harness.Targz(t, empty, "empty"), "empty.tar.gz", harness.NewNonce())
	if err != nil {
		t.Fatal(err)
	}
	evs, err := s.c.Wait(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if res, _ := harness.ParseComplete(evs[len(evs)-1]); res.Status != "failed" || res.ErrorType != "UnsupportedToolchain" {
		t.Errorf("failed build: %+v", res)
	}
	if got := entries(s.spool); len(got) != 0 {
		t.Errorf("spool after a failed build: %v", got)
	}

	// An honest build that takes a few seconds: its source is spooled as
	// source-* in the data dir while it runs.
	work := filepath.Join(t.TempDir(), "slow")
	project(t, work, "slow", 3*time.Second)
	id, err = s.c.SubmitArchive(ctx, harness.Targz(t, work, "slow"), "slow.tar.gz", harness.NewNonce())
	if err != nil {
		t.Fatal(err)
	}
	got := waitEntries(t, s.spool, true)
	if len(got) != 1 || !strings.HasPrefix(got[0], "source-") {
		t.Errorf("spool during the build: %v", got)
	}
	if got := entries(s.tmp); len(got) != 0 {
		t.Errorf("TMPDIR during the build: %v", got)
	}
	if st, err := os.Stat(filepath.Join(s.spool, got[0])); err == nil && st.Mode().Perm() != 0o600 {
		t.Errorf("spooled source mode %v", st.Mode().Perm())
	}
	evs, err = s.c.Wait(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if res, _ := harness.ParseComplete(evs[len(evs)-1]); res.Status != "ok" {
		t.Fatalf("honest build: %+v\n%s", res, eventLog(evs))
	}
	if got := entries(s.spool); len(got) != 0 {
		t.Errorf("spool after a build: %v", got)
	}
	s.stop(t)
}

// TestSpoolShutdownMidUpload: SIGTERM while an upload is still arriving;
// the server stops within its shutdown timeout and the partial upload is
// gone.
func TestSpoolShutdownMidUpload(t *testing.T) {
	s := startSpoolServer(t)
	conn := partialUpload(t, s, false)
	defer conn.Close()
	waitEntries(t, s.spool, true)
	s.stop(t)
}
