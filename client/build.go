package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/kettle-build/kettle/bundle"
	"github.com/kettle-build/kettle/events"
)

// Stage names the step of Build an error happened in.
type Stage string

// The steps of Build, in order.
const (
	StageSubmit Stage = "submit" // POST /build
	StageFollow Stage = "follow" // the event stream, up to `complete`
	StageBuild  Stage = "build"  // the build itself failed (ErrBuildFailed)
	StageFetch  Stage = "fetch"  // download and extraction of the result
)

// ErrBuildFailed is the error of a build that ran and failed; the
// Outcome's Build says how (ErrorType, Error).
var ErrBuildFailed = errors.New("the build failed")

// StageError is an error of Build, with the step it happened in. It
// unwraps to the cause, so errors.Is(err, ErrUnreachable) and the like
// work through it.
type StageError struct {
	Stage Stage
	Err   error
}

func (e *StageError) Error() string { return string(e.Stage) + ": " + e.Err.Error() }
func (e *StageError) Unwrap() error { return e.Err }

// LocalError is a failure on this machine (disk, permissions) while the
// result was written, not one of the server's.
type LocalError struct{ Err error }

func (e *LocalError) Error() string { return e.Err.Error() }
func (e *LocalError) Unwrap() error { return e.Err }

// Outcome is what Build did. It is returned with an error too, filled as
// far as Build got: Submission once the server accepted the job, Build
// once the build ended, Dir and SHA256 once the result was extracted.
type Outcome struct {
	Submission *Submission
	Build      *events.Result
	// Dir is the extracted result (absolute path), SHA256 the hex sha256
	// of the result tarball it came from.
	Dir    string
	SHA256 string
}

// BuildOption configures Build.
type BuildOption func(*buildConfig)

type buildConfig struct {
	out       string
	progress  func(sent int64)
	submitted func(*Submission)
	onEvent   func(i int, ev events.Event) error
	followed  func(*events.Result)
	notify    func(msg string)
	// resultWait bounds how long a result announced by `complete` may
	// take to become downloadable.
	resultTries int
	resultWait  time.Duration
}

// WithOutDir extracts the result's top directory to dir, which must not
// exist (its parent must) or be an empty directory (see CheckOutDir). By
// default it goes to ./<top>, or ./<top>-<job> when ./<top> exists.
func WithOutDir(dir string) BuildOption { return func(c *buildConfig) { c.out = dir } }

// WithUploadProgress calls fn as the source archive is read for upload
// with the bytes handed to the connection so far; a retried submission
// starts again from 0. fn runs on the uploading goroutine and must not
// block.
func WithUploadProgress(fn func(sent int64)) BuildOption {
	return func(c *buildConfig) { c.progress = fn }
}

// WithSubmitted calls fn once the server accepted the job, before its
// events are followed.
func WithSubmitted(fn func(*Submission)) BuildOption {
	return func(c *buildConfig) { c.submitted = fn }
}

// WithEvents calls fn with each event of the build, in order, exactly once
// (see Client.Events); an error from fn stops Build at StageFollow.
func WithEvents(fn func(i int, ev events.Event) error) BuildOption {
	return func(c *buildConfig) { c.onEvent = fn }
}

// WithFollowed calls fn when following the events ends, before anything
// is downloaded: with the build's result, or nil when following failed.
func WithFollowed(fn func(*events.Result)) BuildOption {
	return func(c *buildConfig) { c.followed = fn }
}

// WithNotify calls fn with notes for the user (a destination that exists,
// so the result goes elsewhere).
func WithNotify(fn func(msg string)) BuildOption { return func(c *buildConfig) { c.notify = fn } }

// Build is the whole remote workflow for req: submit it, follow the build's
// events to `complete`, download the result tarball (checked against the
// digest the server announces) and extract it safely (bundle.Extract).
// It does not verify the result: check Outcome.Dir with verify.Bundle,
// the nonce sent and, for an archive, Outcome.Submission.ArchiveSHA256.
// Errors are *StageError; a build that failed is ErrBuildFailed.
func (c *Client) Build(ctx context.Context, req Request, opts ...BuildOption) (*Outcome, error) {
	cfg := buildConfig{resultTries: 6, resultWait: time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	if req.Archive != nil && cfg.progress != nil {
		open, progress := req.Archive, cfg.progress
		req.Archive = func() (io.ReadCloser, error) {
			progress(0)
			rc, err := open()
			if err != nil {
				return nil, err
			}
			return &countingReader{ReadCloser: rc, fn: progress}, nil
		}
	}
	out := &Outcome{}
	sub, err := c.SubmitSource(ctx, req)
	if err != nil {
		return out, &StageError{StageSubmit, err}
	}
	out.Submission = sub
	if cfg.submitted != nil {
		cfg.submitted(sub)
	}
	fn := cfg.onEvent
	if fn == nil {
		fn = func(int, events.Event) error { return nil }
	}
	res, err := c.Events(ctx, sub.JobID, 0, fn)
	if cfg.followed != nil {
		cfg.followed(res)
	}
	if err != nil {
		return out, &StageError{StageFollow, err}
	}
	out.Build = res
	if res.Status != "ok" {
		return out, &StageError{StageBuild, ErrBuildFailed}
	}
	out.Dir, out.SHA256, err = c.fetchResult(ctx, sub.JobID, cfg)
	if err != nil {
		return out, &StageError{StageFetch, err}
	}
	return out, nil
}

// countingReader reports the archive bytes handed to the upload.
type countingReader struct {
	io.ReadCloser
	n  int64
	fn func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	if n > 0 {
		c.n += int64(n)
		c.fn(c.n)
	}
	return n, err
}

// CheckOutDir accepts a path that does not exist (in a directory that
// does) or is an empty directory: a result is never mixed with older
// files.
func CheckOutDir(p string) error {
	ents, err := os.ReadDir(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if _, err := os.Stat(filepath.Dir(filepath.Clean(p))); err != nil {
			return err
		}
		return nil
	case err != nil:
		return err
	case len(ents) > 0:
		return fmt.Errorf("%s exists and is not empty", p)
	}
	return nil
}

// fetchResult downloads the tarball next to the destination, extracts it
// safely and moves its top directory into place. It returns the result
// directory and the tarball's sha256.
func (c *Client) fetchResult(ctx context.Context, id string, cfg buildConfig) (string, string, error) {
	parent := "."
	if cfg.out != "" {
		parent = filepath.Dir(filepath.Clean(cfg.out))
	}
	tmp, err := os.MkdirTemp(parent, ".kettle-remote-")
	if err != nil {
		return "", "", &LocalError{err}
	}
	defer os.RemoveAll(tmp)
	var d *Downloaded
	for try := 1; ; try++ {
		d, err = c.DownloadFile(ctx, id, filepath.Join(tmp, "result.tar.gz"))
		// A server may announce `complete` a moment before the result is
		// downloadable; give it a few seconds.
		if err == nil || !errors.Is(err, ErrNotFound) || try >= cfg.resultTries {
			break
		}
		select {
		case <-ctx.Done():
			return "", "", ctx.Err()
		case <-time.After(cfg.resultWait):
		}
	}
	if err != nil {
		return "", "", err
	}
	f, err := os.Open(d.Path)
	if err != nil {
		return "", "", &LocalError{err}
	}
	defer f.Close()
	x := filepath.Join(tmp, "x")
	if err := os.Mkdir(x, 0o755); err != nil {
		return "", "", &LocalError{err}
	}
	top, err := bundle.Extract(f, x, bundle.Limits{})
	if err != nil {
		return "", "", fmt.Errorf("the result tarball is unsafe or corrupt: %w", err)
	}
	dest := cfg.out
	if dest == "" {
		dest = filepath.Base(top)
		if _, err := os.Lstat(dest); err == nil {
			alt := dest + "-" + shortID(id)
			if cfg.notify != nil {
				cfg.notify(fmt.Sprintf("%s exists; extracting to %s instead", dest, alt))
			}
			dest = alt
		}
	} else if err := CheckOutDir(dest); err != nil {
		return "", "", &LocalError{err}
	}
	if err := os.Rename(top, dest); err != nil {
		return "", "", &LocalError{err}
	}
	if abs, err := filepath.Abs(dest); err == nil {
		dest = abs
	}
	return dest, d.SHA256, nil
}

// shortID is the first 8 characters of a job id, as the CLI shows it.
func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
