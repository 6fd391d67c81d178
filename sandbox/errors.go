package sandbox

import (
	"context"
	"errors"
	"fmt"
)

// Sentinel errors for a command stopped by one of its Limits. Run wraps them
// in a *LimitError, so callers test with errors.Is.
var (
	ErrMemoryLimit   = errors.New("memory limit exceeded")
	ErrProcessLimit  = errors.New("process limit exceeded")
	ErrCPULimit      = errors.New("CPU time limit exceeded")
	ErrFileSizeLimit = errors.New("file size limit exceeded")
	ErrDiskLimit     = errors.New("disk usage limit exceeded")
	// ErrTimeLimit is the wall-clock limit. Its LimitError also matches
	// context.DeadlineExceeded, so failure.KindOf classifies it as Timeout.
	ErrTimeLimit = errors.New("wall-clock time limit exceeded")
)

// ErrUnavailable means the requested sandbox cannot run on this machine.
var ErrUnavailable = errors.New("sandbox unavailable")

// LimitError reports which limit stopped a command. Its message names the
// limit and its value and never a path, so it is safe to show a client.
type LimitError struct {
	Limit error  // one of the Err…Limit sentinels
	Value string // the configured limit, human-readable ("512 MiB", "10m0s")
	Err   error  // how the command ended (often *exec.ExitError), may be nil
}

func (e *LimitError) Error() string {
	if e.Value == "" {
		return e.Limit.Error()
	}
	return fmt.Sprintf("%s (%s)", e.Limit, e.Value)
}

// Unwrap exposes the sentinel and the underlying error.
func (e *LimitError) Unwrap() []error {
	errs := []error{e.Limit}
	if e.Limit == ErrTimeLimit {
		errs = append(errs, context.DeadlineExceeded)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}
