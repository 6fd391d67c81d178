package sandbox

import (
	"bytes"
	"context"
	"errors"
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
