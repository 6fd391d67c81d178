package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kettle-build/kettle/client"
	"github.com/kettle-build/kettle/events"
	"github.com/kettle-build/kettle/verify"
)

// kettle remote build: the flags, the output and the verdict. The submit →
// follow → download → extract workflow is client.Build.

// remoteBuildReport is `kettle remote build --json`: verify's JSON report
// plus the job, the build outcome and where the result is.
type remoteBuildReport struct {
	JobID        string         `json:"job_id"`
	Server       string         `json:"server"`
	Build        *events.Result `json:"build"`
	ResultPath   string         `json:"result_path,omitempty"`
	ResultSHA256 string         `json:"result_sha256,omitempty"`
	Nonce        string         `json:"request_nonce"`
	// UploadSHA256 is the sha256 of the archive uploaded, which the
	// provenance must name.
	UploadSHA256 string `json:"upload_sha256,omitempty"`
	*verify.Report
}

func runRemoteBuild(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("remote build", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, `usage: kettle remote build [DIR | --repo URL [--ref REF]] [flags]

Submits DIR (default .) or a git repository to a kettle server with a fresh
random nonce, follows the build, downloads and extracts the result, and
verifies it like 'kettle verify' (same policy flags) with that nonce and
the source it sent: an uploaded directory's archive sha256, --ref COMMIT's
commit, the --repo URL (a branch or tag does not pin the commit).
A git checkout is uploaded as what git tracks plus .git; build outputs and
untracked files stay home. Policy flags are read from the command line only;
--server and --token-file also from KETTLE_SERVER and KETTLE_TOKEN_FILE.
Exit status: 0 the build succeeded and every check passed, 1 it failed or a
check failed (the source built is not the one sent), 2 bad usage, unreadable
input, or a source the server found invalid (a ref the remote lacks, no
lockfile: InvalidSource, UnsupportedToolchain).

flags:`)
		fs.PrintDefaults()
	}
	var (
		sf     serverFlags
		pf     policyFlags
		repo   = fs.String("repo", "", "build this git repository URL instead of a local directory")
		ref    = fs.String("ref", "", "with --repo: branch, tag or full commit hash (default: the remote HEAD)")
		out    = fs.String("out", "", "extract the result here (default ./<top>, the result's top directory)")
		asJSON = fs.Bool("json", false, "print the report as JSON (verify's report plus job_id, build, result_path)")
	)
	sf.register(fs)
	pf.register(fs)
	pos, err := parseCommandLine(fs, args, "server", "token-file")
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitBadArgs // the flag package printed why
	}
	bad := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "kettle remote build: "+format+"\n", a...)
		return exitBadArgs
	}
	if len(pos) > 1 || (len(pos) == 1 && *repo != "") {
		fs.Usage()
		return exitBadArgs
	}
	if *ref != "" && *repo == "" {
		return bad("--ref needs --repo (a local directory is uploaded as it is)")
	}
	// The user's expectations, then always what we send: the result must
	// be a build of that source, whatever the flags say (sourceMismatch
	// names a difference).
	vopts, _, err := pf.options()
	if err != nil {
		return bad("%v", err)
	}
	var unpinned string
	if *repo != "" {
		vopts = append(vopts, verify.WithSourceURI(*repo))
		if isCommitHash(*ref) {
			vopts = append(vopts, verify.WithGitCommit(strings.ToLower(*ref)))
		} else {
			what := "the remote HEAD"
			if *ref != "" {
				what = fmt.Sprintf("--ref %s (a branch or tag)", *ref)
			}
			unpinned = fmt.Sprintf("the commit was not pinned: %s lets the server choose which commit to build; the result is checked against --repo %s only (pass --ref <full commit hash> or --git-commit)", what, *repo)
		}
	}
	if *out != "" {
		if err := client.CheckOutDir(*out); err != nil {
			return bad("--out: %v", err)
		}
	}
	var dir *client.Dir
	if *repo == "" {
		src := "."
		if len(pos) == 1 {
			src = pos[0]
		}
		if dir, err = client.PackDir(ctx, src); err != nil {
			return bad("%v", err)
		}
		for _, w := range dir.Warnings {
			fmt.Fprintf(stderr, "kettle remote build: warning: %s\n", w)
		}
	}

	var ui progress
	note := func(format string, a ...any) {
		if ui != nil {
			ui.Note(format, a...)
		} else {
			fmt.Fprintf(stderr, "kettle remote: "+format+"\n", a...)
		}
	}
	c, err := sf.client(note)
	if err != nil {
		return bad("%v", err)
	}
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		fmt.Fprintf(stderr, "kettle remote build: nonce: %v\n", err)
		return exitFailed
	}
	vopts = append(vopts, verify.WithNonce(nonce))

	req := client.Request{Nonce: nonce, RepoURL: *repo, RepoRef: *ref}
	what := *repo
	if dir != nil {
		req.Archive = dir.Archive(ctx)
		req.SourceName = dir.SourceName()
		what = fmt.Sprintf("%s (%d files)", dir.Root, len(dir.Files))
	}
	fmt.Fprintf(stderr, "kettle remote: submitting %s to %s, nonce %s\n", what, c.Server(), hex.EncodeToString(nonce))
	var sent atomic.Int64
	stopUpload := showUpload(stderr, &sent)
	rep := &remoteBuildReport{Server: c.Server(), Nonce: hex.EncodeToString(nonce)}
	opts := []client.BuildOption{
		client.WithUploadProgress(sent.Store),
		client.WithSubmitted(func(sub *client.Submission) {
			stopUpload()
			fmt.Fprintf(stderr, "kettle remote: job %s\n", sub.JobID)
			rep.JobID, rep.UploadSHA256 = sub.JobID, sub.ArchiveSHA256
			if dir != nil {
				// The archive is hashed as it is sent: the provenance must
				// name exactly these bytes, or another source was built.
				fmt.Fprintf(stderr, "kettle remote: uploaded archive sha256 %s (%s)\n", sub.ArchiveSHA256, fmtBytes(sub.ArchiveSize))
				vopts = append(vopts, verify.WithSourceSHA256(sub.ArchiveSHA256))
			}
			if unpinned != "" {
				fmt.Fprintf(stderr, "kettle remote: note: %s\n", unpinned)
			}
			ui = newProgress(stderr, shortID(sub.JobID))
		}),
		client.WithEvents(func(i int, ev events.Event) error {
			ui.Event(i, ev)
			return nil
		}),
		client.WithFollowed(func(res *events.Result) {
			ui.Close(res)
			ui = nil
		}),
		client.WithNotify(func(msg string) { fmt.Fprintf(stderr, "kettle remote: %s\n", msg) }),
	}
	if *out != "" {
		opts = append(opts, client.WithOutDir(*out))
	}
	o, err := c.Build(ctx, req, opts...)
	stopUpload()
	fail := func(code int) int {
		if *asJSON {
			b, _ := json.MarshalIndent(rep, "", "  ")
			stdout.Write(append(b, '\n'))
		}
		return code
	}
	if err != nil {
		se := &client.StageError{Stage: client.StageSubmit, Err: err}
		errors.As(err, &se)
		id := rep.JobID
		rep.Build = o.Build
		switch se.Stage {
		case client.StageSubmit:
			fmt.Fprintf(stderr, "kettle remote build: %s\n", describe(se.Err, c.Server()))
			return exitFor(se.Err)
		case client.StageFollow:
			if ctx.Err() != nil {
				fmt.Fprintf(stderr, "kettle remote build: interrupted; the build goes on at the server: kettle remote events %s\n", id)
			} else {
				fmt.Fprintf(stderr, "kettle remote build: following job %s: %s\n", id, describe(se.Err, c.Server()))
			}
			return fail(exitFailed)
		case client.StageBuild:
			res := o.Build
			fmt.Fprintf(stderr, "kettle remote build: build %s failed (%s): %s\n", id, res.ErrorType, res.Error)
			return fail(exitForBuild(res.ErrorType))
		}
		fmt.Fprintf(stderr, "kettle remote build: %s\n", describeLocal(se.Err, c.Server()))
		return fail(exitFailed)
	}
	rep.Build = o.Build
	path, sum := o.Dir, o.SHA256
	rep.ResultPath, rep.ResultSHA256 = path, sum
	fmt.Fprintf(stderr, "kettle remote: result in %s (tarball sha256 %s)\n", path, sum)

	vr, err := verify.Bundle(ctx, path, vopts...)
	if err != nil {
		fmt.Fprintf(stderr, "kettle remote build: verify: %v\n", err)
		return fail(exitFailed)
	}
	if unpinned != "" {
		vr.Warnings = append(vr.Warnings, unpinned)
	}
	if msg := sourceMismatch(vr, o.Submission.ArchiveSHA256, *repo, *ref); msg != "" {
		fmt.Fprintf(stderr, "kettle remote build: FAILED: %s\n", msg)
	}
	rep.Report = vr
	vr.PassedAll = vr.Passed()
	if *asJSON {
		return fail(passed(vr))
	}
	if err := verify.WriteTable(stdout, vr); err != nil {
		return exitFailed
	}
	return passed(vr)
}

// sourceMismatch says how the result's source differs from what was sent,
// or "" when the source checks passed.
func sourceMismatch(r *verify.Report, upload, repo, ref string) string {
	var want []string
	switch {
	case upload != "":
		want = append(want, "Source archive sha256 is "+upload)
	case repo != "":
		want = append(want, "Source URI is "+repo)
		if isCommitHash(ref) {
			want = append(want, "Git commit is "+strings.ToLower(ref))
		}
	}
	var out []string
	for _, c := range r.Failed() {
		if slices.Contains(want, c.Name) {
			out = append(out, "expected: "+c.Name+"; the provenance has: "+c.Detail)
		}
	}
	if len(out) == 0 {
		return ""
	}
	return "the result is not a build of the source sent: " + strings.Join(out, "; ")
}

// showUpload shows the bytes uploaded so far on a terminal, redrawn in
// place; it returns a function that stops it and clears the line.
// Stopping it twice is harmless.
func showUpload(w io.Writer, sent *atomic.Int64) func() {
	if !isTerminal(w) {
		return func() {}
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		start, shown := time.Now(), false
		for {
			select {
			case <-stop:
				if shown {
					io.WriteString(w, "\r\x1b[K")
				}
				return
			case <-t.C:
				n := sent.Load()
				if n == 0 {
					continue
				}
				rate := float64(n) / time.Since(start).Seconds()
				fmt.Fprintf(w, "\r\x1b[Kuploading %s (%s/s)", fmtBytes(n), fmtBytes(int64(rate)))
				shown = true
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(stop); <-done }) }
}

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
