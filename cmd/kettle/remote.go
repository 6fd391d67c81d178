package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/kettle-build/kettle/client"
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

// remoteCommands are the subcommands of `kettle remote`, one file each
// (remote_<name>.go).
var remoteCommands = map[string]func(ctx context.Context, args []string, stdout, stderr io.Writer) int{
	"build":  runRemoteBuild,
	"status": runRemoteStatus,
	"events": runRemoteEvents,
	"result": runRemoteResult,
}

func runRemote(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, remoteUsage)
		return exitBadArgs
	}
	if run, ok := remoteCommands[args[0]]; ok {
		return run(ctx, args[1:], stdout, stderr)
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, remoteUsage)
		return exitOK
	}
	fmt.Fprintf(stderr, "kettle remote: unknown command %q\n\n%s", args[0], remoteUsage)
	return exitBadArgs
}

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

// describeLocal is describe that tells a failure writing the result apart.
func describeLocal(err error, server string) string {
	var le *client.LocalError
	if errors.As(err, &le) {
		return "writing the result: " + le.Error()
	}
	return describe(err, server)
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
