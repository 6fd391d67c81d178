package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strconv"
	"time"
)

// kettle remote status JOB: a job's state, as a table or JSON.

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
