package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"strconv"

	"github.com/kettle-build/kettle/api/request"
	"github.com/kettle-build/kettle/events"
	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/jobs"
	"golang.org/x/time/rate"
)

// statusError is a client error with its HTTP status and one-line message;
// err, when set, is the cause for the log.
type statusError struct {
	code int
	msg  string
	err  error
}

// A client that parses each read of /build/stream on its own (the seed's
// JavaScript client does) breaks when a read ends inside an event. Each
// event is one small write, so a read ends inside one only when more than
// a read's worth (Node reads 64 KiB) waits unread in the socket: a burst
// (a 300 KB output line is ~90 events) is paced to streamRate beyond
// streamBurst bytes, which costs a 300 KB line about half a second.
const (
	streamBurst = 24 << 10
	streamRate  = rate.Limit(512 << 10) // bytes per second
)

func (e *statusError) Error() string { return e.msg }
func (e *statusError) Unwrap() error { return e.err }

// countingReader feeds kettle_upload_bytes_total as the body arrives.
type countingReader struct {
	r io.Reader
	m *Metrics
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.m.Uploaded.Add(float64(n))
	}
	return n, err
}

func isMultipart(r *http.Request) bool {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return mt == "multipart/form-data"
}

// submit serves POST /build: JSON is asynchronous (docs/api.md's canonical API),
// multipart is the older synchronous API that answers with the tarball.
func (s *Server) submit(w http.ResponseWriter, r *http.Request) {
	if isMultipart(r) {
		s.submitSync(w, r)
		return
	}
	job, ok := s.accept(w, r, "json")
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"job_id": job.ID})
}

// accept parses, validates and submits a build, answering the error itself
// when it fails. The order of checks is docs/api.md's: content type, body
// shape, size, nonce, sources (all in the parser), repo policy, then the
// store's queue limit and single-build gate.
func (s *Server) accept(w http.ResponseWriter, r *http.Request, api string) (*jobs.Job, bool) {
	ctx := r.Context()
	ct := r.Header.Get("Content-Type")
	// Base64 inflates by 4/3; the slack covers the other fields. The parser
	// enforces the exact decoded limit, this one bounds what we read at all.
	limit := s.cfg.maxUpload/3*4 + 1<<20
	body := countingReader{http.MaxBytesReader(w, r.Body, limit), s.m}
	var (
		sub *request.Build
		err error
	)
	if isMultipart(r) {
		sub, err = parseMultipart(ctx, ct, body, s.cfg.spoolDir, s.cfg.maxUpload)
	} else {
		sub, err = parseJSON(ctx, ct, body, s.cfg.spoolDir, s.cfg.maxUpload)
	}
	if err != nil {
		s.rejected(w, r, api, err)
		return nil, false
	}
	if sub.Source.ArchivePath != "" {
		defer os.Remove(sub.Source.ArchivePath)
	}
	if sub.Source.URL != "" && s.cfg.checkRepo != nil {
		if err := s.cfg.checkRepo(ctx, sub.Source.URL, sub.Source.Ref); err != nil {
			// A refusal names the client's own URL or ref; anything else
			// (a resolver outage) is ours and worth a retry.
			se := &statusError{http.StatusServiceUnavailable, "could not check repo_url; try again", err}
			var fe *failure.Error
			if errors.As(err, &fe) {
				se = &statusError{http.StatusBadRequest, fe.Error(), err}
			}
			s.rejected(w, r, api, se)
			return nil, false
		}
	}
	req := jobs.Request{Nonce: sub.Nonce, Source: sub.Source}
	if sub.Source.ArchivePath != "" {
		f, err := os.Open(sub.Source.ArchivePath)
		if err != nil {
			s.log.Error("open spooled upload", "err", err)
			s.rejected(w, r, api, &statusError{http.StatusInternalServerError, "internal error", err})
			return nil, false
		}
		defer f.Close()
		req.Archive = f
	}
	// The job must be stored even if the client hangs up mid-submit.
	job, err := s.svc.Submit(context.WithoutCancel(ctx), req)
	if err != nil {
		s.rejected(w, r, api, err)
		return nil, false
	}
	setJobID(r, job.ID)
	w.Header().Set("X-Kettle-Job-Id", job.ID)
	s.m.Submitted.WithLabelValues(api, "accepted").Inc()
	src := sub.Source.URL
	if src == "" {
		src = "archive " + sub.Source.ArchiveName
	}
	s.log.Info("build accepted", "job", job.ID, "api", api, "source", src, "ref", sub.Source.Ref,
		"archive_bytes", sub.Source.ArchiveSize)
	return job, true
}

// rejected answers a failed submission.
func (s *Server) rejected(w http.ResponseWriter, r *http.Request, api string, err error) {
	code, msg := s.classify(err)
	s.m.Submitted.WithLabelValues(api, strconv.Itoa(code)).Inc()
	if code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", strconv.Itoa(int(s.cfg.retryAfter.Seconds())))
	}
	if code >= 500 && code != http.StatusServiceUnavailable {
		s.log.Error("submission failed", "err", err)
	} else {
		s.log.Info("submission refused", "status", code, "reason", msg)
	}
	if r.Context().Err() != nil {
		return
	}
	// The body may be unread; closing the connection beats draining up to
	// a gigabyte from a client we are refusing.
	w.Header().Set("Connection", "close")
	httpError(w, code, msg)
}

// classify maps a submission error to its status and client message.
func (s *Server) classify(err error) (int, string) {
	var se *statusError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &se):
		return se.code, se.msg
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("request body too large (limit %d bytes of archive)", s.cfg.maxUpload)
	case errors.Is(err, jobs.ErrQueueFull):
		return http.StatusServiceUnavailable, "build queue is full, retry later"
	case errors.Is(err, jobs.ErrSingleBuildUsed):
		return http.StatusConflict, "this CVM has already accepted a build"
	case errors.Is(err, jobs.ErrNotReady):
		return http.StatusServiceUnavailable, "job store not ready, retry later"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusRequestTimeout, "request canceled"
	}
	var fe *failure.Error
	if errors.As(err, &fe) && fe.Kind == failure.InvalidSource {
		return http.StatusBadRequest, fe.Error()
	}
	return http.StatusInternalServerError, "internal error"
}

// waitDone blocks until the job's `complete` event and returns its result.
func (s *Server) waitDone(ctx context.Context, id string, fn func(i int, ev events.Event) error) (*events.Result, error) {
	var res *events.Result
	err := jobs.Watch(ctx, s.svc, id, 0, func(i int, ev events.Event) error {
		if ev.Type == events.Complete {
			res = ev.Result
		}
		if fn != nil {
			return fn(i, ev)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if res == nil {
		res = &events.Result{Status: "failed", Error: "missing result", ErrorType: string(failure.InternalError)}
	}
	return res, nil
}

// submitSync is multipart POST /build: wait, then stream the tarball, or
// answer 400 (bad input, unsupported toolchain) / 500 with the error.
func (s *Server) submitSync(w http.ResponseWriter, r *http.Request) {
	job, ok := s.accept(w, r, "multipart")
	if !ok {
		return
	}
	ctx := r.Context()
	res, err := s.waitDone(ctx, job.ID, nil)
	if err != nil {
		if ctx.Err() == nil {
			s.storeError(w, r, job.ID, err)
		}
		return
	}
	if res.Status != "ok" {
		code := http.StatusInternalServerError
		switch failure.Kind(res.ErrorType) {
		case failure.InvalidSource, failure.UnsupportedToolchain:
			code = http.StatusBadRequest
		}
		msg := res.Error
		if res.ErrorType != "" {
			msg = res.ErrorType + ": " + msg
		}
		httpError(w, code, msg)
		return
	}
	rc, j, err := s.svc.Result(ctx, job.ID)
	if err != nil {
		s.noResult(w, r, job.ID, err)
		return
	}
	defer rc.Close()
	s.writeResult(w, r, j, rc)
}

// streamResult is the `result` of the older stream API's final event.
type streamResult struct {
	BuildID   string           `json:"build_id"`
	Status    string           `json:"status"` // success | failed
	Error     string           `json:"error,omitempty"`
	ErrorType string           `json:"error_type,omitempty"`
	Artifacts []streamArtifact `json:"artifacts,omitempty"`
	ResultURL string           `json:"result_url,omitempty"`
	EventsURL string           `json:"events_url"`
	SHA256    string           `json:"result_sha256,omitempty"`
}

type streamArtifact struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// submitStream serves POST /build/stream: the older SSE API with `info`
// events and a final `complete` naming the artifacts and the result URL.
func (s *Server) submitStream(w http.ResponseWriter, r *http.Request) {
	job, ok := s.accept(w, r, "stream")
	if !ok {
		return
	}
	id := job.ID
	s.m.Watchers.Inc()
	defer s.m.Watchers.Dec()
	sse := newSSE(w, s.cfg.writeWait)
	// One flush per event, each event small (events.MaxMsgJSON): the
	// seed's JavaScript client parses every read on its own, so an event
	// must never be split across reads nor several batched into one write
	// large enough to be split.
	pace := rate.NewLimiter(streamRate, streamBurst)
	info := func(msg string, cont bool) error {
		b, _ := json.Marshal(struct {
			Type    string `json:"type"`
			Message string `json:"message"`
			Cont    bool   `json:"cont,omitempty"`
		}{"info", msg, cont})
		if err := pace.WaitN(r.Context(), min(len(b)+64, streamBurst)); err != nil {
			return err
		}
		sse.event(-1, b)
		return sse.flush()
	}
	if info("Build "+id+" accepted", false) != nil {
		return
	}
	f, err := s.svc.Follow(r.Context(), id)
	if err != nil {
		if r.Context().Err() == nil {
			s.log.Warn("build stream ended", "job", id, "err", err)
		}
		return
	}
	defer f.Close()
	var final *events.Result
	err = s.follow(r.Context(), f, func(e jobs.Entry) error {
		ev := e.Event
		if ev.Type == events.Complete {
			final = ev.Result
			return nil
		}
		s.m.EventsSent.Inc()
		switch ev.Type {
		case events.Queued:
			return info(fmt.Sprintf("Queued (position %d)", ev.Position), false)
		}
		for _, p := range events.SplitEvent(ev, events.MaxMsgJSON) {
			if err := info(p.Msg, p.Cont); err != nil {
				return err
			}
		}
		return nil
	}, func() error {
		sse.comment("keep-alive")
		return sse.flush()
	})
	if err != nil {
		if r.Context().Err() == nil {
			s.log.Warn("build stream ended", "job", id, "err", err)
		}
		return
	}
	res := streamResult{BuildID: id, Status: "failed", EventsURL: "/build/" + id + "/events"}
	if final != nil && final.Status == "ok" {
		res.Status = "success"
		res.ResultURL = "/build/" + id + "/result"
		arts, sum, err := s.artifacts(r.Context(), id)
		if err != nil {
			s.log.Warn("read artifacts of result", "job", id, "err", err)
		}
		res.Artifacts, res.SHA256 = arts, sum
	} else if final != nil {
		res.Error, res.ErrorType = final.Error, final.ErrorType
	}
	b, _ := json.Marshal(struct {
		Type   string       `json:"type"`
		Result streamResult `json:"result"`
	}{"complete", res})
	sse.event(-1, b)
	_ = sse.flush()
}

// artifacts lists the result's artifacts as the job recorded them when
// it finished (jobs.Outcome.Artifacts), with the result's sha256.
func (s *Server) artifacts(ctx context.Context, id string) ([]streamArtifact, string, error) {
	job, err := s.svc.Get(ctx, id)
	if err != nil {
		return nil, "", err
	}
	out := make([]streamArtifact, 0, len(job.Artifacts))
	for _, a := range job.Artifacts {
		out = append(out, streamArtifact{Name: a.Name, SHA256: a.SHA256, Size: a.Size})
	}
	return out, job.ResultSHA256, nil
}
