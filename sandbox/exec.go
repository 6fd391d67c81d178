package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/kettle-build/kettle/internal/bytesize"
	"golang.org/x/sys/unix"
)

// proc is one process to start and supervise: the command itself (None) or
// bubblewrap running it (Bwrap).
type proc struct {
	path   string   // executable, absolute or relative to dir
	args   []string // argv
	env    []string
	dir    string
	out    io.Writer
	limits Limits
	watch  []string // writable directories: disk usage and file sizes
	// bwrap: an exit code 128+n means the sandboxed command died of signal n.
	bwrap bool
	name  string // command name for error messages
	// files are given to the process as descriptors 3, 4, … (pipes it
	// reads to the end).
	files []string
	// prepare runs on the OS thread that starts the process, before it
	// does; it may change that thread's namespaces (which the process then
	// inherits), so the thread is never handed back to other goroutines.
	prepare func() error
	// cred, when set, is the identity the process starts with.
	cred *syscall.Credential
}

// run starts p and waits for it, enforcing p.limits. How the limits apply:
//   - the process is started stopped (ptrace, stopping at its execve), put
//     into its own cgroups and given its rlimits before its first
//     instruction, so nothing it does escapes them, and the server's own
//     limits are untouched;
//   - memory and processes: cgroup memory and pids limits when available,
//     else RLIMIT_AS and RLIMIT_NPROC;
//   - CPU time: RLIMIT_CPU for each process, and the whole tree's total from
//     cgroup accounting where available;
//   - file size: RLIMIT_FSIZE; disk: the writable directories' usage is
//     polled and the command killed when it grows past the limit;
//   - wall clock: a timer; the whole process group and cgroup are killed.
func (cfg *config) run(ctx context.Context, cgs *cgroups, p *proc) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p.limits = withDefaults(p.limits, cfg.defaults)
	var g *cgroup
	if cgs != nil {
		var err error
		if g, err = cgs.create(p.limits); err != nil {
			return fmt.Errorf("sandbox: create cgroup: %w", err)
		}
		defer g.remove()
	}
	var baseline int64
	if p.limits.Disk > 0 {
		baseline, _ = diskUsage(p.watch)
	}

	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	defer pr.Close()
	out := p.out
	if out == nil {
		out = io.Discard
	}
	cmd := &exec.Cmd{
		Path:   p.path,
		Args:   p.args,
		Env:    append([]string{}, p.env...), // never nil: nil would inherit ours
		Dir:    p.dir,
		Stdout: pw,
		Stderr: pw,
		SysProcAttr: &syscall.SysProcAttr{
			Setpgid:    true,
			Pdeathsig:  syscall.SIGKILL, // the server dies, so does the build
			Ptrace:     true,            // stop at execve until limits are in place
			Credential: p.cred,
		},
	}
	for _, data := range p.files {
		r, w, err := os.Pipe()
		if err != nil {
			return fmt.Errorf("sandbox: %w", err)
		}
		// Small enough for the pipe buffer: the write cannot block.
		_, err = w.WriteString(data)
		w.Close()
		if err != nil {
			r.Close()
			return fmt.Errorf("sandbox: %w", err)
		}
		defer r.Close()
		cmd.ExtraFiles = append(cmd.ExtraFiles, r)
	}
	startc := make(chan error, 1)
	waitc := make(chan error, 1)
	go func() {
		// Ptrace requests must come from the thread that started the
		// child, and Pdeathsig fires when that thread exits: keep it until
		// the child is gone.
		runtime.LockOSThread()
		if p.prepare == nil {
			defer runtime.UnlockOSThread()
		} else if err := p.prepare(); err != nil {
			startc <- err
			return
		}
		err := cmd.Start()
		if err != nil {
			startc <- err
			return
		}
		if err := setupStopped(cmd.Process.Pid, g, p.limits); err != nil {
			_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
			startc <- err
			_ = cmd.Wait()
			return
		}
		startc <- nil
		waitc <- cmd.Wait()
	}()
	err = <-startc
	pw.Close()
	if err != nil {
		g.killAll()
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s: %w", p.name, exec.ErrNotFound)
		}
		return fmt.Errorf("sandbox: start %s: %w", p.name, err)
	}
	pid := cmd.Process.Pid
	copyDone := make(chan struct{})
	go func() {
		_, _ = io.Copy(out, pr)
		close(copyDone)
	}()

	kill := func() {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		g.killAll()
	}
	var (
		wall    <-chan time.Time
		tick    <-chan time.Time
		done    = ctx.Done()
		stopped error
		waitErr error
	)
	if p.limits.Wall > 0 {
		t := time.NewTimer(p.limits.Wall)
		defer t.Stop()
		wall = t.C
	}
	_, haveCPU := g.cpuUsage()
	if (p.limits.Disk > 0 && len(p.watch) > 0) || (p.limits.CPUTime > 0 && haveCPU) ||
		(p.limits.Procs > 0 && g.hasPids()) || (p.limits.Memory > 0 && g.hasMemory()) {
		t := time.NewTicker(cfg.poll)
		defer t.Stop()
		tick = t.C
	}
	var nextWalk time.Time
loop:
	for {
		select {
		case waitErr = <-waitc:
			break loop
		case <-done:
			stopped = ctx.Err()
		case <-wall:
			stopped = &LimitError{Limit: ErrTimeLimit, Value: p.limits.Wall.String()}
		case now := <-tick:
			if p.limits.CPUTime > 0 {
				if used, ok := g.cpuUsage(); ok && used > p.limits.CPUTime {
					stopped = &LimitError{Limit: ErrCPULimit, Value: p.limits.CPUTime.String()}
				}
			}
			// A refused fork or an OOM kill ends the command at once: its
			// parent might otherwise wait forever on what was lost (and
			// the build is no longer what its author meant anyway).
			if stopped == nil && p.limits.Procs > 0 && g.hasPids() && g.pidsExhausted() {
				stopped = &LimitError{Limit: ErrProcessLimit, Value: fmt.Sprintf("%d processes", p.limits.Procs)}
			}
			if stopped == nil && p.limits.Memory > 0 && g.hasMemory() && g.oomKilled() {
				stopped = &LimitError{Limit: ErrMemoryLimit, Value: bytesize.Format(p.limits.Memory)}
			}
			if stopped == nil && p.limits.Disk > 0 && !now.Before(nextWalk) {
				used, took := diskUsage(p.watch)
				// Walking a big tree is not free: at most every 5 polls
				// (1 s by default) and ≤ 2% of one core.
				nextWalk = time.Now().Add(max(5*cfg.poll, 50*took))
				if used-baseline > p.limits.Disk {
					stopped = &LimitError{Limit: ErrDiskLimit, Value: bytesize.Format(p.limits.Disk)}
				}
			}
		}
		if stopped != nil {
			kill()
			done, wall, tick = nil, nil, nil
		}
	}
	// Nothing the command started may outlive it.
	kill()
	select {
	case <-copyDone:
	case <-time.After(2 * time.Second):
		// A process outside our reach (no cgroups) still holds the pipe.
		_ = pr.SetReadDeadline(time.Now())
		<-copyDone
	}

	if stopped != nil {
		if le, ok := stopped.(*LimitError); ok {
			le.Err = waitErr
			return le
		}
		return fmt.Errorf("%s: %w", p.name, stopped)
	}
	if p.limits.Disk > 0 {
		if used, _ := diskUsage(p.watch); used-baseline > p.limits.Disk {
			return &LimitError{Limit: ErrDiskLimit, Value: bytesize.Format(p.limits.Disk), Err: waitErr}
		}
	}
	if waitErr == nil {
		return nil
	}
	return p.classify(g, waitErr)
}

// classify names the limit that made a command fail, if one did.
func (p *proc) classify(g *cgroup, waitErr error) error {
	l := p.limits
	limit := func(sentinel error, value string) error {
		return &LimitError{Limit: sentinel, Value: value, Err: waitErr}
	}
	if l.Memory > 0 && g.hasMemory() && g.oomKilled() {
		return limit(ErrMemoryLimit, bytesize.Format(l.Memory))
	}
	if l.Procs > 0 && g.hasPids() && g.pidsExhausted() {
		return limit(ErrProcessLimit, fmt.Sprintf("%d processes", l.Procs))
	}
	sig := syscall.Signal(-1)
	var ee *exec.ExitError
	if errors.As(waitErr, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok {
			switch {
			case ws.Signaled():
				sig = ws.Signal()
			case p.bwrap && ws.ExitStatus() > 128:
				sig = syscall.Signal(ws.ExitStatus() - 128)
			}
		}
	}
	if l.CPUTime > 0 {
		used, ok := g.cpuUsage()
		if sig == syscall.SIGXCPU || (ok && used >= l.CPUTime) {
			return limit(ErrCPULimit, l.CPUTime.String())
		}
	}
	if l.FileSize > 0 {
		if sig == syscall.SIGXFSZ || largestFile(p.watch) >= l.FileSize {
			return limit(ErrFileSizeLimit, bytesize.Format(l.FileSize))
		}
	}
	return fmt.Errorf("%s: %w", p.name, waitErr)
}

// setupStopped runs while the new process is stopped at its execve: it joins
// the cgroups, gets its rlimits, and is let go.
func setupStopped(pid int, g *cgroup, l Limits) error {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("wait for exec stop: %w", err)
		}
		break
	}
	if !ws.Stopped() {
		return fmt.Errorf("process did not stop at exec (status %v)", ws)
	}
	if g != nil {
		if err := g.join(pid); err != nil {
			return err
		}
	}
	set := func(res int, cur, max uint64) error {
		if err := unix.Prlimit(pid, res, &unix.Rlimit{Cur: cur, Max: max}, nil); err != nil {
			return fmt.Errorf("set rlimit %d: %w", res, err)
		}
		return nil
	}
	// No core dumps into the project directory.
	if err := set(unix.RLIMIT_CORE, 0, 0); err != nil {
		return err
	}
	if l.FileSize > 0 {
		if err := set(unix.RLIMIT_FSIZE, uint64(l.FileSize), uint64(l.FileSize)); err != nil {
			return err
		}
	}
	if l.CPUTime > 0 {
		cpu := l.CPUTime
		if _, ok := g.cpuUsage(); ok {
			// The cgroup's total is the limit; the per-process rlimit
			// is only a backstop. It counts a little more than the
			// cgroup does, so leave room for the total to act first.
			cpu += cpu/5 + 2*time.Second
		}
		s := uint64((cpu + time.Second - 1) / time.Second)
		// SIGXCPU at the soft limit, SIGKILL a second later.
		if err := set(unix.RLIMIT_CPU, s, s+1); err != nil {
			return err
		}
	}
	if l.Memory > 0 && !g.hasMemory() {
		if err := set(unix.RLIMIT_AS, uint64(l.Memory), uint64(l.Memory)); err != nil {
			return err
		}
	}
	if l.Procs > 0 && !g.hasPids() {
		if err := set(unix.RLIMIT_NPROC, uint64(l.Procs), uint64(l.Procs)); err != nil {
			return err
		}
	}
	if err := unix.PtraceDetach(pid); err != nil {
		return fmt.Errorf("ptrace detach: %w", err)
	}
	return nil
}

// diskUsage sums, for everything under dirs, the larger of its allocated
// and (for regular files) apparent size, counting hard links once. It returns how long the walk took.
func diskUsage(dirs []string) (int64, time.Duration) {
	start := time.Now()
	var total int64
	type key struct{ dev, ino uint64 }
	seen := map[key]bool{}
	for _, d := range dirs {
		_ = filepath.WalkDir(d, func(path string, e fs.DirEntry, err error) error {
			if err != nil {
				return nil // vanished or unreadable: skip
			}
			info, err := e.Info()
			if err != nil {
				return nil
			}
			st, ok := info.Sys().(*syscall.Stat_t)
			if !ok {
				return nil
			}
			if st.Nlink > 1 && !e.IsDir() {
				k := key{uint64(st.Dev), st.Ino}
				if seen[k] {
					return nil
				}
				seen[k] = true
			}
			// The larger of allocated and apparent size: a sparse file
			// costs no blocks here but its full size wherever it is
			// copied (artifacts, a client's disk); a preallocated one
			// costs blocks beyond its size.
			used := st.Blocks * 512
			if e.Type().IsRegular() && st.Size > used {
				used = st.Size
			}
			total += used
			return nil
		})
	}
	return total, time.Since(start)
}

// largestFile is the apparent size of the largest regular file under dirs.
func largestFile(dirs []string) int64 {
	var max int64
	for _, d := range dirs {
		_ = filepath.WalkDir(d, func(path string, e fs.DirEntry, err error) error {
			if err != nil || !e.Type().IsRegular() {
				return nil
			}
			if info, err := e.Info(); err == nil && info.Size() > max {
				max = info.Size()
			}
			return nil
		})
	}
	return max
}

// lookPath finds file in the PATH of env, as the command would. Relative
// results are relative to dir.
func lookPath(file string, env []string, dir string) (string, error) {
	if file == "" {
		return "", fmt.Errorf("empty command: %w", exec.ErrNotFound)
	}
	if strings.Contains(file, "/") {
		p := file
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		if isExecutable(p) {
			return p, nil
		}
		return "", fmt.Errorf("%s: %w", filepath.Base(file), exec.ErrNotFound)
	}
	path := envValue(env, "PATH")
	for _, d := range filepath.SplitList(path) {
		if d == "" {
			d = "."
		}
		p := filepath.Join(d, file)
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		if isExecutable(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: %w", file, exec.ErrNotFound)
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// envValue returns the last value of key in env, as getenv would.
func envValue(env []string, key string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == key {
			v = val
		}
	}
	return v
}

// envLookup is envValue that also says whether key is set.
func envLookup(env []string, key string) (string, bool) {
	v, ok := "", false
	for _, kv := range env {
		if k, val, found := strings.Cut(kv, "="); found && k == key {
			v, ok = val, true
		}
	}
	return v, ok
}

func checkCmd(c *Cmd) error {
	if c == nil || len(c.Args) == 0 {
		return errors.New("sandbox: empty command")
	}
	if c.Dir == "" || !filepath.IsAbs(c.Dir) {
		return errors.New("sandbox: Cmd.Dir must be an absolute directory")
	}
	return nil
}
