package jobs

import (
	"context"
	"io"
	"time"
)

// paceBytes is how much an object upload may run ahead of the server.
const paceBytes = 512 << 10

// pacedReader feeds an object-store upload and, every paceBytes, waits for a
// round trip to the server. nats.go's object store publishes chunks
// asynchronously with up to thousands of 128 KiB chunks in flight and no
// option to lower that, so without pacing a 1 GiB upload can hold hundreds
// of MiB in the client's buffers (docs/benchmarks.md: < 64 MiB per 1 GiB upload).
type pacedReader struct {
	ctx   context.Context
	r     io.Reader
	flush func(context.Context) error
	since int
}

func (p *pacedReader) Read(b []byte) (int, error) {
	if p.since >= paceBytes {
		if err := p.flush(p.ctx); err != nil {
			return 0, err
		}
		p.since = 0
	}
	if room := paceBytes - p.since; len(b) > room {
		b = b[:room]
	}
	n, err := p.r.Read(b)
	p.since += n
	return n, err
}

// paced wraps r for an upload on this store's connection.
func (s *Store) paced(ctx context.Context, r io.Reader) io.Reader {
	return &pacedReader{ctx: ctx, r: r, flush: s.flush}
}

// flush waits for a round trip to the server; FlushWithContext refuses a
// context without a deadline, so give it one.
func (s *Store) flush(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Minute)
		defer cancel()
	}
	return s.nc.FlushWithContext(ctx)
}
