package sandbox

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kettle-build/kettle/egress"
	"github.com/kettle-build/kettle/internal/bytesize"
)

// Option configures a Runner made by New, NewNone or NewBwrap.
type Option func(*config)

type config struct {
	logger     *slog.Logger
	hidden     []string // never visible in the sandbox
	system     []string // extra read-only binds (toolchain install dirs)
	bwrapPath  string
	noCgroups  bool
	cgroupName string // directory under each cgroup parent
	poll       time.Duration
	tmpfsSize  int64
	defaults   Limits // fill the zero fields of Cmd.Limits
	// defaultsSet: WithDefaultLimits was given.
	defaultsSet bool
	egress      *egress.Proxy // nil: a public-only proxy made on first use
	workers     int           // builds at once, for DefaultLimitsFor
	uid, gid    int           // WithSandboxUser
	uidSet      bool
}

func newConfig(opts []Option) *config {
	c := &config{
		logger:     slog.Default(),
		bwrapPath:  "/usr/bin/bwrap",
		poll:       200 * time.Millisecond,
		cgroupName: "kettle-sandbox",
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// WithLogger sets the logger for warnings (default slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(c *config) {
		if l != nil {
			c.logger = l
		}
	}
}

// WithHiddenPaths adds paths that a sandboxed command must never see, on top
// of the TEE devices and /sys/kernel/config (which Bwrap never mounts
// anyway). The server passes its data directory here. A hidden path that lies
// inside a directory the command may see is masked (an empty tmpfs over a
// directory, /dev/null over a file); asking to bind a hidden path itself is an
// error. None cannot hide anything.
func WithHiddenPaths(paths ...string) Option {
	return func(c *config) { c.hidden = append(c.hidden, paths...) }
}

// WithSystemPaths adds read-only directories to every sandbox, e.g. a
// toolchain installed outside /usr. Existing PATH entries of Cmd.Env are
// bound read-only without this option.
func WithSystemPaths(paths ...string) Option {
	return func(c *config) { c.system = append(c.system, paths...) }
}

// WithWorkers tells New how many builds run at once on this machine, so
// its default memory limit leaves the host alive with all of them at it
// (DefaultLimitsFor). Default 1.
func WithWorkers(n int) Option {
	return func(c *config) { c.workers = n }
}

// WithEgress sets the proxy through which Bwrap's Network commands reach
// the outside (default: egress.New(egress.Policy{}), public addresses only).
// The server passes one that denies its own listeners.
func WithEgress(p *egress.Proxy) Option {
	return func(c *config) { c.egress = p }
}

// WithBwrapPath sets the bubblewrap binary (default /usr/bin/bwrap).
func WithBwrapPath(path string) Option {
	return func(c *config) { c.bwrapPath = path }
}

// WithoutCgroups makes the runner enforce Limits with rlimits only, even
// where cgroups could be used. Memory then bounds address space (RLIMIT_AS)
// and the process limit (RLIMIT_NPROC) does not bind a command that runs as
// root outside its user namespace, as Bwrap's commands do.
func WithoutCgroups() Option {
	return func(c *config) { c.noCgroups = true }
}

// WithPollInterval sets how often disk and CPU usage are checked (default
// 200ms).
func WithPollInterval(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.poll = d
		}
	}
}

// WithTmpSize bounds the size of the sandbox's private /tmp. Without it /tmp
// is bounded by Limits.Disk when set; its pages also count toward the memory
// limit.
func WithTmpSize(n int64) Option {
	return func(c *config) { c.tmpfsSize = n }
}

// WithDefaultLimits sets limits for every command: each zero field of
// Cmd.Limits takes the value from l. New applies DefaultLimits() unless this
// option is given; WithDefaultLimits(Limits{}) lifts them.
func WithDefaultLimits(l Limits) Option {
	return func(c *config) {
		c.defaults = l
		c.defaultsSet = true
	}
}

// DefaultLimits bound a build that does not set its own, so that one
// runaway build cannot take the machine (and the server, and the builds
// beside it) down; DefaultLimitsFor(1).
func DefaultLimits() Limits { return DefaultLimitsFor(1) }

// DefaultLimitsFor are the default limits when workers builds run at once:
// memory (RAM − headroom) / workers, where the headroom (an eighth of RAM,
// at least 1 GiB, at most 4 GiB) is left to the server and the kernel, so
// the host stays alive with every worker at its limit; 8192 processes,
// 16 GiB per file, 64 GiB written under the writable directories. CPU and
// wall-clock time are left to the caller (the service's --build-timeout).
func DefaultLimitsFor(workers int) Limits {
	l := Limits{Procs: 8192, FileSize: 16 << 30, Disk: 64 << 30}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil && si.Totalram > 0 {
		l.Memory = memoryPerWorker(int64(si.Totalram)*int64(si.Unit), workers)
	}
	return l
}

func memoryPerWorker(ram int64, workers int) int64 {
	if workers < 1 {
		workers = 1
	}
	headroom := min(max(ram/8, 1<<30), 4<<30)
	m := (ram - headroom) / int64(workers)
	return max(m, 256<<20) // below this nothing builds; the cgroup still bounds it
}

// withDefaults fills the zero fields of l from d.
func withDefaults(l, d Limits) Limits {
	if l.Memory == 0 {
		l.Memory = d.Memory
	}
	if l.Procs == 0 {
		l.Procs = d.Procs
	}
	if l.CPUTime == 0 {
		l.CPUTime = d.CPUTime
	}
	if l.FileSize == 0 {
		l.FileSize = d.FileSize
	}
	if l.Disk == 0 {
		l.Disk = d.Disk
	}
	if l.Wall == 0 {
		l.Wall = d.Wall
	}
	return l
}

// Environment variables that override DefaultLimits for runners made by New
// (the KETTLE_<FLAG> convention of the command line; "0" lifts a limit).
// Sizes take an optional KiB/MiB/GiB/TiB (or K/M/G/T) suffix, times a Go
// duration ("90s", "1h").
const (
	EnvMemory   = "KETTLE_SANDBOX_MEMORY"
	EnvProcs    = "KETTLE_SANDBOX_PROCS"
	EnvCPUTime  = "KETTLE_SANDBOX_CPU_TIME"
	EnvFileSize = "KETTLE_SANDBOX_FILE_SIZE"
	EnvDisk     = "KETTLE_SANDBOX_DISK"
	EnvWall     = "KETTLE_SANDBOX_WALL"
)

// LimitsFromEnv returns base with the fields set by the KETTLE_SANDBOX_*
// variables of getenv replaced.
func LimitsFromEnv(base Limits, getenv func(string) string) (Limits, error) {
	l := base
	for _, f := range []struct {
		key string
		set func(string) error
	}{
		{EnvMemory, func(v string) (err error) { l.Memory, err = bytesize.Parse(v); return }},
		{EnvFileSize, func(v string) (err error) { l.FileSize, err = bytesize.Parse(v); return }},
		{EnvDisk, func(v string) (err error) { l.Disk, err = bytesize.Parse(v); return }},
		{EnvProcs, func(v string) (err error) { l.Procs, err = strconv.Atoi(v); return }},
		{EnvCPUTime, func(v string) (err error) { l.CPUTime, err = parseDuration(v); return }},
		{EnvWall, func(v string) (err error) { l.Wall, err = parseDuration(v); return }},
	} {
		v := strings.TrimSpace(getenv(f.key))
		if v == "" {
			continue
		}
		if err := f.set(v); err != nil {
			return base, fmt.Errorf("%s=%q: %w", f.key, v, err)
		}
	}
	if l.Memory < 0 || l.FileSize < 0 || l.Disk < 0 || l.Procs < 0 || l.CPUTime < 0 || l.Wall < 0 {
		return base, errors.New("sandbox: negative limit")
	}
	return l, nil
}

func parseDuration(v string) (time.Duration, error) {
	if v == "0" {
		return 0, nil
	}
	return time.ParseDuration(v)
}

// New returns the runner for mode: "bwrap", "none" or "auto" (bwrap when it
// works on this machine, else none with a loud warning). Unless
// WithDefaultLimits says otherwise, its commands are bounded by
// DefaultLimitsFor(WithWorkers), as overridden by the KETTLE_SANDBOX_* environment variables,
// where their Cmd.Limits leave a field zero.
func New(mode string, opts ...Option) (Runner, error) {
	cfg := newConfig(opts)
	if cfg.uidSet && (cfg.uid < 0 || cfg.gid < 0 || cfg.uid >= 1<<32-1 || cfg.gid >= 1<<32-1) {
		return nil, fmt.Errorf("sandbox: invalid sandbox uid/gid %d/%d", cfg.uid, cfg.gid)
	}
	if !cfg.defaultsSet {
		l, err := LimitsFromEnv(DefaultLimitsFor(cfg.workers), os.Getenv)
		if err != nil {
			return nil, err
		}
		cfg.defaults = l
	}
	switch mode {
	case "bwrap":
		b := newBwrap(cfg)
		if err := b.Probe(); err != nil {
			return nil, err
		}
		return b, nil
	case "none":
		cfg.logger.Warn("SANDBOX DISABLED: build commands run directly on this machine, with network, " +
			"the server's files and the TEE devices in reach; use --sandbox=none only where bubblewrap cannot run")
		return newNone(cfg), nil
	case "auto", "":
		b := newBwrap(cfg)
		err := b.Probe()
		if err == nil {
			return b, nil
		}
		cfg.logger.Warn("SANDBOX DISABLED: bubblewrap does not work here, falling back to --sandbox=none; "+
			"build commands run directly on this machine, with network, the server's files and the TEE devices in reach",
			"err", err)
		return newNone(cfg), nil
	}
	return nil, fmt.Errorf("sandbox: unknown mode %q (want bwrap, none or auto)", mode)
}
