// Package failure classifies why a build failed. Every error that ends a
// build carries a Kind (docs/api.md's error_type) and a message that is safe to
// show a client: it never contains a server path or a secret.
package failure

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
)

// Kind is a build's error_type.
type Kind string

// The error types of docs/api.md.
const (
	InvalidSource         Kind = "InvalidSource"
	UnsupportedToolchain  Kind = "UnsupportedToolchain"
	DependencyFetchFailed Kind = "DependencyFetchFailed"
	BuildFailed           Kind = "BuildFailed"
	NoArtifacts           Kind = "NoArtifacts"
	AttestationFailed     Kind = "AttestationFailed"
	Timeout               Kind = "Timeout"
	Canceled              Kind = "Canceled"
	Interrupted           Kind = "Interrupted"
	InternalError         Kind = "InternalError"
	// LimitExceeded: the job went over one of its budgets (the message
	// names the limit and the flag that sets it).
	LimitExceeded Kind = "LimitExceeded"
)

// Error is a classified build failure. Msg is shown to clients; Err (which may
// name server paths) is only logged.
type Error struct {
	Kind Kind
	Msg  string
	Err  error
}

func (e *Error) Error() string {
	if e.Err != nil && e.Msg == "" {
		return e.Err.Error()
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// New returns a classified error with a client-safe message.
func New(kind Kind, format string, args ...any) error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// Wrap classifies err; msg is the client-safe summary.
func Wrap(kind Kind, err error, msg string) error {
	if err == nil {
		return nil
	}
	return &Error{Kind: kind, Msg: msg, Err: err}
}

// KindOf returns the kind of the outermost classified error in err's chain;
// context expiry maps to Timeout/Canceled and anything else to InternalError.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return Timeout
	case errors.Is(err, context.Canceled):
		return Canceled
	}
	return InternalError
}

// Expired classifies an error that the end of ctx, or a deadline of the
// error's own, explains; it is the one place a context's end becomes a
// Timeout or Canceled. ctx's deadline makes a Timeout over any other kind
// (the step failed because its time ran out); ctx's cancellation makes a
// Canceled of an unclassified error, as does an unclassified error that
// is itself a deadline or a cancellation. An error already of the kind is
// returned as it is. timedOut and canceled are the client messages. It
// returns nil when none of this applies (or err is nil).
func Expired(ctx context.Context, err error, timedOut, canceled string) error {
	if err == nil {
		return nil
	}
	var e *Error
	classified := errors.As(err, &e)
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		if classified && e.Kind == Timeout {
			return err
		}
		return Wrap(Timeout, err, timedOut)
	case classified:
		if ctx.Err() != nil && e.Kind == Canceled {
			return err
		}
		return nil
	case errors.Is(err, context.DeadlineExceeded):
		return Wrap(Timeout, err, timedOut)
	case ctx.Err() != nil, errors.Is(err, context.Canceled):
		return Wrap(Canceled, err, canceled)
	}
	return nil
}

// Message returns the client-safe message of err: the Msg of the outermost
// classified error, or a generic text for unclassified ones (whose text may
// leak server details).
func Message(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Error()
	}
	switch KindOf(err) {
	case Timeout:
		return "build timed out"
	case Canceled:
		return "build canceled"
	}
	return "internal error"
}

// LogValue gives operators what clients never see: the kind, the client
// message and the cause behind it (which may name server paths).
func (e *Error) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("kind", string(e.Kind)), slog.String("msg", e.Msg)}
	if e.Err != nil {
		attrs = append(attrs, slog.String("cause", e.Err.Error()))
	}
	return slog.GroupValue(attrs...)
}

// Detail is err for a log line: its whole text plus the hidden cause of its
// outermost classified error, which err.Error() leaves out on purpose.
func Detail(err error) slog.LogValuer { return detail{err} }

type detail struct{ err error }

func (d detail) LogValue() slog.Value {
	if d.err == nil {
		return slog.StringValue("")
	}
	var e *Error
	if errors.As(d.err, &e) && e.Err != nil && e.Msg != "" {
		return slog.GroupValue(slog.String("error", d.err.Error()), slog.String("kind", string(e.Kind)),
			slog.String("cause", e.Err.Error()))
	}
	return slog.StringValue(d.err.Error())
}
