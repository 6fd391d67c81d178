package sandbox

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kettle-build/kettle/internal/testenv"
)

// BenchmarkCargoSandboxOverhead is issue 7.4: the same `cargo build --locked
// --release --offline` of testdata/honest, bare (os/exec) and through Bwrap
// with production-style limits, alternating in one run so both see the same
// machine load. It reports the median wall and CPU time of each and their
// ratios (budget ≤ 1.03).
//
//	go test -run '^$' -bench CargoSandboxOverhead -benchtime 5x ./sandbox
//
// KETTLE_HONEST_SIZE (default 50) sets how much code the project generates.
func BenchmarkCargoSandboxOverhead(b *testing.B) {
	// Account CPU in a cgroup around this whole process, made before the
	// runner so the runner's command groups nest inside it: then both
	// builds, the sandbox machinery and this process's polling are counted
	// alike (rusage misses what runs in bwrap's pid namespace).
	acct := benchCPUGroup(b)
	bw, err := NewBwrap()
	testenv.Need(b, err == nil, fmt.Sprintf("bubblewrap is unavailable: %v", err))
	w, err := os.MkdirTemp("/var/tmp", "kettle-sandbox-bench-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(w)
	home, _ := os.UserHomeDir()
	size := os.Getenv("KETTLE_HONEST_SIZE")
	if size == "" {
		size = "50"
	}
	env := []string{
		"PATH=" + filepath.Join(home, ".cargo", "bin") + ":/usr/local/bin:/usr/bin:/bin",
		"HOME=/nonexistent",
		"RUSTUP_HOME=" + filepath.Join(home, ".rustup"),
		"CARGO_HOME=" + filepath.Join(w, "cargo-home"),
		"CARGO_TERM_COLOR=never",
		"CARGO_INCREMENTAL=0",
		"KETTLE_HONEST_SIZE=" + size,
	}
	cargo, err := lookPath("cargo", env, "/")
	if err != nil {
		testenv.Need(b, false, "cargo is not installed")
	}
	if err := os.MkdirAll(filepath.Join(w, "cargo-home"), 0o755); err != nil {
		b.Fatal(err)
	}
	args := []string{"cargo", "build", "--locked", "--release", "--offline"}
	limits := Limits{Memory: 4 << 30, Procs: 1024, CPUTime: time.Hour, FileSize: 4 << 30, Disk: 16 << 30, Wall: time.Hour}

	fresh := func(name string) string {
		dir := filepath.Join(w, name)
		os.RemoveAll(dir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		copyProjectB(b, filepath.Join("testdata", "honest"), dir)
		return dir
	}
	// CPU time (user+sys) of this process and its reaped descendants: on a
	// shared machine wall time mostly measures the neighbours, CPU time
	// measures the work (including the sandbox's own: bwrap, the disk and
	// cgroup polling done in this process).
	cpuNow := func() time.Duration {
		if acct != "" {
			if v, err := os.ReadFile(filepath.Join(acct, "cpuacct.usage")); err == nil {
				n, _ := strconv.ParseInt(strings.TrimSpace(string(v)), 10, 64)
				return time.Duration(n)
			}
		}
		var self, kids syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
		_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids)
		tv := func(t syscall.Timeval) time.Duration { return time.Duration(t.Nano()) }
		return tv(self.Utime) + tv(self.Stime) + tv(kids.Utime) + tv(kids.Stime)
	}
	var bareCPU, bwCPU []time.Duration
	bare := func() time.Duration {
		dir := fresh("bare")
		var out bytes.Buffer
		cmd := exec.Command(cargo, args[1:]...)
		cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = dir, env, &out, &out
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		start, cpu := time.Now(), cpuNow()
		if err := cmd.Run(); err != nil {
			b.Fatalf("bare build: %v\n%s", err, out.String())
		}
		bareCPU = append(bareCPU, cpuNow()-cpu)
		return time.Since(start)
	}
	sandboxed := func() time.Duration {
		dir := fresh("bwrap")
		var out bytes.Buffer
		start, cpu := time.Now(), cpuNow()
		err := bw.Run(context.Background(), &Cmd{Args: args, Dir: dir, Env: env, Output: &out,
			ReadOnly: []string{filepath.Join(w, "cargo-home")}, Limits: limits})
		if err != nil {
			b.Fatalf("bwrap build: %v\n%s", err, out.String())
		}
		bwCPU = append(bwCPU, cpuNow()-cpu)
		return time.Since(start)
	}
	var bareT, bwT []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Alternate which goes first, so neither always gets a warmer cache.
		if i%2 == 0 {
			bareT = append(bareT, bare())
			bwT = append(bwT, sandboxed())
		} else {
			bwT = append(bwT, sandboxed())
			bareT = append(bareT, bare())
		}
	}
	b.StopTimer()
	mb, ms := median(bareT), median(bwT)
	cb, cs := median(bareCPU), median(bwCPU)
	b.ReportMetric(mb.Seconds(), "bare-s")
	b.ReportMetric(ms.Seconds(), "bwrap-s")
	b.ReportMetric(ms.Seconds()/mb.Seconds(), "ratio")
	b.ReportMetric(cb.Seconds(), "bare-cpu-s")
	b.ReportMetric(cs.Seconds(), "bwrap-cpu-s")
	b.ReportMetric(cs.Seconds()/cb.Seconds(), "cpu-ratio")
	b.Logf("wall: bare %v, bwrap %v (runs: bare %v, bwrap %v)", mb, ms, bareT, bwT)
	b.Logf("cpu:  bare %v, bwrap %v (runs: bare %v, bwrap %v)", cb, cs, bareCPU, bwCPU)
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// BenchmarkBwrapTrue is the fixed cost of one sandboxed command.
func BenchmarkBwrapTrue(b *testing.B) {
	bw, err := NewBwrap()
	testenv.Need(b, err == nil, fmt.Sprintf("bubblewrap is unavailable: %v", err))
	dir := b.TempDir()
	c := &Cmd{Args: []string{"true"}, Dir: dir, Env: testEnv, Limits: Limits{Memory: 1 << 30, Procs: 64, Disk: 1 << 30, Wall: time.Minute}}
	cpu := cpuTotal()
	for i := 0; i < b.N; i++ {
		if err := bw.Run(context.Background(), c); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64((cpuTotal()-cpu).Microseconds())/1000/float64(b.N), "cpu-ms/op")
}

// benchCPUGroup moves this process into a new cgroup v1 cpuacct group and
// returns its directory ("" where that is not possible); undone at cleanup.
func benchCPUGroup(b *testing.B) string {
	self, err := readSelfCgroups("/proc/self/cgroup")
	if err != nil {
		return ""
	}
	parent := filepath.Join("/sys/fs/cgroup/cpuacct", self["cpuacct"])
	if _, err := os.Stat(filepath.Join(parent, "cpuacct.usage")); err != nil {
		return ""
	}
	dir := filepath.Join(parent, "kettle-bench-"+strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return ""
	}
	if err := writeFile(filepath.Join(dir, "cgroup.procs"), strconv.Itoa(os.Getpid())); err != nil {
		os.Remove(dir)
		return ""
	}
	b.Cleanup(func() {
		_ = writeFile(filepath.Join(parent, "cgroup.procs"), strconv.Itoa(os.Getpid()))
		os.Remove(filepath.Join(dir, "kettle-sandbox")) // the runner's base, nested here
		os.Remove(dir)
	})
	return dir
}

// BenchmarkBwrapTrueNetwork is the fixed cost of one fetch-phase command:
// BenchmarkBwrapTrue plus its own network namespace and the egress proxy.
func BenchmarkBwrapTrueNetwork(b *testing.B) {
	bw, err := NewBwrap()
	if err != nil {
		b.Skipf("bubblewrap unavailable: %v", err)
	}
	dir := b.TempDir()
	c := &Cmd{Args: []string{"true"}, Dir: dir, Env: testEnv, Network: true, Limits: Limits{Memory: 1 << 30, Procs: 64, Disk: 1 << 30, Wall: time.Minute}}
	cpu := cpuTotal()
	for i := 0; i < b.N; i++ {
		if err := bw.Run(context.Background(), c); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64((cpuTotal()-cpu).Microseconds())/1000/float64(b.N), "cpu-ms/op")
}

// cpuTotal is the CPU time of this process and its waited-for children
// (bubblewrap, setpriv and the command): what one sandboxed command costs
// the machine, less noisy than wall time on a loaded host.
func cpuTotal() time.Duration {
	var self, kids syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids)
	tv := func(t syscall.Timeval) time.Duration { return time.Duration(t.Nano()) }
	return tv(self.Utime) + tv(self.Stime) + tv(kids.Utime) + tv(kids.Stime)
}
