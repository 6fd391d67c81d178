package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"mime"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Job states (GET /build/{id}).
const (
	StatusQueued    = "queued"
	StatusRunning   = "running"
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed"
)

// Source is where a job's code comes from.
type Source struct {
	URL           string `json:"url,omitempty"`
	Ref           string `json:"ref,omitempty"`
	ArchiveName   string `json:"archive_name,omitempty"`
	ArchiveSHA256 string `json:"archive_sha256,omitempty"`
	ArchiveSize   int64  `json:"archive_size,omitempty"`
}

// Status is a job's state as GET /build/{id} reports it (null fields are
// zero values here).
type Status struct {
	JobID        string     `json:"job_id"`
	Status       string     `json:"status"`
	Position     *int       `json:"position"`
	CreatedAt    time.Time  `json:"created_at"`
	StartedAt    *time.Time `json:"started_at"`
	FinishedAt   *time.Time `json:"finished_at"`
	Toolchain    string     `json:"toolchain"`
	Source       Source     `json:"source"`
	Error        string     `json:"error"`
	ErrorType    string     `json:"error_type"`
	ResultSHA256 string     `json:"result_sha256"`
}

// Status returns the state of job id.
func (c *Client) Status(ctx context.Context, id string) (*Status, error) {
	resp, err := c.get(ctx, "status", c.url("/build/"+url.PathEscape(id), nil), nil)
	if err != nil {
		return nil, fmt.Errorf("status of %s: %w", id, err)
	}
	defer resp.Body.Close()
	var s Status
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&s); err != nil {
		return nil, fmt.Errorf("status of %s: %w: %v", id, ErrProtocol, err)
	}
	return &s, nil
}

// Result is a result tarball being downloaded.
type Result struct {
	Body   io.ReadCloser
	Name   string // `<top>.tar.gz` from Content-Disposition (a bare file name), or ""
	Size   int64  // -1 when unknown
	SHA256 string // hex, as announced by the server, or ""
}

// Result starts downloading the result tarball of job id. The caller closes
// Body. Only the request is retried; see DownloadFile for a download that
// survives a dropped connection.
func (c *Client) Result(ctx context.Context, id string) (*Result, error) {
	resp, err := c.get(ctx, "result", c.url("/build/"+url.PathEscape(id)+"/result", nil), nil)
	if err != nil {
		return nil, fmt.Errorf("result of %s: %w", id, err)
	}
	r := &Result{Body: resp.Body, Size: resp.ContentLength, Name: attachmentName(resp.Header.Get("Content-Disposition"))}
	r.SHA256 = strings.ToLower(strings.TrimSpace(resp.Header.Get("X-Kettle-Result-SHA256")))
	if r.SHA256 == "" {
		if et, ok := strings.CutPrefix(strings.Trim(resp.Header.Get("ETag"), `"`), "sha256:"); ok {
			r.SHA256 = strings.ToLower(et)
		}
	}
	if b, err := hex.DecodeString(r.SHA256); err != nil || len(b) != sha256.Size {
		r.SHA256 = ""
	}
	return r, nil
}

// attachmentName returns a safe bare file name from Content-Disposition.
func attachmentName(cd string) string {
	_, params, err := mime.ParseMediaType(cd)
	if err != nil {
		return ""
	}
	name := params["filename"]
	name = name[strings.LastIndexAny(name, `/\`)+1:]
	if name == "" || name == "." || name == ".." || strings.HasPrefix(name, ".") ||
		strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return ""
	}
	return name
}

// Downloaded describes a finished DownloadFile.
type Downloaded struct {
	Path   string
	Name   string // the server's file name for it, or ""
	Size   int64
	SHA256 string // hex, computed while downloading
}

// DownloadFile downloads the result tarball of job id to path (written to
// a temporary file beside it, then renamed). The bytes are checked against
// the length and sha256 the server announces; a download cut off by a
// dropped connection starts again.
func (c *Client) DownloadFile(ctx context.Context, id, path string) (*Downloaded, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	var out *Downloaded
	err := c.retry(ctx, "result", func() (bool, error) {
		r, err := c.Result(ctx, id)
		if err != nil {
			return false, err
		}
		defer r.Body.Close()
		f, err := os.CreateTemp(dir, "."+base+".part-*")
		if err != nil {
			return false, errPermanent{err}
		}
		tmp := f.Name()
		d, err := copyChecked(writerOnly{f}, r)
		if cerr := f.Close(); err == nil && cerr != nil {
			err = errPermanent{cerr}
		}
		if err == nil {
			err = os.Rename(tmp, path)
			if err != nil {
				err = errPermanent{err}
			}
		}
		if err != nil {
			os.Remove(tmp)
			return d.Size > 0, err
		}
		d.Path = path
		out = d
		return true, nil
	}, func(err error) bool {
		var p errPermanent
		return !errors.As(err, &p) && transient(err)
	})
	if err != nil {
		var p errPermanent
		if errors.As(err, &p) {
			err = p.err
		}
		return nil, fmt.Errorf("download result of %s: %w", id, err)
	}
	return out, nil
}

// errPermanent marks a local error that retrying cannot fix.
type errPermanent struct{ err error }

func (e errPermanent) Error() string { return e.err.Error() }
func (e errPermanent) Unwrap() error { return e.err }

// copyChecked copies r.Body to w, hashing it, and checks the announced
// length and digest. A body cut short is transient (io.ErrUnexpectedEOF).
func copyChecked(w io.Writer, r *Result) (*Downloaded, error) {
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, h), r.Body)
	d := &Downloaded{Name: r.Name, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}
	if err != nil {
		var we writeError
		if errors.As(err, &we) {
			return d, errPermanent{err}
		}
		return d, fmt.Errorf("after %d bytes: %w", n, err)
	}
	return d, checkDigest(r, n, h)
}

func checkDigest(r *Result, n int64, h hash.Hash) error {
	if r.Size >= 0 && n != r.Size {
		return fmt.Errorf("got %d of %d bytes: %w", n, r.Size, io.ErrUnexpectedEOF)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); r.SHA256 != "" && sum != r.SHA256 {
		return fmt.Errorf("%w: sha256 %s, server announced %s", ErrIntegrity, sum, r.SHA256)
	}
	return nil
}

type writeError struct{ error }

func (e writeError) Unwrap() error { return e.error }

// CopyResult streams a result to w (a pipe, stdout) and checks its length
// and digest at the end; it cannot restart, so a cut is an error.
func CopyResult(w io.Writer, r *Result) (*Downloaded, error) {
	return copyChecked(writerOnly{w}, r)
}

type writerOnly struct{ w io.Writer }

func (w writerOnly) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	if err != nil {
		err = writeError{err}
	}
	return n, err
}
