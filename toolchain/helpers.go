package toolchain

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/provenance"
	"github.com/kettle-build/kettle/sandbox"
)

// ErrToolNotFound reports a toolchain binary that is not installed.
var ErrToolNotFound = errors.New("tool not found")

// Getenv returns the value of key in env (last one wins, as exec does).
func Getenv(env []string, key string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == key {
			v = val
		}
	}
	return v
}

// SetEnv returns a copy of env with each "KEY=value" of kv replacing any
// earlier value of KEY.
func SetEnv(env []string, kv ...string) []string {
	drop := map[string]bool{}
	for _, e := range kv {
		k, _, _ := strings.Cut(e, "=")
		drop[k] = true
	}
	out := make([]string, 0, len(env)+len(kv))
	for _, e := range env {
		k, _, _ := strings.Cut(e, "=")
		if !drop[k] {
			out = append(out, e)
		}
	}
	return append(out, kv...)
}

// UnsetEnv returns a copy of env without the given keys. (An empty value is
// not the same: cargo, for one, treats RUSTFLAGS="" as set.)
func UnsetEnv(env []string, keys ...string) []string {
	drop := map[string]bool{}
	for _, k := range keys {
		drop[k] = true
	}
	out := make([]string, 0, len(env))
	for _, e := range env {
		if k, _, _ := strings.Cut(e, "="); !drop[k] {
			out = append(out, e)
		}
	}
	return out
}

// LookPath finds an executable named name in the PATH of env (not of this
// process: the builds' environment is explicit).
func LookPath(env []string, name string) (string, error) {
	if strings.Contains(name, "/") {
		if isExec(name) {
			return name, nil
		}
		return "", fmt.Errorf("%s: %w", name, ErrToolNotFound)
	}
	for _, dir := range filepath.SplitList(Getenv(env, "PATH")) {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, name)
		if isExec(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("could not find command named `%s`: %w", name, ErrToolNotFound)
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// FindTool resolves the binary of a tool on env's PATH, symlinks resolved
// so the digest names the file that actually runs. (A driver whose tools
// another manager resolves, cargo's rustup, finds them itself and hashes
// them with HashTool.)
func FindTool(ctx context.Context, env []string, name string) (string, error) {
	p, err := LookPath(env, name)
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(p)
}

// FileID identifies a file's current version (device, inode, size, mtime,
// ctime); "" when it does not exist. Caches of what a file says key on it.
func FileID(path string) string {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return ""
	}
	return fmt.Sprint(st.Dev, st.Ino, st.Size, st.Mtim.Nano(), st.Ctim.Nano())
}

type hashEntry struct {
	id   string
	tool provenance.Tool
}

// toolCache remembers tool hashes for the life of the process.
var toolCache = struct {
	sync.Mutex
	hash map[string]hashEntry
}{hash: map[string]hashEntry{}}

// HashTool describes the tool binary at path: version is the trimmed output
// of `<path> --version`, the digest is the sha256 of the file. The version
// command runs in this (trusted) process, before any build step.
//
// Results are cached per process while the file is unchanged (same inode,
// size, mtime and ctime): hashing a 40 MB cargo on every build is the
// largest fixed cost of a small build.
func HashTool(ctx context.Context, w *Workspace, name, path string) (provenance.Tool, error) {
	id := FileID(path)
	key := name + "\x00" + path
	toolCache.Lock()
	c, ok := toolCache.hash[key]
	toolCache.Unlock()
	if ok && id != "" && c.id == id {
		return c.tool, nil
	}
	tool, err := hashTool(ctx, w, name, path)
	if err == nil && id != "" && FileID(path) == id {
		toolCache.Lock()
		toolCache.hash[key] = hashEntry{id: id, tool: tool}
		toolCache.Unlock()
	}
	return tool, err
}

func hashTool(ctx context.Context, w *Workspace, name, path string) (provenance.Tool, error) {
	sum, err := SHA256File(path)
	if err != nil {
		return provenance.Tool{}, fmt.Errorf("hash %s: %w", name, err)
	}
	cmd := exec.CommandContext(ctx, path, "--version")
	cmd.Env = w.Env
	// Never the project: cargo reads its .cargo/config.toml, go its go.mod
	// toolchain line, corepack its packageManager field — all client data.
	cmd.Dir = "/"
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return provenance.Tool{}, fmt.Errorf("%s --version: %w: %s", name, err, strings.TrimSpace(stderr.String()))
	}
	return provenance.Tool{Name: name, Version: strings.TrimSpace(string(out)), SHA256: sum}, nil
}

// ResolveTool is FindTool then HashTool; it returns the binary's path too,
// so drivers run exactly the file they recorded.
func ResolveTool(ctx context.Context, w *Workspace, name string) (provenance.Tool, string, error) {
	path, err := FindTool(ctx, w.Env, name)
	if err != nil {
		return provenance.Tool{}, "", err
	}
	t, err := HashTool(ctx, w, name, path)
	return t, path, err
}

// SHA256File returns the lowercase hex sha256 of a file's contents.
func SHA256File(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// MaxProjectFile bounds a project file the trusted process reads whole
// (a lockfile, a manifest).
const MaxProjectFile = 64 << 20

// ReadProjectFile reads a file of the project by its relative name, refusing
// any path (or symlink) that leaves the project: a hostile checkout must not
// make kettle read and publish a server file as its lockfile. It never
// blocks on a FIFO and reads at most MaxProjectFile bytes.
func ReadProjectFile(dir, name string) ([]byte, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	return ReadFile(root, name, MaxProjectFile)
}

// ReadFile reads the regular file rel inside root (symlinks that stay
// inside are followed, as the toolchain in the sandbox follows them), at
// most max bytes; anything else, or a larger file, is an error.
func ReadFile(root *os.Root, rel string, max int64) ([]byte, error) {
	f, err := OpenRegular(root, rel)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", rel)
	}
	if fi.Size() > max {
		return nil, fmt.Errorf("%s: larger than %d bytes", rel, max)
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err == nil && int64(len(b)) > max {
		return nil, fmt.Errorf("%s: larger than %d bytes", rel, max)
	}
	return b, err
}

// ProjectFileExists reports whether name is a regular file inside dir
// (following symlinks that stay inside dir).
func ProjectFileExists(dir, name string) bool {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return false
	}
	defer root.Close()
	fi, err := root.Stat(name)
	return err == nil && fi.Mode().IsRegular()
}

// CopyArtifact copies the regular file src into dstDir under its base name
// (replacing a previous, possibly read-only copy), keeps its exec bits, and
// returns its name and the sha256 of the copy. src must not be a symlink:
// build outputs are untrusted and must not make kettle publish other files.
func CopyArtifact(src, dstDir string) (Artifact, error) {
	return CopyArtifactAs(src, dstDir, filepath.Base(src))
}

// CopyArtifactAs is CopyArtifact with an explicit artifact name.
func CopyArtifactAs(src, dstDir, name string) (Artifact, error) {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return Artifact{}, fmt.Errorf("artifact name %q: not a plain file name", name)
	}
	in, err := os.OpenFile(src, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return Artifact{}, err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return Artifact{}, err
	}
	if !fi.Mode().IsRegular() {
		return Artifact{}, fmt.Errorf("artifact %s: not a regular file", name)
	}
	dst := filepath.Join(dstDir, name)
	if err := os.Remove(dst); err != nil && !errors.Is(err, os.ErrNotExist) {
		return Artifact{}, err
	}
	mode := os.FileMode(0o644)
	if fi.Mode()&0o111 != 0 {
		mode = 0o755
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return Artifact{}, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), in)
	if err != nil {
		out.Close()
		return Artifact{}, fmt.Errorf("copy artifact %s: %w", name, err)
	}
	if err := out.Close(); err != nil {
		return Artifact{}, err
	}
	return Artifact{Name: name, SHA256: hex.EncodeToString(h.Sum(nil)), Size: n}, nil
}

// MaxLineBytes bounds one logged line; longer output is split into pieces
// of this size so a build printing megabytes without a newline cannot make
// kettle buffer it all.
const MaxLineBytes = 16 << 10

// LineWriter splits what is written to it into lines and passes each (without
// its line terminator) to a log function. "\n", "\r\n" and a lone "\r"
// (progress bars) all end a line. Safe for concurrent writers; call Flush at
// the end for a last line without a terminator.
type LineWriter struct {
	mu     sync.Mutex
	log    func(string)
	piece  func(string, bool) // NewPieceWriter: cont marks a line's later pieces
	cont   bool               // the next emit continues a split line
	buf    []byte
	sawCR  bool
	closed bool
}

// NewPieceWriter is NewLineWriter for a consumer that must tell the pieces
// of a line longer than MaxLineBytes apart from lines: piece is called with
// cont=true for every piece after a line's first.
func NewPieceWriter(piece func(s string, cont bool)) *LineWriter {
	return &LineWriter{log: func(string) {}, piece: piece}
}

// NewLineWriter returns a LineWriter calling log per line; log may be nil.
func NewLineWriter(log func(string)) *LineWriter {
	if log == nil {
		log = func(string) {}
	}
	return &LineWriter{log: log}
}

// Write implements io.Writer; it never fails.
func (l *LineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		if l.sawCR {
			l.sawCR = false
			if p[0] == '\n' { // the \n of a \r\n: the line was already emitted
				p = p[1:]
				continue
			}
		}
		i := bytes.IndexAny(p, "\r\n")
		if i < 0 {
			l.buf = append(l.buf, p...)
			for len(l.buf) >= MaxLineBytes {
				l.emitPiece(l.buf[:MaxLineBytes])
				l.buf = append(l.buf[:0], l.buf[MaxLineBytes:]...)
			}
			break
		}
		l.buf = append(l.buf, p[:i]...)
		for len(l.buf) > MaxLineBytes {
			l.emitPiece(l.buf[:MaxLineBytes])
			l.buf = append(l.buf[:0], l.buf[MaxLineBytes:]...)
		}
		l.emit(l.buf)
		l.buf = l.buf[:0]
		l.sawCR = p[i] == '\r'
		p = p[i+1:]
	}
	return n, nil
}

// emit ends a line with b.
func (l *LineWriter) emit(b []byte) {
	l.emitPiece(b)
	l.cont = false
}

// emitPiece passes on b, a line or a piece of one. (A rune cut at a piece
// boundary becomes U+FFFD.)
func (l *LineWriter) emitPiece(b []byte) {
	s := strings.ToValidUTF8(string(b), "\uFFFD")
	if l.piece != nil {
		l.piece(s, l.cont)
	} else {
		l.log(s)
	}
	l.cont = true
}

// Flush emits a pending partial line.
func (l *LineWriter) Flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		l.emit(l.buf)
		l.buf = l.buf[:0]
	}
}

// Run runs c through w.Runner with its output logged line by line to w.Log
// (c.Output is replaced), its Dir defaulting to w.Dir and, for a Network
// command, the proxy's destinations reported to w.Contacted.
func Run(ctx context.Context, w *Workspace, c *sandbox.Cmd) error {
	lw := NewLineWriter(w.Log)
	if w.LogPiece != nil {
		lw = NewPieceWriter(w.LogPiece)
	}
	c.Output = lw
	if c.Dir == "" {
		c.Dir = w.Dir
	}
	if c.Network && c.Contacted == nil {
		c.Contacted = w.Contacted
	}
	err := w.Runner.Run(ctx, c)
	lw.Flush()
	return err
}

// CommandFailed classifies the failure of a toolchain command: context
// expiry becomes Timeout or Canceled, anything else kind, with a message
// naming the command and how it ended (exit status or signal) but no path.
func CommandFailed(ctx context.Context, kind failure.Kind, what string, err error) error {
	if e := failure.Expired(ctx, err, what+": build timed out", what+": build canceled"); e != nil {
		return e
	}
	var fe *failure.Error
	if errors.As(err, &fe) {
		return err
	}
	var le *sandbox.LimitError
	if errors.As(err, &le) { // its message names the limit, never a path
		if errors.Is(err, sandbox.ErrTimeLimit) {
			kind = failure.Timeout
		}
		return failure.Wrap(kind, err, fmt.Sprintf("%s stopped: %s", what, le.Error()))
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return failure.Wrap(kind, err, fmt.Sprintf("%s failed (%s)", what, ee.ProcessState.String()))
	}
	return failure.Wrap(kind, err, what+" failed")
}
