package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/kettle-build/kettle/events"
)

// kettle remote events JOB: follow a job's build log.

func runRemoteEvents(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var (
		from   *int
		asJSON *bool
	)
	c, id, code := remoteJobCmd("events", "events JOB [--from N] [--json]", args, stderr, func(fs *flag.FlagSet) {
		from = fs.Int("from", 0, "skip the first N events")
		asJSON = fs.Bool("json", false, "print each event as its JSON line ({\"id\":N,…event})")
	})
	if code >= 0 {
		return code
	}
	if *from < 0 {
		fmt.Fprintln(stderr, "kettle remote events: --from must be ≥ 0")
		return exitBadArgs
	}
	res, err := c.Events(ctx, id, *from, func(i int, ev events.Event) error {
		if *asJSON {
			b, err := ev.MarshalJSON()
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(stdout, "{\"id\":%d,%s\n", i, b[1:])
			return err
		}
		_, err := fmt.Fprintln(stdout, eventLine(ev))
		return err
	})
	if err != nil {
		fmt.Fprintf(stderr, "kettle remote events: %s\n", describe(err, c.Server()))
		return exitFor(err)
	}
	if res.Status != "ok" {
		return exitFailed
	}
	return exitOK
}
