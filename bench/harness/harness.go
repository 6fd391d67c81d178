// Package harness drives a real `kettle serve` process over HTTP: build the
// binary, start it on a free loopback port, submit builds, follow their
// events, download results, and read the process's memory from /proc. The
// end-to-end tests (test/e2e) and the benchmark programs (bench/…) share it.
package harness

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kettle-build/kettle/client"
)

// RepoRoot finds the module root (the directory holding go.mod) above the
// working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// BuildBinary compiles ./cmd/kettle into outDir and returns its path,
// after `go generate ./web` (the web page's WebAssembly verifier, which the
// binary embeds; cached by go build after the first time).
func BuildBinary(ctx context.Context, outDir string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	gen := exec.CommandContext(ctx, "go", "generate", "./web")
	gen.Dir = root
	gen.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
	if out, err := gen.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go generate ./web: %v\n%s", err, out)
	}
	bin := filepath.Join(outDir, "kettle")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/kettle")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/kettle: %v\n%s", err, out)
	}
	return bin, nil
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Server is a running `kettle serve` process.
type Server struct {
	Cmd     *exec.Cmd
	URL     string
	Addr    string
	DataDir string
	LogPath string

	done chan struct{}
	err  error
}

// Config starts a server.
type Config struct {
	Bin     string
	DataDir string
	Args    []string // extra flags (not --listen / --data-dir)
	Env     []string // extra environment
	LogPath string   // server stderr+stdout; default DataDir/../serve-<port>.log
	Port    int      // 0 = a free one
	Wait    time.Duration
}

// Start runs `kettle serve` and waits until GET /health answers.
func Start(ctx context.Context, c Config) (*Server, error) {
	port := c.Port
	if port == 0 {
		p, err := FreePort()
		if err != nil {
			return nil, err
		}
		port = p
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	if c.LogPath == "" {
		c.LogPath = filepath.Join(filepath.Dir(c.DataDir), fmt.Sprintf("serve-%d-%d.log", port, time.Now().UnixNano()))
	}
	logf, err := os.OpenFile(c.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	args := append([]string{"serve", "--listen", addr, "--data-dir", c.DataDir}, c.Args...)
	cmd := exec.Command(c.Bin, args...)
	cmd.Env = append(cleanEnv(), c.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	s := &Server{Cmd: cmd, URL: "http://" + addr, Addr: addr, DataDir: c.DataDir, LogPath: c.LogPath, done: make(chan struct{})}
	go func() {
		s.err = cmd.Wait()
		logf.Close()
		close(s.done)
	}()
	wait := c.Wait
	if wait == 0 {
		wait = 30 * time.Second
	}
	deadline := time.Now().Add(wait)
	for {
		resp, err := http.Get(s.URL + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return s, nil
			}
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("kettle serve exited: %v; log:\n%s", s.err, s.Log())
		case <-ctx.Done():
			s.Kill()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Kill()
			return nil, fmt.Errorf("kettle serve not healthy after %v; log:\n%s", wait, s.Log())
		}
	}
}

// cleanEnv is the parent environment without KETTLE_* variables, so a
// developer's settings don't leak into tests.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KETTLE_") {
			env = append(env, kv)
		}
	}
	return env
}

// PID of the server process.
func (s *Server) PID() int { return s.Cmd.Process.Pid }

// Log returns what the server wrote so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.LogPath)
	return string(b)
}

// Kill sends SIGKILL (kill -9) and waits for the process to be gone.
func (s *Server) Kill() {
	_ = syscall.Kill(-s.Cmd.Process.Pid, syscall.SIGKILL)
	<-s.done
}

// Signal sends sig to the server process.
func (s *Server) Signal(sig syscall.Signal) error { return s.Cmd.Process.Signal(sig) }

// Wait waits for the process to exit, up to d; it returns the exit error.
func (s *Server) Wait(d time.Duration) (exited bool, err error) {
	select {
	case <-s.done:
		return true, s.err
	case <-time.After(d):
		return false, nil
	}
}

// Done is closed when the process has exited.
func (s *Server) Done() <-chan struct{} { return s.done }

// Mem is a process's resident memory from /proc/<pid>/status, in bytes.
type Mem struct{ RSS, HWM int64 }

// ReadMem reads VmRSS and VmHWM of pid.
func ReadMem(pid int) (Mem, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Mem{}, err
	}
	var m Mem
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		n, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			m.RSS = n << 10
		case "VmHWM:":
			m.HWM = n << 10
		}
	}
	return m, nil
}

// ResetHWM resets the peak RSS counter of pid (write 5 to clear_refs), so a
// later VmHWM is the peak of what follows.
func ResetHWM(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// Client talks to a kettle server.
type Client struct {
	URL   string
	Token string
	HTTP  *http.Client
}

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

// HTTPError is a non-2xx answer.
type HTTPError struct {
	Status int
	Body   string
	Header http.Header
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("HTTP %d: %s", e.Status, strings.TrimSpace(e.Body))
}

// Do sends a request and returns the response, or *HTTPError for non-2xx.
func (c *Client) Do(ctx context.Context, method, path, ct string, body io.Reader, hdr ...string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.URL+path, body)
	if err != nil {
		return nil, err
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		return nil, &HTTPError{resp.StatusCode, string(b), resp.Header}
	}
	return resp, nil
}

// BuildRequest is the JSON body of POST /build.
type BuildRequest struct {
	Nonce      string `json:"nonce"`
	RepoURL    string `json:"repo_url,omitempty"`
	RepoRef    string `json:"repo_ref,omitempty"`
	SourceData string `json:"source_data,omitempty"`
	SourceName string `json:"source_name,omitempty"`
}

// NewNonce returns 16 random bytes as hex.
func NewNonce() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}

// Submit posts a JSON build and returns the job id.
func (c *Client) Submit(ctx context.Context, r BuildRequest) (string, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return "", err
	}
	return c.SubmitRaw(ctx, "application/json", bytes.NewReader(b))
}

// SubmitArchive posts archive bytes as source_data.
func (c *Client) SubmitArchive(ctx context.Context, archive []byte, name, nonce string) (string, error) {
	return c.Submit(ctx, BuildRequest{Nonce: nonce, SourceData: base64.StdEncoding.EncodeToString(archive), SourceName: name})
}

// SubmitRaw posts any body to /build and reads {"job_id"}.
func (c *Client) SubmitRaw(ctx context.Context, ct string, body io.Reader) (string, error) {
	resp, err := c.Do(ctx, "POST", "/build", ct, body)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var v struct {
		JobID string `json:"job_id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return "", fmt.Errorf("decode submit answer: %w", err)
	}
	return v.JobID, nil
}

// Event is one SSE event as received.
type Event struct {
	ID   int
	Data string
	Type string
	At   time.Time // when it was read
}

// ReadSSE parses an SSE stream with the client's reader, calling fn per
// event, until the stream ends or fn's error. Comments are counted in
// *comments when non-nil. It is strict about kettle's wire form: every
// field but `id: <index>` and one `data:` line per event is an error, and
// so is a stream cut inside an event.
func ReadSSE(r io.Reader, comments *int, fn func(Event) error) error {
	sr := client.NewSSEReader(r)
	defer func() {
		if comments != nil {
			*comments += sr.Comments
		}
	}()
	for {
		se, err := sr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		ev := Event{ID: -1, Data: string(se.Data), At: time.Now()}
		switch {
		case se.Unknown > 0 || se.Event != "" || se.Retry != 0:
			return fmt.Errorf("unexpected SSE field in event %q", se.Data)
		case strings.ContainsAny(ev.Data, "\n"):
			return fmt.Errorf("multi-line SSE data %q", se.Data)
		case se.HasID:
			n, err := strconv.Atoi(se.ID)
			if err != nil || n < 0 {
				return fmt.Errorf("bad id %q", se.ID)
			}
			ev.ID = n
		}
		ev.Type = eventType(ev.Data)
		if err := fn(ev); err != nil {
			return err
		}
	}
}

// eventType reads the "type" of an event's JSON; kettle writes it first,
// so the common case needs no JSON decoding (which matters when a load
// test parses millions of events).
func eventType(data string) string {
	if rest, ok := strings.CutPrefix(data, `{"type":"`); ok {
		if i := strings.IndexByte(rest, '"'); i >= 0 {
			return rest[:i]
		}
	}
	var t struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal([]byte(data), &t)
	return t.Type
}

// Events follows a job's events from index from until the stream ends.
func (c *Client) Events(ctx context.Context, id string, from int, fn func(Event) error) error {
	resp, err := c.Do(ctx, "GET", fmt.Sprintf("/build/%s/events?from=%d", id, from), "", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return ReadSSE(resp.Body, nil, fn)
}

// Wait follows the events to `complete` and returns all of them.
func (c *Client) Wait(ctx context.Context, id string) ([]Event, error) {
	var evs []Event
	err := c.Events(ctx, id, 0, func(e Event) error {
		evs = append(evs, e)
		return nil
	})
	if err == nil && (len(evs) == 0 || evs[len(evs)-1].Type != "complete") {
		err = errors.New("event stream ended without complete")
	}
	return evs, err
}

// Complete is the `result` of a complete event.
type Complete struct {
	Status    string `json:"status"`
	Error     string `json:"error"`
	ErrorType string `json:"error_type"`
}

// ParseComplete reads a complete event's result.
func ParseComplete(e Event) (Complete, error) {
	var v struct {
		Result Complete `json:"result"`
	}
	err := json.Unmarshal([]byte(e.Data), &v)
	return v.Result, err
}

// Download writes the result tarball to w and returns the response headers.
func (c *Client) Download(ctx context.Context, id string, w io.Writer) (http.Header, int64, error) {
	resp, err := c.Do(ctx, "GET", "/build/"+id+"/result", "", nil)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(w, resp.Body)
	return resp.Header, n, err
}

// Status reads GET /build/{id}.
func (c *Client) Status(ctx context.Context, id string) (map[string]any, error) {
	resp, err := c.Do(ctx, "GET", "/build/"+id, "", nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var v map[string]any
	err = json.NewDecoder(resp.Body).Decode(&v)
	return v, err
}

// Metrics returns the /metrics text.
func (c *Client) Metrics(ctx context.Context) (string, error) {
	resp, err := c.Do(ctx, "GET", "/metrics", "", nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// Base64JSONBody streams a POST /build JSON body whose source_data is the
// base64 of src, without holding it in memory (for upload tests).
func Base64JSONBody(nonce, name string, src io.Reader) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		bw := bufio.NewWriterSize(pw, 256<<10)
		fmt.Fprintf(bw, `{"nonce":%q,"source_name":%q,"source_data":"`, nonce, name)
		enc := base64.NewEncoder(base64.StdEncoding, bw)
		_, err := io.Copy(enc, src)
		if err == nil {
			err = enc.Close()
		}
		if err == nil {
			_, err = bw.WriteString(`"}`)
		}
		if err == nil {
			err = bw.Flush()
		}
		pw.CloseWithError(err)
	}()
	return pr
}

// Sampler polls a process's memory until stopped and keeps the peak RSS.
type Sampler struct {
	mu   sync.Mutex
	peak Mem
	stop chan struct{}
	done chan struct{}
}

// Sample starts polling pid every interval.
func Sample(pid int, interval time.Duration) *Sampler {
	s := &Sampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			if m, err := ReadMem(pid); err == nil {
				s.mu.Lock()
				s.peak.RSS = max(s.peak.RSS, m.RSS)
				s.peak.HWM = max(s.peak.HWM, m.HWM)
				s.mu.Unlock()
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// Stop ends sampling and returns the peaks seen.
func (s *Sampler) Stop() Mem {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak
}
