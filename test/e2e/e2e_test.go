// Package e2e starts real `kettle serve` processes and talks to them over
// HTTP (issue 5): every route and rule of docs/api.md in order, whole builds from
// a loopback git server and from uploads verified with `kettle verify`,
// restarts after kill -9, limits, shutdown and retention.
package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kettle-build/kettle/attest"
	"github.com/kettle-build/kettle/bench/harness"
	"github.com/kettle-build/kettle/internal/testenv"
)

func post(t *testing.T, c *harness.Client, path, ct, body string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", c.URL+path, strings.NewReader(body))
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func get(t *testing.T, c *harness.Client, path string) (int, http.Header, string) {
	t.Helper()
	resp, err := http.Get(c.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// plainError checks docs/api.md's error form: status, text/plain, one line, no
// server path.
func plainError(t *testing.T, code int, h http.Header, body string, wantCode int, want, dataDir string) {
	t.Helper()
	if code != wantCode {
		t.Errorf("status %d, want %d (body %q)", code, wantCode, body)
		return
	}
	if !strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
		t.Errorf("Content-Type %q for %d", h.Get("Content-Type"), code)
	}
	if strings.Count(strings.TrimRight(body, "\n"), "\n") > 0 {
		t.Errorf("error body is not one line: %q", body)
	}
	if !strings.Contains(body, want) {
		t.Errorf("body %q lacks %q", body, want)
	}
	if dataDir != "" && strings.Contains(body, dataDir) || strings.Contains(body, os.TempDir()+"/") {
		t.Errorf("body leaks a server path: %q", body)
	}
}

// TestRoutes walks every route and POST /build's validation rules in docs/api.md
// order against a real process.
func TestRoutes(t *testing.T) {
	s, c := server(t, "", "--max-upload", "1MiB")
	harness.WaitReady(t, c)
	dd := s.DataDir

	code, h, body := get(t, c, "/health")
	if code != 200 || body != "ok" || !strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /health = %d %q", code, body)
	}
	if code, _, _ := get(t, c, "/ready"); code != 200 {
		t.Fatalf("GET /ready = %d", code)
	}

	nonce := harness.NewNonce()
	big := make([]byte, 1<<20+1)
	copy(big, "PK\x03\x04")
	for _, tc := range []struct {
		name, ct, body string
		code           int
		want           string
	}{
		{"content type", "text/plain", `{"nonce":"` + nonce + `","repo_url":"https://example.com/x.git"}`, 415, ""},
		{"no content type", "", `{}`, 415, ""},
		{"malformed JSON", "application/json", `{"nonce":`, 400, ""},
		{"wrong field type", "application/json", `{"nonce":7,"repo_url":"https://example.com/x.git"}`, 400, "nonce"},
		{"too large", "application/json", `{"nonce":"` + nonce + `","source_data":"` + base64.StdEncoding.EncodeToString(big) + `"}`, 413, ""},
		{"nonce hex", "application/json", `{"nonce":"xyz","repo_url":"https://example.com/x.git"}`, 400, "invalid nonce hex: "},
		{"nonce long", "application/json", `{"nonce":"` + strings.Repeat("ab", 17) + `","repo_url":"https://example.com/x.git"}`, 400, "nonce must be 1-16 bytes"},
		{"nonce empty", "application/json", `{"nonce":"","repo_url":"https://example.com/x.git"}`, 400, "nonce must be 1-16 bytes"},
		{"nonce missing", "application/json", `{"repo_url":"https://example.com/x.git"}`, 400, "nonce"},
		{"neither source", "application/json", `{"nonce":"` + nonce + `"}`, 400, "exactly one of repo_url or source_data is required"},
		{"both sources", "application/json", `{"nonce":"` + nonce + `","repo_url":"https://example.com/x.git","source_data":"UEsDBA=="}`, 400, "exactly one of repo_url or source_data is required"},
		{"ext transport", "application/json", `{"nonce":"` + nonce + `","repo_url":"ext::sh -c touch% /tmp/pwned"}`, 400, ""},
		{"ssh", "application/json", `{"nonce":"` + nonce + `","repo_url":"ssh://git@example.com/x.git"}`, 400, ""},
		{"option ref", "application/json", `{"nonce":"` + nonce + `","repo_url":"https://example.com/x.git","repo_ref":"--upload-pack=evil"}`, 400, ""},
		{"dotdot ref", "application/json", `{"nonce":"` + nonce + `","repo_url":"https://example.com/x.git","repo_ref":"a/../b"}`, 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, h, body := post(t, c, "/build", tc.ct, tc.body)
			plainError(t, code, h, body, tc.code, tc.want, dd)
		})
	}

	// Unknown ids on every GET route.
	unknown := "6ba7b810-9dad-41d1-80b4-00c04fd430c8"
	for _, p := range []string{"/build/" + unknown, "/build/" + unknown + "/events", "/build/" + unknown + "/result", "/build/not-a-uuid/events"} {
		code, h, body := get(t, c, p)
		plainError(t, code, h, body, 404, "", dd)
	}

	// A real accepted job: 200 {"job_id": uuid v4}.
	code, h, body = post(t, c, "/build", "application/json; charset=utf-8",
		`{"nonce":"`+nonce+`","repo_url":"http://127.0.0.1:1/nothing.git","unknown_field":true}`)
	if code != 200 || !strings.HasPrefix(h.Get("Content-Type"), "application/json") {
		t.Fatalf("accepted submit = %d %q", code, body)
	}
	var v struct {
		JobID string `json:"job_id"`
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil || len(v.JobID) != 36 || v.JobID[14] != '4' {
		t.Fatalf("job_id: %q", body)
	}
	evs, err := c.Wait(context.Background(), v.JobID)
	if err != nil {
		t.Fatal(err)
	}
	res, _ := harness.ParseComplete(evs[len(evs)-1])
	if res.Status != "failed" || res.ErrorType != "InvalidSource" || strings.Contains(res.Error, dd) {
		t.Errorf("clone of a dead URL: %+v", res)
	}
	code, _, body = get(t, c, "/build/"+v.JobID)
	var st map[string]any
	if code != 200 || json.Unmarshal([]byte(body), &st) != nil || st["status"] != "failed" || st["error_type"] != "InvalidSource" {
		t.Errorf("status: %d %s", code, body)
	}
	code, h, body = get(t, c, "/build/"+v.JobID+"/result")
	plainError(t, code, h, body, 404, "failed", dd)

	code, _, body = get(t, c, "/metrics")
	for _, m := range []string{"kettle_builds_total", "kettle_build_duration_seconds", "kettle_queue_wait_seconds",
		"kettle_queue_depth", "kettle_sse_watchers", "kettle_upload_bytes_total"} {
		if code != 200 || !strings.Contains(body, m) {
			t.Errorf("metrics lack %s", m)
		}
	}
}

// checkEvents asserts the SSE contract on a finished log: ids 0…n-1, queued
// first, complete last and only there.
func checkEvents(t *testing.T, evs []harness.Event) {
	t.Helper()
	for i, e := range evs {
		if e.ID != i {
			t.Fatalf("event %d has id %d:\n%s", i, e.ID, eventLog(evs))
		}
		if (e.Type == "complete") != (i == len(evs)-1) {
			t.Fatalf("complete at %d of %d", i, len(evs))
		}
	}
	if evs[0].Type != "queued" {
		t.Errorf("first event %s", evs[0].Data)
	}
}

func hasEvent(evs []harness.Event, typ, substr string) bool {
	for _, e := range evs {
		if e.Type == typ && strings.Contains(e.Data, substr) {
			return true
		}
	}
	return false
}

// TestBuildEndToEnd: git branch, tag, commit and an upload, all built,
// downloaded and verified with `kettle verify --nonce … --allow-insecure`.
func TestBuildEndToEnd(t *testing.T) {
	repo := serveRepo(t, "hello", 0)
	s, c := server(t, "")
	harness.WaitReady(t, c)

	srcDir := filepath.Join(t.TempDir(), "up")
	project(t, srcDir, "upload", 0)
	archive := harness.Targz(t, srcDir, "upload")

	for _, tc := range []struct {
		name string
		req  harness.BuildRequest
		top  string
	}{
		{"branch", harness.BuildRequest{RepoURL: repo.URL, RepoRef: "main"}, "hello"},
		{"tag", harness.BuildRequest{RepoURL: repo.URL, RepoRef: "v1"}, "hello"},
		{"commit", harness.BuildRequest{RepoURL: repo.URL, RepoRef: repo.Old}, "hello"},
		{"default HEAD", harness.BuildRequest{RepoURL: repo.URL}, "hello"},
		{"source_data", harness.BuildRequest{SourceData: base64.StdEncoding.EncodeToString(archive), SourceName: "upload.tar.gz"}, "upload"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nonce := harness.NewNonce()
			tc.req.Nonce = nonce
			id, evs, res := buildAndWait(t, c, tc.req)
			if res.Status != "ok" {
				t.Fatalf("build failed: %+v\n%s", res, eventLog(evs))
			}
			checkEvents(t, evs)
			for _, typ := range []string{"init", "detect", "build", "provenance", "attest"} {
				if !hasEvent(evs, typ, "") {
					t.Errorf("no %s event:\n%s", typ, eventLog(evs))
				}
			}
			if !hasEvent(evs, "detect", "Cargo") {
				t.Errorf("no Cargo detection")
			}
			tarball, h := download(t, c, id)
			if h.Get("Content-Type") != "application/gzip" || h.Get("Content-Length") != strconv.Itoa(len(tarball)) ||
				!strings.Contains(h.Get("Content-Disposition"), tc.top+".tar.gz") {
				t.Errorf("result headers %v", h)
			}
			again, _ := download(t, c, id)
			if !bytes.Equal(tarball, again) {
				t.Error("two downloads differ")
			}
			st, err := c.Status(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(tarball)
			if st["status"] != "succeeded" || st["result_sha256"] != hex.EncodeToString(sum[:]) || st["toolchain"] != "cargo" {
				t.Errorf("status %v", st)
			}
			dir := extract(t, tarball)
			if filepath.Base(dir) != tc.top {
				t.Errorf("top dir %q, want %q", filepath.Base(dir), tc.top)
			}
			for _, f := range []string{"provenance.json", "evidence.json", "manifest.json", "build-config/Cargo.lock"} {
				if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
					t.Errorf("result lacks %s", f)
				}
			}
			kettleVerify(t, dir, "--nonce", nonce, "--allow-insecure")
			// A different nonce must not verify.
			if out, err := exec.Command(kettleBin, "verify", "--nonce", harness.NewNonce(), "--allow-insecure", dir).CombinedOutput(); err == nil {
				t.Errorf("verify passed with a wrong nonce:\n%s", out)
			}
			if tc.name == "commit" {
				if b, _ := os.ReadFile(filepath.Join(dir, "provenance.json")); !bytes.Contains(b, []byte(repo.Old)) {
					t.Errorf("provenance does not name commit %s", repo.Old)
				}
			}
		})
	}
	_ = s
}

// TestEventsResume: from=N, Last-Event-ID and replay after the end give
// exactly the same log.
func TestEventsResume(t *testing.T) {
	repo := serveRepo(t, "resume", 0)
	_, c := server(t, "")
	harness.WaitReady(t, c)
	id, evs, res := buildAndWait(t, c, harness.BuildRequest{Nonce: harness.NewNonce(), RepoURL: repo.URL})
	if res.Status != "ok" {
		t.Fatalf("%+v", res)
	}
	replay, err := c.Wait(context.Background(), id)
	if err != nil || eventLog(replay) != eventLog(evs) {
		t.Fatalf("replay differs (%v):\n%s\n---\n%s", err, eventLog(evs), eventLog(replay))
	}
	n := len(evs) / 2
	var got []harness.Event
	if err := c.Events(context.Background(), id, n, func(e harness.Event) error { got = append(got, e); return nil }); err != nil {
		t.Fatal(err)
	}
	if eventLog(got) != eventLog(evs[n:]) {
		t.Fatalf("from=%d:\n%s", n, eventLog(got))
	}
	req, _ := http.NewRequest("GET", c.URL+"/build/"+id+"/events", nil)
	req.Header.Set("Last-Event-ID", strconv.Itoa(n))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got = nil
	harness.ReadSSE(resp.Body, nil, func(e harness.Event) error { got = append(got, e); return nil })
	resp.Body.Close()
	if eventLog(got) != eventLog(evs[n+1:]) {
		t.Fatalf("Last-Event-ID %d:\n%s", n, eventLog(got))
	}
}

// TestQuickStartCurl runs the seed Quick Start verbatim with real curl, and
// the older /build/stream API.
func TestQuickStartCurl(t *testing.T) {
	curl := testenv.NeedTool(t, "curl")
	testenv.NeedTool(t, "zip")
	repo := serveRepo(t, "quick", 0)
	_, c := server(t, "")
	harness.WaitReady(t, c)
	dir := t.TempDir()
	cmd := exec.Command(curl, "-sS", "-f", "-F", "repo_url="+repo.URL, "-F", "ref=main", "-o", "build.tar.gz", c.URL+"/build")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	tarball, err := os.ReadFile(filepath.Join(dir, "build.tar.gz"))
	if err != nil {
		t.Fatal(err)
	}
	top := extract(t, tarball)
	if filepath.Base(top) != "quick" {
		t.Errorf("top %q", top)
	}
	kettleVerify(t, top, "--allow-insecure")

	// A failed synchronous build answers 400 (unsupported toolchain) as text.
	empty := filepath.Join(t.TempDir(), "empty")
	os.MkdirAll(empty, 0o755)
	os.WriteFile(filepath.Join(empty, "README"), []byte("no lockfile here\n"), 0o644)
	zipPath := filepath.Join(t.TempDir(), "empty.zip")
	if out, err := exec.Command("sh", "-c", "cd "+empty+" && zip -q -r "+zipPath+" .").CombinedOutput(); err != nil {
		t.Fatalf("zip: %v %s", err, out)
	}
	out, _ := exec.Command(curl, "-sS", "-w", "\n%{http_code}", "-F", "source=@"+zipPath, c.URL+"/build").Output()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if lines[len(lines)-1] != "400" || !strings.Contains(string(out), "UnsupportedToolchain") {
		t.Errorf("unsupported toolchain via multipart: %q", out)
	}

	// POST /build/stream.
	out, err = exec.Command(curl, "-sS", "-N", "-D", "-", "-F", "repo_url="+repo.URL, c.URL+"/build/stream").Output()
	if err != nil {
		t.Fatal(err)
	}
	text := string(out)
	for _, want := range []string{"text/event-stream", "X-Accel-Buffering: no", "Cache-Control: no-cache",
		`data: {"type":"info","message":`, `data: {"type":"complete","result":{"build_id":"`, `"status":"success"`, `/result"`} {
		if !strings.Contains(text, want) {
			t.Errorf("stream lacks %q:\n%s", want, text)
		}
	}
	if !strings.Contains(text, `"artifacts":[{"name":"quick","sha256":"`) {
		t.Errorf("stream complete lacks the artifact:\n%s", harness.Tail(text, 3))
	}
}

// TestSimSNP: the full SNP chain with go-sev-guest's test roots.
func TestSimSNP(t *testing.T) {
	repo := serveRepo(t, "snp", 0)
	_, c := server(t, "", "--attester", "sim-snp")
	harness.WaitReady(t, c)
	nonce := harness.NewNonce()
	id, evs, res := buildAndWait(t, c, harness.BuildRequest{Nonce: nonce, RepoURL: repo.URL, RepoRef: "v1"})
	if res.Status != "ok" {
		t.Fatalf("%+v\n%s", res, eventLog(evs))
	}
	tarball, _ := download(t, c, id)
	dir := extract(t, tarball)
	roots := filepath.Join(t.TempDir(), "sim-roots.pem")
	var buf bytes.Buffer
	if err := attest.WriteSimRoots(&buf); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(roots, buf.Bytes(), 0o644)
	kettleVerify(t, dir, "--nonce", nonce, "--trust-roots", roots)
	// Without the test roots the chain must not verify.
	if out, err := exec.Command(kettleBin, "verify", "--nonce", nonce, dir).CombinedOutput(); err == nil {
		t.Errorf("sim-snp verified against the real AMD roots:\n%s", out)
	}
}

// TestRestart: kill -9 after a build and during one, restart on the same
// data dir. The build that was running is built again (its worker was
// lost with the process), its log replaying both attempts.
func TestRestart(t *testing.T) {
	fast := serveRepo(t, "fast", 0)
	slow := serveRepo(t, "slow", 4*time.Second)
	dataDir := filepath.Join(harness.DataDir(t), "data")
	s1, c1 := server(t, dataDir, "--workers", "1")
	harness.WaitReady(t, c1)
	done, evsDone, res := buildAndWait(t, c1, harness.BuildRequest{Nonce: harness.NewNonce(), RepoURL: fast.URL})
	if res.Status != "ok" {
		t.Fatalf("%+v", res)
	}
	tarball, _ := download(t, c1, done)

	ctx := context.Background()
	running, err := c1.Submit(ctx, harness.BuildRequest{Nonce: harness.NewNonce(), RepoURL: slow.URL})
	if err != nil {
		t.Fatal(err)
	}
	// Wait until it is in the build phase; a job behind it waits in the
	// queue (one worker) and must run after the restart.
	waitEvent(t, c1, running, "build", 90*time.Second)
	waiting, err := c1.Submit(ctx, harness.BuildRequest{Nonce: harness.NewNonce(), RepoURL: fast.URL})
	if err != nil {
		t.Fatal(err)
	}
	s1.Kill()

	s2, c2 := server(t, dataDir, "--workers", "1")
	harness.WaitReady(t, c2)
	again, _ := download(t, c2, done)
	if !bytes.Equal(tarball, again) {
		t.Fatal("result changed across kill -9")
	}
	replay, err := c2.Wait(ctx, done)
	if err != nil || eventLog(replay) != eventLog(evsDone) {
		t.Fatalf("log of the finished job changed (%v)", err)
	}
	evs, err := c2.Wait(ctx, running)
	if err != nil {
		t.Fatal(err)
	}
	checkEvents(t, evs)
	r, _ := harness.ParseComplete(evs[len(evs)-1])
	if r.Status != "ok" || !hasEvent(evs, "vm", "lost; attempt 2 on ") {
		t.Fatalf("running job after kill -9: %+v, want built again\n%s", r, eventLog(evs))
	}
	if st, err := c2.Status(ctx, running); err != nil || st["attempt"] != float64(2) {
		t.Errorf("status of the job built again: %v %v", st, err)
	}
	evs, err = c2.Wait(ctx, waiting)
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := harness.ParseComplete(evs[len(evs)-1]); r.Status != "ok" {
		t.Fatalf("job queued at kill -9: %+v\n%s", r, eventLog(evs))
	}
	if _, _, res := buildAndWait(t, c2, harness.BuildRequest{Nonce: harness.NewNonce(), RepoURL: fast.URL}); res.Status != "ok" {
		t.Fatalf("new build after restart: %+v", res)
	}
	_ = s2
}

// waitEvent follows id's events until one of type typ arrives.
func waitEvent(t *testing.T, c *harness.Client, id, typ string, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	found := errors.New("found")
	err := c.Events(ctx, id, 0, func(e harness.Event) error {
		if e.Type == typ {
			return found
		}
		return nil
	})
	if err != found {
		t.Fatalf("no %s event for %s: %v", typ, id, err)
	}
}

// TestWorkersAndQueue: --workers 2 runs two builds at once; with the
// workers busy, queued jobs see their positions and the queue limit answers
// 503 with Retry-After.
func TestWorkersAndQueue(t *testing.T) {
	slow := serveRepo(t, "slowq", 4*time.Second)
	_, c := server(t, "", "--workers", "2", "--queue-limit", "1")
	harness.WaitReady(t, c)
	ctx := context.Background()
	var ids []string
	for i := 0; i < 2; i++ {
		id, err := c.Submit(ctx, harness.BuildRequest{Nonce: harness.NewNonce(), RepoURL: slow.URL})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	for _, id := range ids {
		waitEvent(t, c, id, "vm", 60*time.Second)
	}
	queued, err := c.Submit(ctx, harness.BuildRequest{Nonce: harness.NewNonce(), RepoURL: slow.URL})
	if err != nil {
		t.Fatal(err)
	}
	st, _ := c.Status(ctx, queued)
	if st["status"] != "queued" || st["position"] != 0.0 {
		t.Errorf("third job: %v", st)
	}
	code, h, body := post(t, c, "/build", "application/json", `{"nonce":"00","repo_url":"`+slow.URL+`"}`)
	plainError(t, code, h, body, 503, "", "")
	if h.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	var wg sync.WaitGroup
	times := make([][2]time.Time, 3)
	for i, id := range append(ids, queued) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			evs, err := c.Wait(ctx, id)
			if err != nil {
				t.Error(err)
				return
			}
			if r, _ := harness.ParseComplete(evs[len(evs)-1]); r.Status != "ok" {
				t.Errorf("job %d: %+v", i, r)
			}
			st, _ := c.Status(ctx, id)
			s, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(st["started_at"]))
			f, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(st["finished_at"]))
			times[i] = [2]time.Time{s, f}
			if i == 2 && !hasEvent(evs, "queued", `"position":0`) {
				t.Errorf("queued job lacks its position event:\n%s", eventLog(evs))
			}
		}()
	}
	wg.Wait()
	// The first two overlapped: each started before the other finished.
	if !(times[0][0].Before(times[1][1]) && times[1][0].Before(times[0][1])) {
		t.Errorf("builds did not run in parallel: %v", times[:2])
	}
}

// TestSingleBuild: 409 after the first accepted build, also after a restart.
func TestSingleBuild(t *testing.T) {
	dataDir := filepath.Join(harness.DataDir(t), "data")
	s1, c1 := server(t, dataDir, "--single-build")
	body := `{"nonce":"` + harness.NewNonce() + `","repo_url":"http://127.0.0.1:1/x.git"}`
	if code, _, b := post(t, c1, "/build", "application/json", body); code != 200 {
		t.Fatalf("first build: %d %s", code, b)
	}
	code, h, b := post(t, c1, "/build", "application/json", body)
	plainError(t, code, h, b, 409, "this CVM has already accepted a build", "")
	// An invalid request is still a 400, not a 409 (docs/api.md's order).
	code, h, b = post(t, c1, "/build", "application/json", `{"nonce":"zz","repo_url":"https://example.com/x"}`)
	plainError(t, code, h, b, 400, "invalid nonce hex", "")
	s1.Kill()
	_, c2 := server(t, dataDir, "--single-build")
	code, h, b = post(t, c2, "/build", "application/json", body)
	plainError(t, code, h, b, 409, "this CVM has already accepted a build", "")
	ct, mp := multipartForm(map[string]string{"repo_url": "http://127.0.0.1:1/x.git"})
	code, h, b = post(t, c2, "/build", ct, mp)
	plainError(t, code, h, b, 409, "this CVM has already accepted a build", "")
	if code, _, _ := get(t, c2, "/health"); code != 200 {
		t.Error("health after the gate")
	}
}

func multipartForm(fields map[string]string) (string, string) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, v := range fields {
		mw.WriteField(k, v)
	}
	mw.Close()
	return mw.FormDataContentType(), buf.String()
}

// TestShutdown: SIGTERM stops accepting, lets the running build finish and
// exits 0; with a short deadline the build ends Interrupted.
func TestShutdown(t *testing.T) {
	slow := serveRepo(t, "term", 3*time.Second)
	ctx := context.Background()
	for _, tc := range []struct {
		name, deadline, status, errType string
	}{
		{"finish", "2m", "ok", ""},
		{"deadline", "1s", "failed", "Interrupted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := filepath.Join(harness.DataDir(t), "data")
			s, c := server(t, dataDir, "--shutdown-timeout", tc.deadline)
			harness.WaitReady(t, c)
			id, err := c.Submit(ctx, harness.BuildRequest{Nonce: harness.NewNonce(), RepoURL: slow.URL})
			if err != nil {
				t.Fatal(err)
			}
			waitEvent(t, c, id, "build", 60*time.Second)
			// A watcher connected before SIGTERM sees the end of the build.
			type result struct {
				evs []harness.Event
				err error
			}
			watched := make(chan result, 1)
			go func() {
				evs, err := c.Wait(ctx, id)
				watched <- result{evs, err}
			}()
			time.Sleep(200 * time.Millisecond)
			if err := s.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			time.Sleep(300 * time.Millisecond)
			if _, err := http.Get(c.URL + "/health"); err == nil {
				t.Error("still accepting connections after SIGTERM")
			}
			exited, err := s.Wait(90 * time.Second)
			if !exited || err != nil {
				t.Fatalf("exit after SIGTERM: exited=%v err=%v", exited, err)
			}
			if tc.status == "ok" {
				w := <-watched
				if w.err != nil {
					t.Fatalf("watcher: %v", w.err)
				}
				if r, _ := harness.ParseComplete(w.evs[len(w.evs)-1]); r.Status != "ok" {
					t.Fatalf("watcher saw %+v", r)
				}
			}
			_, c2 := server(t, dataDir)
			evs, err := c2.Wait(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			r, _ := harness.ParseComplete(evs[len(evs)-1])
			if r.Status != tc.status || r.ErrorType != tc.errType {
				t.Fatalf("after SIGTERM: %+v", r)
			}
		})
	}
}

// TestRetention: results and logs are gone after --retention.
func TestRetention(t *testing.T) {
	repo := serveRepo(t, "ret", 0)
	_, c := server(t, "", "--retention", "3s")
	harness.WaitReady(t, c)
	id, _, res := buildAndWait(t, c, harness.BuildRequest{Nonce: harness.NewNonce(), RepoURL: repo.URL})
	if res.Status != "ok" {
		t.Fatalf("%+v", res)
	}
	if code, _, _ := get(t, c, "/build/"+id+"/result"); code != 200 {
		t.Fatalf("result right after the build: %d", code)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, _, _ := get(t, c, "/build/"+id+"/result")
		if code == 404 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("result still there after retention: %d", code)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// TestUploadLarge streams a 64 MiB source_data body to a real server: it
// is accepted with the exact archive size. The memory it costs is
// BenchmarkUploadMemory (and bench/upload for 1 GiB), not an assertion here.
func TestUploadLarge(t *testing.T) {
	const size = 64 << 20
	_, c := server(t, "", "--max-upload", "100MiB")
	harness.WaitReady(t, c)
	id, err := uploadNoise(c, size)
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Status(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if src, _ := st["source"].(map[string]any); src["archive_size"] != float64(size) {
		t.Errorf("archive size recorded %v", st["source"])
	}
}

// uploadNoise submits a gzip magic followed by size-2 bytes of noise as
// source_data: the upload path must not care what the archive holds.
func uploadNoise(c *harness.Client, size int64) (string, error) {
	src := io.MultiReader(bytes.NewReader([]byte{0x1f, 0x8b}), io.LimitReader(zeroNoise{}, size-2))
	return c.SubmitRaw(context.Background(), "application/json", harness.Base64JSONBody(harness.NewNonce(), "big.tar.gz", src))
}

// BenchmarkUploadMemory is docs/benchmarks.md's upload budget on a real server: a
// 256 MiB source_data body (KETTLE_BENCH_UPLOAD_MIB sets another size)
// should grow the server's resident memory by well under 64 MiB. It
// reports the growth per upload (peak of VmRSS sampled every 20 ms and
// VmHWM), for comparison by hand or with benchstat; never under -race.
func BenchmarkUploadMemory(b *testing.B) {
	size := int64(256 << 20)
	if v, err := strconv.ParseInt(os.Getenv("KETTLE_BENCH_UPLOAD_MIB"), 10, 64); err == nil && v > 0 {
		size = v << 20
	}
	s, c := server(b, "", "--max-upload", fmt.Sprintf("%dMiB", size>>20+1))
	harness.WaitReady(b, c)
	var growthMax int64
	for b.Loop() {
		b.StopTimer()
		time.Sleep(200 * time.Millisecond)
		before, err := harness.ReadMem(s.PID())
		if err != nil {
			b.Fatal(err)
		}
		harness.ResetHWM(s.PID())
		sampler := harness.Sample(s.PID(), 20*time.Millisecond)
		b.StartTimer()
		_, err = uploadNoise(c, size)
		peak := sampler.Stop()
		if err != nil {
			b.Fatal(err)
		}
		after, _ := harness.ReadMem(s.PID())
		growthMax = max(growthMax, max(peak.RSS, peak.HWM, after.HWM)-before.RSS)
	}
	b.SetBytes(size)
	b.ReportMetric(float64(growthMax)/(1<<20), "RSS-growth-MiB")
}

// zeroNoise is a cheap non-repeating byte stream.
type zeroNoise struct{}

func (zeroNoise) Read(p []byte) (int, error) {
	x := uint32(2463534242)
	for i := range p {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		p[i] = byte(x)
	}
	return len(p), nil
}

// TestCluster: a front end with the embedded store and no workers, a second
// front end joined with --nats, and a separate `kettle worker` process.
func TestCluster(t *testing.T) {
	repo := serveRepo(t, "cluster", 0)
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", port)
	sA, cA := server(t, "", "--workers", "0", "--nats-listen", fmt.Sprintf("127.0.0.1:%d", port))
	if code, _, body := get(t, cA, "/ready"); code != 503 {
		t.Errorf("/ready without workers = %d %q", code, body)
	}
	// The embedded store's listener needs the credentials it generated.
	creds := filepath.Join(sA.DataDir, "store", "auth", "member.nk")
	_, cB := server(t, "", "--nats", natsURL, "--nats-creds", creds)
	w := exec.Command(kettleBin, "worker", "--nats", natsURL, "--nats-creds", creds, "--attester", "insecure", "--sandbox", sandboxMode(),
		"--allow-local-repos", "--allow-private-networks", "--work-dir", harness.DataDir(t))
	var wlog bytes.Buffer
	w.Stdout, w.Stderr = &wlog, &wlog
	w.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-w.Process.Pid, syscall.SIGKILL)
		w.Wait()
		if t.Failed() {
			t.Logf("worker log:\n%s", harness.Tail(wlog.String(), 40))
		}
	})
	harness.WaitReady(t, cB)
	harness.WaitReady(t, cA)
	id, evs, res := buildAndWait(t, cB, harness.BuildRequest{Nonce: harness.NewNonce(), RepoURL: repo.URL})
	if res.Status != "ok" {
		t.Fatalf("%+v\n%s", res, eventLog(evs))
	}
	if !hasEvent(evs, "vm", "") {
		t.Errorf("no vm event naming the worker:\n%s", eventLog(evs))
	}
	a, _ := download(t, cA, id)
	b, _ := download(t, cB, id)
	if !bytes.Equal(a, b) || len(a) == 0 {
		t.Fatal("the two front ends serve different results")
	}
}

// TestQueuePositions: jobs waiting behind a running one see `queued` events
// counting down to 0, and GET /build/{id} reports the same position.
func TestQueuePositions(t *testing.T) {
	slow := serveRepo(t, "slowpos", 3*time.Second)
	_, c := server(t, "", "--workers", "1")
	harness.WaitReady(t, c)
	ctx := context.Background()
	first, err := c.Submit(ctx, harness.BuildRequest{Nonce: harness.NewNonce(), RepoURL: slow.URL})
	if err != nil {
		t.Fatal(err)
	}
	waitEvent(t, c, first, "vm", 60*time.Second)
	var waiting []string
	for i := 0; i < 3; i++ {
		id, err := c.Submit(ctx, harness.BuildRequest{Nonce: harness.NewNonce(), RepoURL: slow.URL})
		if err != nil {
			t.Fatal(err)
		}
		waiting = append(waiting, id)
	}
	for i, id := range waiting {
		st, _ := c.Status(ctx, id)
		if st["status"] != "queued" || st["position"] != float64(i) {
			t.Errorf("job %d status %v position %v, want queued %d", i, st["status"], st["position"], i)
		}
	}
	last := waiting[2]
	evs, err := c.Wait(ctx, last)
	if err != nil {
		t.Fatal(err)
	}
	checkEvents(t, evs)
	var positions []int
	for _, e := range evs {
		if e.Type == "queued" {
			var v struct{ Position int }
			json.Unmarshal([]byte(e.Data), &v)
			positions = append(positions, v.Position)
		}
	}
	if fmt.Sprint(positions) != "[2 1 0]" {
		t.Errorf("queued positions of the last job: %v\n%s", positions, eventLog(evs))
	}
	if m, err := c.Metrics(ctx); err != nil || !strings.Contains(m, `kettle_builds_total{error_type="",status="succeeded",toolchain="cargo"}`) {
		t.Errorf("metrics lack the succeeded cargo builds (%v)", err)
	}
}

// TestAuthToken: --auth-token-file guards the POST routes only.
func TestAuthToken(t *testing.T) {
	tok := filepath.Join(harness.DataDir(t), "token")
	os.WriteFile(tok, []byte("s3cret-token\n"), 0o600)
	_, c := server(t, "", "--auth-token-file", tok)
	body := `{"nonce":"00","repo_url":"http://127.0.0.1:1/x.git"}`
	code, h, b := post(t, c, "/build", "application/json", body)
	plainError(t, code, h, b, 401, "token", "")
	code, h, b = post(t, c, "/build", "application/json", body, "Authorization", "Bearer wrong")
	plainError(t, code, h, b, 401, "token", "")
	ct, mp := multipartForm(map[string]string{"repo_url": "http://127.0.0.1:1/x.git"})
	code, h, b = post(t, c, "/build/stream", ct, mp)
	plainError(t, code, h, b, 401, "token", "")
	if code, _, b := post(t, c, "/build", "application/json", body, "Authorization", "Bearer s3cret-token"); code != 200 {
		t.Fatalf("with the token: %d %s", code, b)
	}
	if code, _, _ := get(t, c, "/health"); code != 200 {
		t.Error("GET needs no token")
	}
}
