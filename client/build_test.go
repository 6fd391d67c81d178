package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kettle-build/kettle/bundle"
	"github.com/kettle-build/kettle/events"
)

// buildServer is a test double of the routes Build uses: POST /build
// answers job "j" (or submitStatus), the events end with complete (ok, or
// failing with errorType), and the result is tarball, 404 for the first
// missing requests (a result announced a moment before it is stored).
type buildServer struct {
	submitStatus int
	errorType    string
	tarball      []byte
	missing      int32
	uploaded     atomic.Int64
	results      atomic.Int32
}

func (b *buildServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/build":
		n, _ := io.Copy(io.Discard, r.Body)
		b.uploaded.Store(n)
		if b.submitStatus != 0 {
			http.Error(w, "nonce must be 16 bytes", b.submitStatus)
			return
		}
		io.WriteString(w, `{"job_id":"j"}`)
	case r.URL.Path == "/build/j/events":
		w.Header().Set("Content-Type", "text/event-stream")
		result := `{"status":"ok"}`
		if b.errorType != "" {
			result = fmt.Sprintf(`{"status":"failed","error_type":%q,"error":"no lockfile"}`, b.errorType)
		}
		fmt.Fprintf(w, "id: 0\ndata: {\"type\":\"queued\",\"position\":0}\n\nid: 1\ndata: {\"type\":\"build\",\"msg\":\"compiling\"}\n\nid: 2\ndata: {\"type\":\"complete\",\"result\":%s}\n\n", result)
	case r.URL.Path == "/build/j/result":
		if b.results.Add(1) <= b.missing {
			http.Error(w, "job has no result", http.StatusNotFound)
			return
		}
		sum := sha256.Sum256(b.tarball)
		w.Header().Set("X-Kettle-Result-SHA256", hex.EncodeToString(sum[:]))
		w.Header().Set("Content-Length", fmt.Sprint(len(b.tarball)))
		w.Write(b.tarball)
	default:
		http.NotFound(w, r)
	}
}

func resultTarball(t *testing.T) []byte {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "artifact.txt"), []byte("built\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := bundle.Write(&buf, "proj", dir); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestBuildWorkflow: Build submits, reports the upload and each event in
// order, waits for a result announced before it is stored, checks and
// extracts it where asked, and a default destination that exists is not
// overwritten.
func TestBuildWorkflow(t *testing.T) {
	tarball := resultTarball(t)
	sum := sha256.Sum256(tarball)
	archive := bytes.Repeat([]byte("PK\x03\x04 source "), 1000)
	for _, tc := range []struct {
		name    string
		out     string // "" = default ./<top>
		occupy  bool   // ./proj exists already
		wantDir string
		notes   int
	}{
		{"out dir", "result", false, "result", 0},
		{"default", "", false, "proj", 0},
		{"default taken", "", true, "proj-j", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Chdir(t.TempDir())
			if tc.occupy {
				os.Mkdir("proj", 0o755)
			}
			srv := &buildServer{tarball: tarball, missing: 2}
			hs := httptest.NewServer(srv)
			defer hs.Close()
			c := newTestClient(t, hs.URL)
			var (
				steps    []string
				progress atomic.Int64
				notes    []string
			)
			opts := []BuildOption{
				WithUploadProgress(progress.Store),
				WithSubmitted(func(s *Submission) { steps = append(steps, "submitted "+s.JobID) }),
				WithEvents(func(i int, ev events.Event) error {
					steps = append(steps, fmt.Sprintf("%d %s", i, ev.Type))
					return nil
				}),
				WithFollowed(func(r *events.Result) { steps = append(steps, "followed "+r.Status) }),
				WithNotify(func(m string) { notes = append(notes, m) }),
			}
			if tc.out != "" {
				opts = append(opts, WithOutDir(tc.out))
			}
			o, err := c.buildWith(context.Background(), Request{Nonce: nonce16, Archive: archiveOf(archive), SourceName: "p.zip"}, opts...)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := strings.Join(steps, ", "), "submitted j, 0 queued, 1 build, 2 complete, followed ok"; got != want {
				t.Errorf("steps %q, want %q", got, want)
			}
			if progress.Load() != int64(len(archive)) {
				t.Errorf("upload progress %d, want %d", progress.Load(), len(archive))
			}
			as := sha256.Sum256(archive)
			if o.Submission.ArchiveSHA256 != hex.EncodeToString(as[:]) || o.Build.Status != "ok" || o.SHA256 != hex.EncodeToString(sum[:]) {
				t.Errorf("outcome %+v / %+v", o, o.Submission)
			}
			if srv.results.Load() != 3 {
				t.Errorf("%d result requests, want 3 (two 404s first)", srv.results.Load())
			}
			want, _ := filepath.Abs(tc.wantDir)
			if o.Dir != want {
				t.Errorf("dir %s, want %s", o.Dir, want)
			}
			if b, err := os.ReadFile(filepath.Join(o.Dir, "artifact.txt")); err != nil || string(b) != "built\n" {
				t.Errorf("artifact: %q, %v", b, err)
			}
			if len(notes) != tc.notes || tc.notes > 0 && notes[0] != "proj exists; extracting to proj-j instead" {
				t.Errorf("notes %q", notes)
			}
			if ents, _ := filepath.Glob(".kettle-remote-*"); len(ents) > 0 {
				t.Errorf("temporary files left: %v", ents)
			}
		})
	}
}

// TestBuildStages: each failure says which step it happened in, keeps the
// cause (errors.Is), and the outcome holds what was done before it.
func TestBuildStages(t *testing.T) {
	tarball := resultTarball(t)
	for _, tc := range []struct {
		name    string
		srv     *buildServer
		out     func(t *testing.T) string
		stage   Stage
		is      error
		local   bool
		jobID   string
		errType string
	}{
		{name: "rejected", srv: &buildServer{submitStatus: 400}, stage: StageSubmit, is: ErrRejected},
		{name: "build failed", srv: &buildServer{errorType: "UnsupportedToolchain"}, stage: StageBuild, is: ErrBuildFailed, jobID: "j", errType: "UnsupportedToolchain"},
		{name: "no result", srv: &buildServer{tarball: tarball, missing: 100}, stage: StageFetch, is: ErrNotFound, jobID: "j"},
		{name: "corrupt result", srv: &buildServer{tarball: []byte("not a tarball")}, stage: StageFetch, jobID: "j"},
		{name: "out not empty", srv: &buildServer{tarball: tarball}, out: func(t *testing.T) string {
			d := t.TempDir()
			os.WriteFile(filepath.Join(d, "old"), nil, 0o644)
			return d
		}, stage: StageFetch, local: true, jobID: "j"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Chdir(t.TempDir())
			hs := httptest.NewServer(tc.srv)
			defer hs.Close()
			var opts []BuildOption
			if tc.out != nil {
				opts = append(opts, WithOutDir(tc.out(t)))
			}
			followed := false
			opts = append(opts, WithFollowed(func(*events.Result) { followed = true }))
			c := newTestClient(t, hs.URL)
			o, err := c.buildWith(context.Background(), Request{Nonce: nonce16, RepoURL: "https://example.com/r.git"}, opts...)
			var se *StageError
			if !errors.As(err, &se) || se.Stage != tc.stage {
				t.Fatalf("err = %v, want stage %s", err, tc.stage)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("err = %v, want errors.Is %v", err, tc.is)
			}
			var le *LocalError
			if errors.As(err, &le) != tc.local {
				t.Errorf("err = %v: local %v, want %v", err, !tc.local, tc.local)
			}
			if tc.jobID == "" && o.Submission != nil || tc.jobID != "" && (o.Submission == nil || o.Submission.JobID != tc.jobID) {
				t.Errorf("submission %+v", o.Submission)
			}
			if followed != (tc.stage != StageSubmit) {
				t.Errorf("followed callback called: %v", followed)
			}
			if tc.errType != "" && (o.Build == nil || o.Build.ErrorType != tc.errType) {
				t.Errorf("build %+v", o.Build)
			}
			if o.Dir != "" {
				t.Errorf("dir %q after a failure", o.Dir)
			}
			if ents, _ := filepath.Glob(".kettle-remote-*"); len(ents) > 0 {
				t.Errorf("temporary files left: %v", ents)
			}
		})
	}
}

// buildWith is Build with the result wait shortened for tests.
func (c *Client) buildWith(ctx context.Context, req Request, opts ...BuildOption) (*Outcome, error) {
	return c.Build(ctx, req, append([]BuildOption{func(b *buildConfig) { b.resultWait = time.Millisecond }}, opts...)...)
}
