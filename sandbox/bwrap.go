package sandbox

import "context"

// Bwrap is being written; New("bwrap") reports it unavailable until then.
type Bwrap struct{ cfg *config }

func newBwrap(cfg *config) *Bwrap { return &Bwrap{cfg: cfg} }

// Probe reports whether bubblewrap works here.
func (b *Bwrap) Probe() error { return ErrUnavailable }

// Name implements Runner.
func (b *Bwrap) Name() string { return "bwrap" }

// Run implements Runner.
func (b *Bwrap) Run(ctx context.Context, c *Cmd) error { return ErrUnavailable }
