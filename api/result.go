package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/kettle-build/kettle/events"
	"github.com/kettle-build/kettle/jobs"
)

// result serves GET /build/{id}/result: the tarball, streamed.
func (s *Server) result(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	setJobID(r, id)
	if !validID(id) {
		httpError(w, http.StatusNotFound, "unknown build id")
		return
	}
	rc, job, err := s.svc.Result(r.Context(), id)
	if err != nil {
		s.noResult(w, r, id, err)
		return
	}
	defer rc.Close()
	s.writeResult(w, r, job, rc)
}

// writeResult streams a result tarball with its headers.
func (s *Server) writeResult(w http.ResponseWriter, r *http.Request, job *jobs.Job, rc io.Reader) {
	h := w.Header()
	h.Set("Content-Type", "application/gzip")
	h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": resultFileName(job)}))
	if job.ResultSize > 0 {
		h.Set("Content-Length", strconv.FormatInt(job.ResultSize, 10))
	}
	if job.ResultSHA256 != "" {
		h.Set("ETag", `"sha256:`+job.ResultSHA256+`"`)
		h.Set("X-Kettle-Result-SHA256", job.ResultSHA256)
	}
	h.Set("Cache-Control", "private, max-age=0")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	// A tarball of any size goes out through one 32 KiB buffer; a stalled
	// client is dropped after the write timeout.
	rc2 := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, rerr := rc.Read(buf)
		if n > 0 {
			if s.cfg.writeWait > 0 {
				_ = rc2.SetWriteDeadline(time.Now().Add(s.cfg.writeWait))
			}
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
		}
		if rerr == io.EOF {
			return
		}
		if rerr != nil {
			// Headers are gone: all we can do is cut the response short so
			// the client sees a truncated body rather than a wrong one.
			s.log.Error("result read", "job", job.ID, "err", rerr)
			panic(http.ErrAbortHandler)
		}
	}
}

// resultFileName is `<top>.tar.gz` (docs/api.md#the-result-tarball), safe for a header.
func resultFileName(job *jobs.Job) string {
	name := job.ResultName
	name = name[strings.LastIndexAny(name, `/\`)+1:]
	name = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == '"' {
			return -1
		}
		return r
	}, name)
	if name == "" || name == "." || name == ".." {
		name = "kettle-build"
	}
	if !strings.HasSuffix(name, ".tar.gz") {
		name += ".tar.gz"
	}
	return name
}

// noResult answers 404 with the reason the result is not there.
func (s *Server) noResult(w http.ResponseWriter, r *http.Request, id string, err error) {
	if errors.Is(err, jobs.ErrNotFound) {
		httpError(w, http.StatusNotFound, "unknown build id")
		return
	}
	if !errors.Is(err, jobs.ErrNoResult) {
		s.storeError(w, r, id, err)
		return
	}
	job, gerr := s.svc.Get(r.Context(), id)
	if gerr != nil {
		if errors.Is(gerr, jobs.ErrNotFound) {
			httpError(w, http.StatusNotFound, "unknown build id")
		} else {
			s.storeError(w, r, id, gerr)
		}
		return
	}
	httpError(w, http.StatusNotFound, noResultReason(job))
}

func noResultReason(job *jobs.Job) string {
	switch job.Status {
	case jobs.StatusQueued:
		return "build is queued; no result yet"
	case jobs.StatusRunning:
		return "build is running; no result yet"
	case jobs.StatusFailed:
		msg := "build failed"
		if job.ErrorType != "" {
			msg += " (" + job.ErrorType + ")"
		}
		if job.Error != "" {
			msg += ": " + job.Error
		}
		return msg
	case jobs.StatusSucceeded:
		return "result no longer available (expired)"
	}
	return "no result for this build"
}

// statusJSON is the public view of a job (docs/api.md GET /build/{id}); the
// store's bookkeeping fields (nonce, worker, …) stay private.
type statusJSON struct {
	ID           string      `json:"job_id"`
	Status       jobs.Status `json:"status"`
	Position     *int        `json:"position"`
	CreatedAt    time.Time   `json:"created_at"`
	StartedAt    *time.Time  `json:"started_at"`
	FinishedAt   *time.Time  `json:"finished_at"`
	Toolchain    *string     `json:"toolchain"`
	Source       sourceJSON  `json:"source"`
	Error        *string     `json:"error"`
	ErrorType    *string     `json:"error_type"`
	ResultSHA256 *string     `json:"result_sha256"`
	// Attempt counts the workers that took the job: above 1 when a
	// worker was lost and the job was built again (0 while it waits for
	// its first).
	Attempt int `json:"attempt"`
	// NoncePadded: the job's nonce is absent or shorter than 16 bytes,
	// so the evidence binds it zero-padded (NonceNote says so in words).
	NoncePadded bool   `json:"nonce_padded"`
	NonceNote   string `json:"nonce_note,omitempty"`
	// Phases: name, start and duration (seconds) of each step of a
	// finished job, in order (issue 16); [] before it ends.
	Phases []events.Phase `json:"phases"`
}

type sourceJSON struct {
	URL           string `json:"url,omitempty"`
	Ref           string `json:"ref,omitempty"`
	ArchiveName   string `json:"archive_name,omitempty"`
	ArchiveSHA256 string `json:"archive_sha256,omitempty"`
	ArchiveSize   int64  `json:"archive_size,omitempty"`
}

func strOrNil(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// publicJob maps a job to its API form; unknown values are null.
func publicJob(j *jobs.Job) statusJSON {
	v := statusJSON{
		ID: j.ID, Status: j.Status, CreatedAt: j.CreatedAt.UTC(),
		StartedAt: j.StartedAt, FinishedAt: j.FinishedAt,
		Toolchain: strOrNil(j.Toolchain), Error: strOrNil(j.Error), ErrorType: strOrNil(j.ErrorType),
		ResultSHA256: strOrNil(j.ResultSHA256),
		Source: sourceJSON{URL: j.Source.URL, Ref: j.Source.Ref, ArchiveName: j.Source.ArchiveName,
			ArchiveSHA256: j.Source.ArchiveSHA256, ArchiveSize: j.Source.ArchiveSize},
		NonceNote: jobs.NonceNote(j.Nonce),
		Attempt:   j.Attempts,
		Phases:    j.Phases,
	}
	if v.Phases == nil {
		v.Phases = []events.Phase{}
	}
	v.NoncePadded = v.NonceNote != ""
	if j.Status == jobs.StatusQueued {
		p := j.Position
		v.Position = &p
	}
	return v
}

// status serves GET /build/{id}.
func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	setJobID(r, id)
	if !validID(id) {
		httpError(w, http.StatusNotFound, "unknown build id")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	job, err := s.svc.Get(ctx, id)
	if err != nil {
		if errors.Is(err, jobs.ErrNotFound) {
			httpError(w, http.StatusNotFound, "unknown build id")
			return
		}
		s.storeError(w, r, id, err)
		return
	}
	writeJSON(w, http.StatusOK, publicJob(job))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		httpError(w, http.StatusInternalServerError, "internal error")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}
