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
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/kettle-build/kettle/bundle"
	"github.com/kettle-build/kettle/client"
	"github.com/kettle-build/kettle/events"
	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/verify"
)

func init() {
	register("remote", "the client: submit a directory or a repo to a server, follow, download and verify", func(ctx context.Context, args []string) int {
		return runRemote(ctx, args, os.Stdout, os.Stderr)
	})
}

const remoteUsage = `usage: kettle remote <command> [flags]

commands:
  build [DIR | --repo URL [--ref REF]]   build remotely, download the result and verify it
  status JOB                             show a job's state
  events JOB [--from N]                  follow a job's build log
  result JOB [-o FILE]                   download a job's result tarball

The server is --server or KETTLE_SERVER (default http://localhost:8080); a
bearer token is read from --token-file, KETTLE_TOKEN_FILE or KETTLE_TOKEN.
Verification flags are read from the command line only.
Run 'kettle remote <command> -h' for a command's flags.
`

func runRemote(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, remoteUsage)
		return exitBadArgs
	}
	switch args[0] {
	case "build":
		return runRemoteBuild(ctx, args[1:], stdout, stderr)
	case "status":
		return runRemoteStatus(ctx, args[1:], stdout, stderr)
	case "events":
		return runRemoteEvents(ctx, args[1:], stdout, stderr)
	case "result":
		return runRemoteResult(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, remoteUsage)
		return exitOK
	}
	fmt.Fprintf(stderr, "kettle remote: unknown command %q\n\n%s", args[0], remoteUsage)
	return exitBadArgs
}

// remoteBackoff is the retry schedule of every remote command (a variable
// for tests).
var remoteBackoff = client.DefaultBackoff

// defaultServer is where `kettle serve` listens by default.
const defaultServer = "http://localhost:8080"

// serverFlags are the connection flags of every remote command.
type serverFlags struct {
	server, tokenFile *string
}

func (s *serverFlags) register(fs *flag.FlagSet) {
	s.server = fs.String("server", defaultServer, "kettle server URL (host:port means http:// on loopback, https:// elsewhere)")
	s.tokenFile = fs.String("token-file", "", "file holding the bearer token for the server (else KETTLE_TOKEN)")
}

// serverURL accepts a full URL or host[:port].
func serverURL(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", errors.New("no server: set --server or KETTLE_SERVER")
	}
	if !strings.Contains(s, "://") {
		host := s
		if i := strings.IndexByte(host, '/'); i >= 0 {
			host = host[:i]
		}
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		scheme := "https://"
		if ip := net.ParseIP(strings.Trim(host, "[]")); host == "localhost" || (ip != nil && ip.IsLoopback()) {
			scheme = "http://"
		}
		s = scheme + s
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("--server %q: want a URL like http://host:8080", s)
	}
	return s, nil
}

// client builds the API client; notes go to the user (retries).
func (s *serverFlags) client(p func(format string, args ...any)) (*client.Client, error) {
	u, err := serverURL(*s.server)
	if err != nil {
		return nil, err
	}
	token := ""
	if *s.tokenFile != "" {
		b, err := os.ReadFile(*s.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("--token-file: %v", err)
		}
		if token = strings.TrimSpace(string(b)); token == "" {
			return nil, fmt.Errorf("--token-file %s is empty", *s.tokenFile)
		}
	} else {
		token = strings.TrimSpace(os.Getenv("KETTLE_TOKEN"))
	}
	opts := []client.Option{client.WithToken(token), client.WithUserAgent("kettle/" + Version), client.WithBackoff(remoteBackoff)}
	if p != nil {
		opts = append(opts, client.WithRetryNotify(func(r client.Retry) {
			p("%s: %s; retrying in %s", r.Op, brief(r.Err), r.Wait.Round(100*time.Millisecond))
		}))
	}
	return client.New(u, opts...)
}

// describe says what went wrong and what to do about it.
func describe(err error, server string) string {
	var he *client.HTTPError
	msg := ""
	if errors.As(err, &he) {
		msg = fmt.Sprintf("%d %s", he.StatusCode, he.Message)
	}
	switch {
	case errors.Is(err, context.Canceled):
		return "interrupted"
	case errors.Is(err, client.ErrUnreachable):
		return fmt.Sprintf("cannot reach server at %s (%s): is `kettle serve` running? set --server or KETTLE_SERVER", server, rootCause(err))
	case errors.Is(err, client.ErrUnauthorized):
		return fmt.Sprintf("the server at %s refused our credentials (%s): pass --token-file FILE or set KETTLE_TOKEN", server, msg)
	case he != nil && he.StatusCode == 413:
		return fmt.Sprintf("the source is larger than the server accepts (%s): leave build outputs out of the upload, or raise the server's --max-upload", msg)
	case he != nil && he.StatusCode == 409:
		return fmt.Sprintf("the server refused a new build (%s): a single-build server takes one build; start a fresh one", msg)
	case errors.Is(err, client.ErrBusy):
		return fmt.Sprintf("the server is busy (%s): try again later", msg)
	case errors.Is(err, client.ErrNotFound):
		return fmt.Sprintf("%s (%s)", he.Message, server)
	case errors.Is(err, client.ErrRejected):
		return fmt.Sprintf("the server rejected the request: %s", he.Message)
	case he != nil:
		return fmt.Sprintf("server error at %s: %s", server, msg)
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return fmt.Sprintf("%s speaks plain HTTP: use an http:// URL in --server", server)
	case strings.Contains(err.Error(), "x509:") || strings.Contains(err.Error(), "tls:"):
		return fmt.Sprintf("TLS with %s failed (%s): check the server's certificate, or use http:// for a plain server", server, rootCause(err))
	}
	return err.Error()
}

// rootCause is the network-level reason ("connect: connection refused").
func rootCause(err error) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err.Error()
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return dns.Error()
	}
	for {
		var u error
		switch x := err.(type) {
		case interface{ Unwrap() error }:
			u = x.Unwrap()
		case interface{ Unwrap() []error }:
			if l := x.Unwrap(); len(l) > 0 {
				u = l[len(l)-1]
			}
		}
		if u == nil {
			return err.Error()
		}
		err = u
	}
}

// brief is describe without the advice, for repeated retry notices.
func brief(err error) string {
	var he *client.HTTPError
	switch {
	case errors.As(err, &he):
		return fmt.Sprintf("%d %s", he.StatusCode, he.Message)
	case errors.Is(err, client.ErrUnreachable):
		return "cannot reach server (" + rootCause(err) + ")"
	}
	return err.Error()
}

// exitFor maps an API error to an exit status: the server refusing our
// input or credentials is bad usage (2), anything else a failure (1).
func exitFor(err error) int {
	var he *client.HTTPError
	if errors.As(err, &he) && he.StatusCode == http.StatusConflict {
		return exitFailed // a used single-build server: not the input's fault
	}
	if errors.Is(err, client.ErrRejected) || errors.Is(err, client.ErrUnauthorized) {
		return exitBadArgs
	}
	return exitFailed
}

// exitForBuild maps a failed build to an exit status: a source the server
// found invalid (a ref the remote lacks, an unsafe archive, a project it
// cannot build) is bad input like a 4xx (2, docs/remote.md); a build that
// failed on its own merits, or the service, is a failure (1).
func exitForBuild(errorType string) int {
	switch failure.Kind(errorType) {
	case failure.InvalidSource, failure.UnsupportedToolchain:
		return exitBadArgs
	}
	return exitFailed
}

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
		if err := usableOut(*out); err != nil {
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
	var sent atomic.Int64
	if dir != nil {
		open := dir.Archive(ctx)
		req.Archive = func() (io.ReadCloser, error) {
			sent.Store(0)
			rc, err := open()
			return countingReader{rc, &sent}, err
		}
		req.SourceName = dir.SourceName()
		what = fmt.Sprintf("%s (%d files)", dir.Root, len(dir.Files))
	}
	fmt.Fprintf(stderr, "kettle remote: submitting %s to %s, nonce %s\n", what, c.Server(), hex.EncodeToString(nonce))
	stopUpload := showUpload(stderr, &sent)
	sub, err := c.SubmitSource(ctx, req)
	stopUpload()
	if err != nil {
		fmt.Fprintf(stderr, "kettle remote build: %s\n", describe(err, c.Server()))
		return exitFor(err)
	}
	id := sub.JobID
	fmt.Fprintf(stderr, "kettle remote: job %s\n", id)
	rep := &remoteBuildReport{JobID: id, Server: c.Server(), Nonce: hex.EncodeToString(nonce), UploadSHA256: sub.ArchiveSHA256}
	if dir != nil {
		// The archive is hashed as it is sent: the provenance must name
		// exactly these bytes, or another source was built.
		fmt.Fprintf(stderr, "kettle remote: uploaded archive sha256 %s (%s)\n", sub.ArchiveSHA256, fmtBytes(sub.ArchiveSize))
		vopts = append(vopts, verify.WithSourceSHA256(sub.ArchiveSHA256))
	}
	if unpinned != "" {
		fmt.Fprintf(stderr, "kettle remote: note: %s\n", unpinned)
	}
	fail := func(code int) int {
		if *asJSON {
			b, _ := json.MarshalIndent(rep, "", "  ")
			stdout.Write(append(b, '\n'))
		}
		return code
	}

	ui = newProgress(stderr, shortID(id))
	res, err := c.Events(ctx, id, 0, func(i int, ev events.Event) error {
		ui.Event(i, ev)
		return nil
	})
	ui.Close(res)
	ui = nil
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintf(stderr, "kettle remote build: interrupted; the build goes on at the server: kettle remote events %s\n", id)
		} else {
			fmt.Fprintf(stderr, "kettle remote build: following job %s: %s\n", id, describe(err, c.Server()))
		}
		return fail(exitFailed)
	}
	rep.Build = res
	if res.Status != "ok" {
		fmt.Fprintf(stderr, "kettle remote build: build %s failed (%s): %s\n", id, res.ErrorType, res.Error)
		return fail(exitForBuild(res.ErrorType))
	}

	path, sum, err := fetchResult(ctx, c, id, *out, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "kettle remote build: %s\n", describeLocal(err, c.Server()))
		return fail(exitFailed)
	}
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
	if msg := sourceMismatch(vr, sub.ArchiveSHA256, *repo, *ref); msg != "" {
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

// countingReader counts the archive bytes handed to the upload.
type countingReader struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// showUpload shows the bytes uploaded so far on a terminal, redrawn in
// place; it returns a function that stops it and clears the line.
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
	return func() { close(stop); <-done }
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

func passed(r *verify.Report) int {
	if r.Passed() {
		return exitOK
	}
	return exitFailed
}

func isCommitHash(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// usableOut accepts a path that does not exist or is an empty directory:
// the result is never mixed with older files.
func usableOut(p string) error {
	ents, err := os.ReadDir(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if _, err := os.Stat(filepath.Dir(filepath.Clean(p))); err != nil {
			return err
		}
		return nil
	case err != nil:
		return err
	case len(ents) > 0:
		return fmt.Errorf("%s exists and is not empty", p)
	}
	return nil
}

// fetchResult downloads the tarball next to the destination, extracts it
// safely and moves its top directory into place. It returns the result
// directory and the tarball's sha256.
func fetchResult(ctx context.Context, c *client.Client, id, out string, stderr io.Writer) (string, string, error) {
	parent := "."
	if out != "" {
		parent = filepath.Dir(filepath.Clean(out))
	}
	tmp, err := os.MkdirTemp(parent, ".kettle-remote-")
	if err != nil {
		return "", "", localErr{err}
	}
	defer os.RemoveAll(tmp)
	var d *client.Downloaded
	for try := 0; ; try++ {
		d, err = c.DownloadFile(ctx, id, filepath.Join(tmp, "result.tar.gz"))
		// A server may announce `complete` a moment before the result is
		// downloadable; give it a few seconds.
		if err == nil || !errors.Is(err, client.ErrNotFound) || try == 5 {
			break
		}
		select {
		case <-ctx.Done():
			return "", "", ctx.Err()
		case <-time.After(time.Second):
		}
	}
	if err != nil {
		return "", "", err
	}
	f, err := os.Open(d.Path)
	if err != nil {
		return "", "", localErr{err}
	}
	defer f.Close()
	x := filepath.Join(tmp, "x")
	if err := os.Mkdir(x, 0o755); err != nil {
		return "", "", localErr{err}
	}
	top, err := bundle.Extract(f, x, bundle.Limits{})
	if err != nil {
		return "", "", fmt.Errorf("the result tarball is unsafe or corrupt: %w", err)
	}
	dest := out
	if dest == "" {
		dest = filepath.Base(top)
		if _, err := os.Lstat(dest); err == nil {
			alt := dest + "-" + shortID(id)
			fmt.Fprintf(stderr, "kettle remote: %s exists; extracting to %s instead\n", dest, alt)
			dest = alt
		}
	} else if err := usableOut(dest); err != nil {
		return "", "", localErr{err}
	}
	if err := os.Rename(top, dest); err != nil {
		return "", "", localErr{err}
	}
	if abs, err := filepath.Abs(dest); err == nil {
		dest = abs
	}
	return dest, d.SHA256, nil
}

// localErr is a failure on this machine (disk, permissions).
type localErr struct{ err error }

func (e localErr) Error() string { return e.err.Error() }
func (e localErr) Unwrap() error { return e.err }

func describeLocal(err error, server string) string {
	var le localErr
	if errors.As(err, &le) {
		return "writing the result: " + le.Error()
	}
	return describe(err, server)
}
