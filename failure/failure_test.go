package failure

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestKindAndMessage(t *testing.T) {
	secret := errors.New("open /var/lib/kettle/work/job-1/src: permission denied")
	for _, tc := range []struct {
		name string
		err  error
		kind Kind
		msg  string
	}{
		{"classified", New(InvalidSource, "archive entry %q escapes the tree", "../x"), InvalidSource, `archive entry "../x" escapes the tree`},
		{"wrapped keeps the safe text", Wrap(BuildFailed, secret, "cargo build failed (exit status 101)"), BuildFailed, "cargo build failed (exit status 101)"},
		{"outermost wins", fmt.Errorf("run: %w", Wrap(DependencyFetchFailed, Wrap(InternalError, secret, "x"), "fetch failed")), DependencyFetchFailed, "fetch failed"},
		{"deadline", fmt.Errorf("build: %w", context.DeadlineExceeded), Timeout, "build timed out"},
		{"canceled", context.Canceled, Canceled, "build canceled"},
		{"unclassified hides details", secret, InternalError, "internal error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := KindOf(tc.err); got != tc.kind {
				t.Errorf("KindOf = %s, want %s", got, tc.kind)
			}
			if got := Message(tc.err); got != tc.msg {
				t.Errorf("Message = %q, want %q", got, tc.msg)
			}
		})
	}
	if Wrap(BuildFailed, nil, "x") != nil {
		t.Error("Wrap(nil) != nil")
	}
	if !errors.Is(Wrap(BuildFailed, secret, "x"), secret) {
		t.Error("Wrap does not unwrap to its cause")
	}
}

func TestLogShowsCause(t *testing.T) {
	cause := errors.New("open /srv/kettle/jobs/x: permission denied")
	err := fmt.Errorf("run: %w", Wrap(BuildFailed, cause, "build failed"))
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	log.Info("build failed", "cause", Detail(err), "direct", Wrap(InternalError, cause, "internal error"))
	out := buf.String()
	for _, want := range []string{`cause.error="run: build failed"`, "cause.kind=BuildFailed",
		`cause.cause="open /srv/kettle/jobs/x: permission denied"`, "direct.kind=InternalError",
		`direct.cause="open /srv/kettle/jobs/x: permission denied"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log line lacks %s:\n%s", want, out)
		}
	}
	if Message(err) != "build failed" {
		t.Errorf("client message = %q", Message(err))
	}
}

func TestExpired(t *testing.T) {
	live := context.Background()
	late, cancel := context.WithDeadline(live, time.Unix(1, 0))
	defer cancel()
	gone, stop := context.WithCancel(live)
	stop()
	plain := errors.New("signal: killed")
	fetch := Wrap(DependencyFetchFailed, context.DeadlineExceeded, "fetch failed")
	timeout := Wrap(Timeout, plain, "cargo build: build timed out")
	canceled := Wrap(Canceled, plain, "earlier cancel")
	for _, tc := range []struct {
		name string
		ctx  context.Context
		err  error
		kind Kind // "" = nil: the context's end does not explain it
		msg  string
	}{
		{"nil error", late, nil, "", ""},
		{"live context, plain error", live, plain, "", ""},
		{"live context, classified deadline kept", live, fetch, "", ""},
		{"own deadline", live, fmt.Errorf("x: %w", context.DeadlineExceeded), Timeout, "T"},
		{"own cancellation", live, context.Canceled, Canceled, "C"},
		{"deadline over another kind", late, Wrap(BuildFailed, plain, "build failed"), Timeout, "T"},
		{"deadline keeps a timeout", late, timeout, Timeout, "cargo build: build timed out"},
		{"deadline of a plain error", late, plain, Timeout, "T"},
		{"cancel of a plain error", gone, plain, Canceled, "C"},
		{"cancel keeps a classified error", gone, Wrap(BuildFailed, plain, "build failed"), "", ""},
		{"cancel keeps a cancel", gone, canceled, Canceled, "earlier cancel"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Expired(tc.ctx, tc.err, "T", "C")
			if tc.kind == "" {
				if got != nil {
					t.Fatalf("Expired = %v, want nil", got)
				}
				return
			}
			if got == nil || KindOf(got) != tc.kind || Message(got) != tc.msg {
				t.Fatalf("Expired = %v (%s), want %s %q", got, KindOf(got), tc.kind, tc.msg)
			}
			if !errors.Is(got, tc.err) {
				t.Error("the cause is lost")
			}
		})
	}
}
