package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/kettle-build/kettle/client"
	"github.com/kettle-build/kettle/events"
)

// remoteJobCmd parses the flags of a command that takes one JOB argument.
func remoteJobCmd(name, synopsis string, args []string, stderr io.Writer, extra func(*flag.FlagSet)) (*client.Client, string, int) {
	fs := flag.NewFlagSet("remote "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: kettle remote %s\n\nflags:\n", synopsis)
		fs.PrintDefaults()
	}
	var sf serverFlags
	sf.register(fs)
	if extra != nil {
		extra(fs)
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, "", exitOK
		}
		return nil, "", exitBadArgs
	}
	if len(pos) != 1 || pos[0] == "" {
		fs.Usage()
		return nil, "", exitBadArgs
	}
	c, err := sf.client(func(format string, a ...any) { fmt.Fprintf(stderr, "kettle remote: "+format+"\n", a...) })
	if err != nil {
		fmt.Fprintf(stderr, "kettle remote %s: %v\n", name, err)
		return nil, "", exitBadArgs
	}
	return c, pos[0], -1
}

func runRemoteStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var asJSON *bool
	c, id, code := remoteJobCmd("status", "status JOB [--json]", args, stderr, func(fs *flag.FlagSet) {
		asJSON = fs.Bool("json", false, "print the status as JSON")
	})
	if code >= 0 {
		return code
	}
	st, err := c.Status(ctx, id)
	if err != nil {
		fmt.Fprintf(stderr, "kettle remote status: %s\n", describe(err, c.Server()))
		return exitFor(err)
	}
	if *asJSON {
		b, _ := json.MarshalIndent(st, "", "  ")
		stdout.Write(append(b, '\n'))
		return exitOK
	}
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(stdout, "%-10s %s\n", k, v)
		}
	}
	ts := func(t *time.Time) string {
		if t == nil || t.IsZero() {
			return ""
		}
		return t.UTC().Format(time.RFC3339)
	}
	row("job", st.JobID)
	row("status", st.Status)
	if st.Position != nil {
		row("position", strconv.Itoa(*st.Position))
	}
	row("created", ts(&st.CreatedAt))
	row("started", ts(st.StartedAt))
	row("finished", ts(st.FinishedAt))
	row("toolchain", st.Toolchain)
	switch s := st.Source; {
	case s.URL != "" && s.Ref != "":
		row("source", s.URL+" @ "+s.Ref)
	case s.URL != "":
		row("source", s.URL)
	case s.ArchiveName != "" || s.ArchiveSHA256 != "":
		row("source", fmt.Sprintf("archive %s (%d bytes, sha256 %s)", s.ArchiveName, s.ArchiveSize, s.ArchiveSHA256))
	}
	if st.ErrorType != "" {
		row("error", st.ErrorType+": "+st.Error)
	} else {
		row("error", st.Error)
	}
	if st.ResultSHA256 != "" {
		row("result", "sha256 "+st.ResultSHA256)
	}
	return exitOK
}

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

func runRemoteResult(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var out *string
	c, id, code := remoteJobCmd("result", "result JOB [-o FILE]", args, stderr, func(fs *flag.FlagSet) {
		out = fs.String("o", "", "write the tarball here (- for stdout; default ./<top>.tar.gz, never overwritten)")
	})
	if code >= 0 {
		return code
	}
	if *out == "-" {
		r, err := c.Result(ctx, id)
		if err != nil {
			fmt.Fprintf(stderr, "kettle remote result: %s\n", describe(err, c.Server()))
			return exitFor(err)
		}
		defer r.Body.Close()
		d, err := client.CopyResult(stdout, r)
		if err != nil {
			fmt.Fprintf(stderr, "kettle remote result: %v\n", err)
			return exitFailed
		}
		fmt.Fprintf(stderr, "kettle remote: %d bytes, sha256 %s\n", d.Size, d.SHA256)
		return exitOK
	}
	path := *out
	if path == "" {
		// The server's name for it is known only from the response: take
		// it into a temporary file first, then refuse to overwrite.
		tmp, err := os.MkdirTemp(".", ".kettle-result-")
		if err != nil {
			fmt.Fprintf(stderr, "kettle remote result: %v\n", err)
			return exitFailed
		}
		defer os.RemoveAll(tmp)
		d, err := c.DownloadFile(ctx, id, filepath.Join(tmp, "result.tar.gz"))
		if err != nil {
			fmt.Fprintf(stderr, "kettle remote result: %s\n", describeLocal(err, c.Server()))
			return exitFor(err)
		}
		name := d.Name
		if name == "" {
			name = id + ".tar.gz"
		}
		if _, err := os.Lstat(name); err == nil {
			fmt.Fprintf(stderr, "kettle remote result: %s exists; pass -o FILE to choose where to write\n", name)
			return exitBadArgs
		}
		if err := os.Rename(d.Path, name); err != nil {
			fmt.Fprintf(stderr, "kettle remote result: %v\n", err)
			return exitFailed
		}
		fmt.Fprintf(stderr, "kettle remote: wrote %s (%d bytes, sha256 %s)\n", name, d.Size, d.SHA256)
		return exitOK
	}
	d, err := c.DownloadFile(ctx, id, path)
	if err != nil {
		fmt.Fprintf(stderr, "kettle remote result: %s\n", describeLocal(err, c.Server()))
		return exitFor(err)
	}
	fmt.Fprintf(stderr, "kettle remote: wrote %s (%d bytes, sha256 %s)\n", path, d.Size, d.SHA256)
	return exitOK
}
