package pipeline

import (
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/kettle-build/kettle/attest"
	"github.com/kettle-build/kettle/events"
	"github.com/kettle-build/kettle/sandbox"
)

func noSandbox() sandbox.Runner { return sandbox.NewNone() }

// fakeAttester returns a recognisable envelope around the report data.
type fakeAttester struct{ platform string }

func (f fakeAttester) Platform() string { return f.platform }

func (f fakeAttester) Attest(_ context.Context, rd [attest.ReportDataSize]byte) ([]byte, error) {
	return json.Marshal(map[string]any{"platform": f.platform, "evidence": map[string]any{"report_data": rd[:]}})
}

// recorder is an events.Sink keeping every log event, and the phases
// apart (a phase-only event is job state, not a log line).
type recorder struct {
	mu     sync.Mutex
	ev     []events.Event
	phases []events.Phase
}

func (r *recorder) Emit(e events.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e.Phase != nil {
		r.phases = append(r.phases, *e.Phase)
	}
	if e.PhaseOnly() {
		return
	}
	r.ev = append(r.ev, e)
}

func (r *recorder) msgs(t events.Type) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.ev {
		if e.Type == t {
			out = append(out, e.Msg)
		}
	}
	return out
}

func projectsDir() string { return filepath.Join("..", "testdata", "projects") }

// copyTree copies a test project (without build outputs) to dst.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() && (d.Name() == "target" || d.Name() == OutDirName) {
			return filepath.SkipDir
		}
		out := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(out, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fi, _ := d.Info()
		return os.WriteFile(out, b, fi.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}

func gitRun(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_AUTHOR_NAME=kettle", "GIT_AUTHOR_EMAIL=k@example.com", "GIT_COMMITTER_NAME=kettle",
		"GIT_COMMITTER_EMAIL=k@example.com", "GIT_AUTHOR_DATE=2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE=2026-01-01T00:00:00Z")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// gitProject copies a test project into a fresh git repository with a
// fixed commit (same content, author and date give the same commit id).
func gitProject(t *testing.T, name, dst string) string {
	t.Helper()
	copyTree(t, filepath.Join(projectsDir(), name), dst)
	gitRun(t, dst, "init", "-q", "-b", "main")
	gitRun(t, dst, "add", "-A")
	gitRun(t, dst, "commit", "-q", "-m", "test project")
	gitRun(t, dst, "remote", "add", "origin", "https://example.com/"+name+".git")
	return gitRun(t, dst, "rev-parse", "HEAD")
}

func toolEnv(testing.TB) []string {
	env := DefaultEnv()
	home, _ := os.UserHomeDir()
	path := toolchainPath(env) + ":" + filepath.Join(home, ".cargo", "bin")
	for i, kv := range env {
		if strings.HasPrefix(kv, "PATH=") {
			env[i] = "PATH=" + path
		}
	}
	return env
}

func toolchainPath(env []string) string {
	for _, kv := range env {
		if strings.HasPrefix(kv, "PATH=") {
			return kv[5:]
		}
	}
	return ""
}
