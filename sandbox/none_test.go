package sandbox

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os/exec"
	"strings"
	"testing"
	"time"
)

var testEnv = []string{"PATH=/usr/bin:/bin", "LANG=C"}

func TestNoneRun(t *testing.T) {
	dir := t.TempDir()
	n := NewNone()
	var out bytes.Buffer
	err := n.Run(context.Background(), &Cmd{
		Args:   []string{"sh", "-c", `echo out; echo err >&2; echo "$FOO"; pwd; env | sort | grep -v '^PWD=' | wc -l`},
		Dir:    dir,
		Env:    append(testEnv, "FOO=bar"),
		Output: &out,
	})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	want := "out\nerr\nbar\n" + dir + "\n3\n"
	if out.String() != want {
		t.Errorf("output = %q, want %q", out.String(), want)
	}
}

func TestNoneExitError(t *testing.T) {
	n := NewNone()
	err := n.Run(context.Background(), &Cmd{Args: []string{"sh", "-c", "exit 3"}, Dir: t.TempDir(), Env: testEnv})
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("err = %v, want exit status 3", err)
	}
	err = n.Run(context.Background(), &Cmd{Args: []string{"no-such-command"}, Dir: t.TempDir(), Env: testEnv})
	if !errors.Is(err, exec.ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
}

func TestNoneWallLimitKillsTree(t *testing.T) {
	n := NewNone()
	start := time.Now()
	var out bytes.Buffer
	err := n.Run(context.Background(), &Cmd{
		Args:   []string{"sh", "-c", "sleep 1000 & sleep 1000; wait"},
		Dir:    t.TempDir(),
		Env:    testEnv,
		Output: &out,
		Limits: Limits{Wall: 300 * time.Millisecond},
	})
	if !errors.Is(err, ErrTimeLimit) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrTimeLimit", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
	if strings.Contains(err.Error(), "/") {
		t.Errorf("error %q names a path", err)
	}
}

func TestNoneCancel(t *testing.T) {
	n := NewNone()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := n.Run(ctx, &Cmd{Args: []string{"sleep", "1000"}, Dir: t.TempDir(), Env: testEnv})
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrTimeLimit) {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}
}

func TestNoneRlimits(t *testing.T) {
	n := NewNone(WithoutCgroups())
	var out bytes.Buffer
	err := n.Run(context.Background(), &Cmd{
		Args:   []string{"sh", "-c", "ulimit -t; ulimit -c; ulimit -f"},
		Dir:    t.TempDir(),
		Env:    testEnv,
		Output: &out,
		Limits: Limits{CPUTime: 5 * time.Second, FileSize: 1 << 20},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != "5\n0\n2048\n" {
		t.Errorf("limits = %q", got)
	}
}

// TestRlimitFallback: without cgroups, memory is bounded as address space and
// the command cannot allocate past it.
func TestRlimitFallback(t *testing.T) {
	n := NewNone(WithoutCgroups())
	var out bytes.Buffer
	err := n.Run(context.Background(), &Cmd{
		Args:   []string{"sh", "-c", "ulimit -v; head -c 1000000000 /dev/zero | tail -c 900000000 > /dev/null"},
		Dir:    t.TempDir(),
		Env:    testEnv,
		Output: &out,
		Limits: Limits{Memory: 256 << 20},
	})
	if err == nil || !strings.HasPrefix(out.String(), "262144\n") {
		t.Fatalf("err = %v, output %q", err, out.String())
	}
}

func TestDefaultLimits(t *testing.T) {
	d := DefaultLimits()
	if d.Memory <= 0 || d.Procs <= 0 || d.Disk <= 0 || d.FileSize <= 0 || d.Wall != 0 || d.CPUTime != 0 {
		t.Fatalf("DefaultLimits() = %+v", d)
	}
	r, err := New("none", WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := r.Run(context.Background(), &Cmd{Args: []string{"sh", "-c", "ulimit -f; ulimit -t"}, Dir: t.TempDir(), Env: testEnv, Output: &out,
		Limits: Limits{CPUTime: time.Hour}}); err != nil {
		t.Fatal(err)
	}
	// The default file size applies (in 512-byte blocks); the command's own
	// CPU limit wins over the default's none.
	if lines := strings.Fields(out.String()); len(lines) != 2 || lines[0] != "33554432" || lines[1] == "unlimited" {
		t.Fatalf("limits inside: %q", out.String())
	}
	r, _ = New("none", WithDefaultLimits(Limits{}), WithLogger(slog.New(slog.DiscardHandler)))
	out.Reset()
	_ = r.Run(context.Background(), &Cmd{Args: []string{"sh", "-c", "ulimit -f"}, Dir: t.TempDir(), Env: testEnv, Output: &out})
	if out.String() != "unlimited\n" {
		t.Fatalf("WithDefaultLimits(Limits{}): ulimit -f = %q", out.String())
	}
}

func TestNewModes(t *testing.T) {
	if _, err := New("chroot"); err == nil {
		t.Fatal("unknown mode accepted")
	}
	r, err := New("auto", WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewBwrap(); err == nil && r.Name() != "bwrap" {
		t.Fatalf("auto chose %s although bwrap works", r.Name())
	}
	if _, err := New("bwrap", WithBwrapPath("/nonexistent/bwrap")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("missing bwrap: err = %v", err)
	}
	for _, mode := range []string{"none", "auto"} {
		var logs bytes.Buffer
		r, err = New(mode, WithBwrapPath("/nonexistent/bwrap"), WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
		if err != nil || r.Name() != "none" {
			t.Fatalf("%s without bwrap: %v %v", mode, r, err)
		}
		if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "SANDBOX DISABLED") {
			t.Errorf("%s: no loud warning: %q", mode, logs.String())
		}
	}
}

func TestLimitsFromEnv(t *testing.T) {
	env := map[string]string{EnvMemory: "1.5GiB", EnvProcs: "300", EnvDisk: "0", EnvCPUTime: "90s", EnvFileSize: "64M", EnvWall: "1h"}
	l, err := LimitsFromEnv(Limits{Disk: 5, Memory: 7}, func(k string) string { return env[k] })
	want := Limits{Memory: 3 << 29, Procs: 300, CPUTime: 90 * time.Second, FileSize: 64 << 20, Wall: time.Hour}
	if err != nil || l != want {
		t.Fatalf("LimitsFromEnv = %+v, %v; want %+v", l, err, want)
	}
	for _, bad := range []map[string]string{{EnvMemory: "lots"}, {EnvProcs: "1.5"}, {EnvCPUTime: "10"}, {EnvDisk: "-1G"}} {
		if _, err := LimitsFromEnv(Limits{}, func(k string) string { return bad[k] }); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	t.Setenv(EnvFileSize, "1MiB")
	r, err := New("none", WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	_ = r.Run(context.Background(), &Cmd{Args: []string{"sh", "-c", "ulimit -f"}, Dir: t.TempDir(), Env: testEnv, Output: &out})
	if out.String() != "2048\n" {
		t.Fatalf("%s=1MiB: ulimit -f = %q", EnvFileSize, out.String())
	}
	t.Setenv(EnvFileSize, "big")
	if _, err := New("none", WithLogger(slog.New(slog.DiscardHandler))); err == nil {
		t.Fatal("bad environment accepted")
	}
}

// TestIsolated: only bubblewrap confines; what runs under None says so in
// its provenance, and Nix refuses it.
func TestIsolated(t *testing.T) {
	if Isolated(NewNone()) || Isolated(nil) {
		t.Error("None counted as isolated")
	}
	if Isolated(&Bwrap{}) != true {
		t.Error("Bwrap not counted as isolated")
	}
}
