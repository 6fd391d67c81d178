package client

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
	"net/http"
	"net/http/httptrace"
	"sync"
)

// Request is a build submission (POST /build, JSON). Exactly one of RepoURL
// and Archive is set.
type Request struct {
	// Nonce is bound into the evidence; 1-16 bytes (send 16 random bytes).
	Nonce []byte
	// RepoURL and RepoRef name a git source; RepoRef may be empty (HEAD).
	RepoURL, RepoRef string
	// Archive opens the source archive (ZIP or gzip tarball). It is called
	// once per attempt, so a retried submission re-reads it from the start;
	// the archive is streamed as base64, never held in memory.
	Archive func() (io.ReadCloser, error)
	// SourceName is the archive's file name; it names the result's top
	// directory when the archive has none.
	SourceName string
}

// Submission is an accepted build request.
type Submission struct {
	JobID string
	// ArchiveSHA256 (hex) and ArchiveSize describe the archive bytes the
	// accepted request carried, hashed as they were sent; empty for a
	// repository source. An honest build's provenance names this digest
	// (externalParameters.source.digest.sha256): check it
	// (verify.WithSourceSHA256), or a server can attest another source.
	ArchiveSHA256 string
	ArchiveSize   int64
}

// Submit sends req and returns the new job's id. It is retried only when
// the server cannot have accepted it: the connection was refused (nothing
// was sent) or the server answered 503/429 (queue full) with Retry-After.
func (c *Client) Submit(ctx context.Context, req Request) (string, error) {
	s, err := c.SubmitSource(ctx, req)
	if err != nil {
		return "", err
	}
	return s.JobID, nil
}

// SubmitSource is Submit that also returns the digest of the archive
// uploaded, for binding the result to it.
func (c *Client) SubmitSource(ctx context.Context, req Request) (*Submission, error) {
	if len(req.Nonce) == 0 || len(req.Nonce) > 16 {
		return nil, fmt.Errorf("submit: nonce must be 1-16 bytes, got %d", len(req.Nonce))
	}
	if (req.RepoURL == "") == (req.Archive == nil) {
		return nil, errors.New("submit: exactly one of RepoURL or Archive is required")
	}
	var sub *Submission
	err := c.retry(ctx, "submit", func() (bool, error) {
		var err error
		sub, err = c.submitOnce(ctx, req)
		return false, err
	}, submitRetryable)
	if err != nil {
		return nil, fmt.Errorf("submit: %w", err)
	}
	return sub, nil
}

// submitRetryable: a refused connection carried nothing; 503 and 429 with
// Retry-After say "not accepted, come back" (docs/api.md: queue full).
func submitRetryable(err error) bool {
	if errors.Is(err, errNotSent) {
		return true
	}
	var he *HTTPError
	if errors.As(err, &he) {
		return (he.StatusCode == http.StatusServiceUnavailable || he.StatusCode == http.StatusTooManyRequests) && he.RetryAfter > 0
	}
	return false
}

// errNotSent marks a transport error that happened before any connection
// was made.
var errNotSent = errors.New("request not sent")

type notSent struct{ err error }

func (n notSent) Error() string   { return n.err.Error() }
func (n notSent) Unwrap() []error { return []error{n.err, errNotSent} }

func (c *Client) submitOnce(ctx context.Context, r Request) (*Submission, error) {
	var sum archiveSum
	body, contentLength, finish, err := requestBody(ctx, r, &sum)
	if err != nil {
		return nil, err
	}
	req, err := c.newRequest(ctx, http.MethodPost, c.url("/build", nil), body)
	if err != nil {
		finish(nil)
		return nil, err
	}
	req.ContentLength = contentLength
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	var (
		mu        sync.Mutex
		connected bool
	)
	trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { mu.Lock(); connected = true; mu.Unlock() }}
	req = req.WithContext(httptrace.WithClientTrace(ctx, trace))
	resp, err := c.do(req)
	// An error of the archive itself (a file vanished while packing) beats
	// the transport's "body write failed".
	if perr := finish(err); perr != nil {
		if resp != nil {
			resp.Body.Close()
		}
		return nil, perr
	}
	if err != nil {
		mu.Lock()
		sent := connected
		mu.Unlock()
		err = c.netError(err)
		if !sent && isDialError(err) {
			return nil, notSent{err}
		}
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return nil, readError(resp)
	}
	defer resp.Body.Close()
	var out struct {
		JobID string `json:"job_id"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&out); err != nil || out.JobID == "" {
		return nil, fmt.Errorf("%w: POST /build answered %d without a job_id", ErrProtocol, resp.StatusCode)
	}
	sub := &Submission{JobID: out.JobID}
	if r.Archive != nil {
		// A server that accepts before it has read the whole archive
		// cannot be building what we sent.
		if !sum.complete {
			return nil, fmt.Errorf("%w: POST /build accepted the job before receiving the whole source archive", ErrProtocol)
		}
		sub.ArchiveSHA256, sub.ArchiveSize = sum.sha256, sum.size
	}
	return sub, nil
}

// archiveSum is the digest of the archive bytes written into one request
// body; complete once the archive's end was written (io.Pipe hands each
// write to the transport, so the server was sent every byte).
type archiveSum struct {
	sha256   string
	size     int64
	complete bool
}

// requestBody returns the JSON body. An archive is streamed through a pipe:
// `{"nonce":…,"source_name":…,"source_data":"<base64>"}`. finish(err) waits
// for the writer and returns the archive's own error, if any; sum is
// filled before finish returns.
func requestBody(ctx context.Context, r Request, sum *archiveSum) (io.Reader, int64, func(error) error, error) {
	nonce := hex.EncodeToString(r.Nonce)
	if r.Archive == nil {
		b, err := json.Marshal(struct {
			Nonce   string `json:"nonce"`
			RepoURL string `json:"repo_url"`
			RepoRef string `json:"repo_ref,omitempty"`
		}{nonce, r.RepoURL, r.RepoRef})
		if err != nil {
			return nil, 0, nil, err
		}
		return bytes.NewReader(b), int64(len(b)), func(error) error { return nil }, nil
	}
	src, err := r.Archive()
	if err != nil {
		return nil, 0, nil, fmt.Errorf("open source archive: %w", err)
	}
	head, err := json.Marshal(struct {
		Nonce      string `json:"nonce"`
		SourceName string `json:"source_name,omitempty"`
	}{nonce, r.SourceName})
	if err != nil {
		src.Close()
		return nil, 0, nil, err
	}
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := writeArchiveJSON(ctx, pw, head, src, sum)
		src.Close()
		pw.CloseWithError(err)
		done <- err
	}()
	finish := func(transportErr error) error {
		// Unblock the writer if the transport stopped reading early (an
		// early 413, a dropped connection).
		pr.CloseWithError(errBodyAbandoned)
		err := <-done
		if err == nil || errors.Is(err, errBodyAbandoned) || errors.Is(err, io.ErrClosedPipe) {
			return nil
		}
		return fmt.Errorf("read source archive: %w", err)
	}
	return pr, -1, finish, nil
}

var errBodyAbandoned = errors.New("request body abandoned")

func writeArchiveJSON(ctx context.Context, w io.Writer, head []byte, src io.Reader, sum *archiveSum) error {
	// head is `{"nonce":"…",…}`: reopen it to append source_data.
	if _, err := w.Write(head[:len(head)-1]); err != nil {
		return err
	}
	if _, err := io.WriteString(w, `,"source_data":"`); err != nil {
		return err
	}
	enc := base64.NewEncoder(base64.StdEncoding, w)
	h := sha256.New()
	var size int64
	buf := make([]byte, 96<<10) // a multiple of 3: no padding mid-stream
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, rerr := io.ReadFull(src, buf)
		if n > 0 {
			if _, err := enc.Write(buf[:n]); err != nil {
				return err
			}
			h.Write(buf[:n])
			size += int64(n)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return &archiveError{rerr}
		}
	}
	if err := enc.Close(); err != nil {
		return err
	}
	if _, err := io.WriteString(w, `"}`); err != nil {
		return err
	}
	sum.sha256, sum.size, sum.complete = hex.EncodeToString(h.Sum(nil)), size, true
	return nil
}

// archiveError marks a failure of the archive reader, as opposed to the
// pipe's reader going away.
type archiveError struct{ err error }

func (e *archiveError) Error() string { return e.err.Error() }
func (e *archiveError) Unwrap() error { return e.err }
