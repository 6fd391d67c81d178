package sandbox

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kettle-build/kettle/internal/testenv"
)

// runners returns every runner that works here, by name.
func runners(t *testing.T) map[string]Runner {
	t.Helper()
	rs := map[string]Runner{"none": NewNone(WithPollInterval(50 * time.Millisecond))}
	if b, err := NewBwrap(WithPollInterval(50 * time.Millisecond)); err == nil {
		rs["bwrap"] = b
	} else {
		t.Logf("bwrap unavailable: %v", err)
	}
	return rs
}

func cgroupsFor(r Runner) *cgroups {
	switch r := r.(type) {
	case *None:
		return r.cgs
	case *Bwrap:
		return r.cgs
	}
	return nil
}

// TestLimits runs a small offender per limit under each runner: each must be
// stopped by its limit and reported with its sentinel.
func TestLimits(t *testing.T) {
	tests := []struct {
		name   string
		script string
		limits Limits
		want   error
		needs  string // "memory" or "pids": a cgroup controller the test relies on
	}{
		{"wall", "sleep 1000", Limits{Wall: 300 * time.Millisecond}, ErrTimeLimit, ""},
		{"wall kills background", "sleep 1000 & sleep 1000 & wait", Limits{Wall: 300 * time.Millisecond}, ErrTimeLimit, ""},
		{"cpu", "while :; do :; done", Limits{CPUTime: time.Second}, ErrCPULimit, ""},
		{"file size", "head -c 100000000 /dev/zero > big", Limits{FileSize: 1 << 20}, ErrFileSizeLimit, ""},
		{"disk", "i=0; while :; do head -c 1048576 /dev/zero > f$i || exit 1; i=$((i+1)); done",
			Limits{Disk: 16 << 20}, ErrDiskLimit, ""},
		// Sparse files cost no blocks but their full size wherever they
		// are copied (sparse-artifact-disk-amplification): apparent size counts.
		{"disk sparse", "i=0; while :; do truncate -s 8M s$i || exit 1; i=$((i+1)); sleep 0.05; done",
			Limits{Disk: 16 << 20, FileSize: 1 << 30}, ErrDiskLimit, ""},
		{"disk sparse at once", "truncate -s 1G s0 && truncate -s 1G s1 && truncate -s 1G s2",
			Limits{Disk: 16 << 20, FileSize: 2 << 30}, ErrDiskLimit, ""},
		// Preallocated blocks beyond the apparent size count too.
		{"disk preallocated", "i=0; while :; do : > p$i && fallocate -n -l 8M p$i || exit 1; i=$((i+1)); sleep 0.05; done",
			Limits{Disk: 16 << 20}, ErrDiskLimit, ""},
		{"memory", "head -c 1000000000 /dev/zero | tail -c 900000000 > /dev/null", Limits{Memory: 64 << 20}, ErrMemoryLimit, "memory"},
		{"processes", "for i in $(seq 100); do sleep 100 & done; wait", Limits{Procs: 16}, ErrProcessLimit, "pids"},
	}
	for name, r := range runners(t) {
		cg := cgroupsFor(r)
		for _, tc := range tests {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				switch {
				case tc.needs == "memory" && (cg == nil || cg.memory == ""):
					testenv.Capability(t, false, "no memory cgroup: memory is bounded as address space, not classified")
				case tc.needs == "pids" && (cg == nil || cg.pids == ""):
					testenv.Capability(t, false, "no pids cgroup: processes are bounded by RLIMIT_NPROC, not classified")
				}
				dir := t.TempDir()
				var out bytes.Buffer
				start := time.Now()
				err := r.Run(context.Background(), &Cmd{
					Args:   []string{"sh", "-c", tc.script},
					Dir:    dir,
					Env:    testEnv,
					Output: &out,
					Limits: tc.limits,
				})
				if !errors.Is(err, tc.want) {
					t.Fatalf("err = %v, want %v\noutput: %s", err, tc.want, out.String())
				}
				var le *LimitError
				if !errors.As(err, &le) || strings.Contains(le.Error(), "/") {
					t.Errorf("error %q: want a *LimitError naming no path", err)
				}
				t.Logf("%s: %v after %v", name, err, time.Since(start).Round(time.Millisecond))
			})
		}
	}
}

// TestLimitsLeaveHonestAlone: the same limits do not disturb a command that
// stays within them.
func TestLimitsLeaveHonestAlone(t *testing.T) {
	for name, r := range runners(t) {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			var out bytes.Buffer
			err := r.Run(context.Background(), &Cmd{
				Args:   []string{"sh", "-c", "head -c 1000000 /dev/zero > f; for i in 1 2 3; do sleep 0.01 & done; wait; cat f | wc -c"},
				Dir:    dir,
				Env:    testEnv,
				Output: &out,
				Limits: Limits{Memory: 256 << 20, Procs: 64, CPUTime: 10 * time.Second, FileSize: 2 << 20, Disk: 8 << 20, Wall: time.Minute},
			})
			if err != nil || strings.TrimSpace(out.String()) != "1000000" {
				t.Fatalf("err = %v, output %q", err, out.String())
			}
		})
	}
}

// TestLimitsNotOnServer: limits apply to the command, never to this process.
func TestLimitsNotOnServer(t *testing.T) {
	var before, after [4]string
	read := func(dst *[4]string) {
		b, _ := os.ReadFile("/proc/self/limits")
		for i, key := range []string{"Max cpu time", "Max file size", "Max address space", "Max processes"} {
			for _, line := range strings.Split(string(b), "\n") {
				if strings.HasPrefix(line, key) {
					dst[i] = line
				}
			}
		}
	}
	read(&before)
	for _, r := range runners(t) {
		_ = r.Run(context.Background(), &Cmd{Args: []string{"true"}, Dir: t.TempDir(), Env: testEnv,
			Limits: Limits{Memory: 64 << 20, Procs: 8, CPUTime: time.Second, FileSize: 1 << 20}})
	}
	read(&after)
	if before != after {
		t.Fatalf("server limits changed: %q → %q", before, after)
	}
}

// TestMemoryPerWorker: the default memory limit leaves headroom and divides
// the rest between the workers.
func TestMemoryPerWorker(t *testing.T) {
	for _, tc := range []struct {
		ram     int64
		workers int
		want    int64
	}{
		{24 << 30, 1, 21 << 30}, // headroom 3 GiB (RAM/8)
		{24 << 30, 4, 21 << 30 / 4},
		{64 << 30, 2, 30 << 30},  // headroom capped at 4 GiB
		{4 << 30, 1, 3 << 30},    // headroom at least 1 GiB
		{2 << 30, 16, 256 << 20}, // never below 256 MiB
		{24 << 30, 0, 21 << 30},  // 0 workers counts as 1
	} {
		got := memoryPerWorker(tc.ram, tc.workers)
		if got != tc.want {
			t.Errorf("memoryPerWorker(%d GiB, %d) = %d, want %d", tc.ram>>30, tc.workers, got, tc.want)
		}
		if int64(tc.workers)*got > tc.ram-(1<<30) && got > 256<<20 {
			t.Errorf("%d workers at %d bytes leave the host less than 1 GiB", tc.workers, got)
		}
	}
}
