package sandbox

import (
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/sys/unix"
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
// beside it) down: memory 3/4 of RAM, 8192 processes, 16 GiB per file,
// 64 GiB written under the writable directories. CPU and wall-clock time are
// left to the caller (the service's --build-timeout).
func DefaultLimits() Limits {
	l := Limits{Procs: 8192, FileSize: 16 << 30, Disk: 64 << 30}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil && si.Totalram > 0 {
		l.Memory = int64(si.Totalram) * int64(si.Unit) / 4 * 3
	}
	return l
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

// New returns the runner for mode: "bwrap", "none" or "auto" (bwrap when it
// works on this machine, else none with a loud warning). Unless
// WithDefaultLimits says otherwise, its commands are bounded by
// DefaultLimits where their Cmd.Limits leave a field zero.
func New(mode string, opts ...Option) (Runner, error) {
	cfg := newConfig(opts)
	if !cfg.defaultsSet {
		cfg.defaults = DefaultLimits()
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
