package sandbox

import (
	"context"
	"path/filepath"
	"sync"
)

// None runs commands directly on the host, with the limits of Cmd.Limits but
// no isolation at all: network, the server's files and the TEE devices are in
// reach. It exists only for machines where bubblewrap cannot run; New warns
// when it is chosen. The zero value works (without cgroups, so Memory and
// Procs are enforced as RLIMIT_AS and RLIMIT_NPROC).
type None struct {
	cfg  *config
	once sync.Once
	cgs  *cgroups
}

// NewNone returns a None runner.
func NewNone(opts ...Option) *None {
	return newNone(newConfig(opts))
}

func newNone(cfg *config) *None {
	n := &None{cfg: cfg}
	n.init()
	return n
}

func (n *None) init() {
	n.once.Do(func() {
		if n.cfg == nil {
			n.cfg = newConfig(nil)
			n.cfg.noCgroups = true
		}
		if !n.cfg.noCgroups {
			cgs, err := detectCgroups(n.cfg.cgroupName)
			if err != nil {
				n.cfg.logger.Warn("sandbox: cgroups unavailable, memory and process limits fall back to rlimits", "err", err)
			}
			n.cgs = cgs
		}
	})
}

// Name implements Runner.
func (n *None) Name() string { return "none" }

// Run implements Runner: Env is exactly c.Env, c.Dir the working directory;
// Network, Writable and ReadOnly have no effect.
func (n *None) Run(ctx context.Context, c *Cmd) error {
	n.init()
	if err := checkCmd(c); err != nil {
		return err
	}
	path, err := lookPath(c.Args[0], c.Env, c.Dir)
	if err != nil {
		return err
	}
	watch := append([]string{c.Dir}, c.Writable...)
	return n.cfg.run(ctx, n.cgs, &proc{
		path:   path,
		args:   c.Args,
		env:    c.Env,
		dir:    c.Dir,
		out:    c.Output,
		limits: c.Limits,
		watch:  watch,
		name:   filepath.Base(c.Args[0]),
	})
}
