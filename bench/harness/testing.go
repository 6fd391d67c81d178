package harness

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// The helpers below serve the test packages that start a real `kettle
// serve` (test/e2e, sandbox/e2e): one way to build the binary, start and
// stop the server, and pack and copy projects.

// Main is the body of TestMain for a package whose tests start kettle: it
// builds the binary once into a temporary directory (setting *bin), puts
// ~/.cargo/bin on PATH (the server finds cargo where rustup put it), runs
// the tests and removes the binary. name prefixes a build failure. Its
// result is the exit code.
func Main(m *testing.M, name string, bin *string) int {
	if home, err := os.UserHomeDir(); err == nil {
		os.Setenv("PATH", filepath.Join(home, ".cargo", "bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
	}
	dir, err := os.MkdirTemp("", "kettle-"+strings.ReplaceAll(name, "/", "-")+"-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	*bin, err = BuildBinary(ctx, dir)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		return 1
	}
	return m.Run()
}

// StartTest starts `kettle serve` for t (see Start; LogPath defaults to a
// file in t.TempDir). The server is killed at cleanup, and when t failed
// the tail of its log is shown. With ready, it also waits until GET
// /ready answers (the store and a worker are up).
func StartTest(t testing.TB, c Config, ready bool) (*Server, *Client) {
	t.Helper()
	if c.LogPath == "" {
		c.LogPath = filepath.Join(t.TempDir(), "serve.log")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Start(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Kill()
		if t.Failed() {
			t.Logf("server log (%s):\n%s", s.LogPath, Tail(s.Log(), 60))
		}
	})
	cl := &Client{URL: s.URL}
	if ready {
		WaitReady(t, cl)
	}
	return s, cl
}

// WaitReady waits up to 30 s for GET /ready to answer 2xx.
func WaitReady(t testing.TB, c *Client) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := c.Do(context.Background(), "GET", "/ready", "", nil)
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not ready: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// DataDir is a directory for server data inside t.TempDir: after a kill
// -9, processes the server started (git, the sandbox) may still be
// finishing, so its removal retries for a while first; whatever is still
// there then makes t.TempDir's own cleanup fail the test (a leak).
func DataDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "d")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for i := 0; i < 100; i++ {
			if os.RemoveAll(dir) == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	return dir
}

// Tail is the last n lines of s.
func Tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Targz packs dir as a gzip tarball under top/, entries in sorted order,
// with their modes (a test's own tar writer: it must be able to write what
// kettle's refuses).
func Targz(t testing.TB, dir, top string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	var paths []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && p != dir {
			paths = append(paths, p)
		}
		return err
	})
	sort.Strings(paths)
	for _, p := range paths {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(dir, p)
		h, _ := tar.FileInfoHeader(fi, "")
		h.Name = top + "/" + filepath.ToSlash(rel)
		if fi.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			_, _ = tw.Write(b)
		}
	}
	_ = tw.Close()
	_ = zw.Close()
	return buf.Bytes()
}

// CopyTree copies the directories and regular files of src to dst with
// their permissions (made writable by the owner, so t.TempDir can remove
// them), leaving out directories named in skip (build outputs).
func CopyTree(t testing.TB, src, dst string, skip ...string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(dst, rel)
		if d.IsDir() {
			if p != src && slices.Contains(skip, d.Name()) {
				return filepath.SkipDir
			}
			return os.MkdirAll(out, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		return os.WriteFile(out, b, fi.Mode().Perm()|0o200)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// WriteFile writes s to p, creating its directories.
func WriteFile(t testing.TB, p, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
