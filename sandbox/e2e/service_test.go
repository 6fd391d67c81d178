// Package e2e runs the malicious Cargo projects of testdata/malicious through
// a real `kettle serve` (issue 7.2): all at once, with honest builds beside
// them, under bubblewrap with small limits. Each malicious job must end
// failed with a clear error_type and message, the honest ones must succeed,
// and the server must stay healthy.
package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kettle-build/kettle/bench/harness"
	"github.com/kettle-build/kettle/internal/testenv"
	"github.com/kettle-build/kettle/sandbox"
)

var kettleBin string

func TestMain(m *testing.M) {
	_, err := sandbox.NewBwrap()
	testenv.MainNeed(err == nil, "sandbox/e2e", fmt.Sprintf("bubblewrap is unavailable: %v", err))
	home, _ := os.UserHomeDir()
	_, err = os.Stat(filepath.Join(home, ".cargo", "bin", "cargo"))
	testenv.MainNeed(err == nil, "sandbox/e2e", "cargo is not installed")
	// The server finds cargo where rustup put it.
	os.Setenv("PATH", filepath.Join(home, ".cargo", "bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
	dir, err := os.MkdirTemp("", "kettle-sandbox-e2e-bin-")
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	kettleBin, err = harness.BuildBinary(ctx, dir)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sandbox/e2e:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// expectation for one job.
type expectation struct {
	errorType string // "" for success
	errorMsg  string // in the complete event's error
	logMsg    string // in the build log
}

func TestMaliciousBuildsThroughService(t *testing.T) {
	root, err := os.MkdirTemp("/var/tmp", "kettle-sandbox-e2e-")
	if err != nil {
		root = t.TempDir()
	}
	defer func() {
		for i := 0; i < 20 && os.RemoveAll(root) != nil; i++ {
			time.Sleep(100 * time.Millisecond)
		}
	}()
	data := filepath.Join(root, "data")
	// Things in the server's data directory a build must not reach.
	canary := filepath.Join(data, "canary")
	standIn := filepath.Join(data, "dev", "sev-guest")
	mustWrite(t, canary, "kettle-canary-data-dir")
	mustWrite(t, standIn, "kettle-canary-stand-in-device")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns sync.WaitGroup
	arrived := make(chan string, 16)
	conns.Add(1)
	go func() {
		defer conns.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			arrived <- c.RemoteAddr().String()
			c.Close()
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	srv, err := harness.Start(ctx, harness.Config{
		Bin:     kettleBin,
		DataDir: data,
		Args: []string{"--attester", "insecure", "--sandbox", "bwrap", "--workers", "3",
			"--build-timeout", "45s", "--log-format", "json"},
		Env: []string{
			sandbox.EnvMemory + "=1GiB",
			sandbox.EnvProcs + "=256",
			sandbox.EnvDisk + "=256MiB",
			sandbox.EnvFileSize + "=64MiB",
			sandbox.EnvCPUTime + "=6s",
		},
		LogPath: filepath.Join(root, "serve.log"),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Kill()
	c := &harness.Client{URL: srv.URL}

	outside := []string{filepath.Join(data, "pwned"), filepath.Join(data, "work", "pwned"), "/usr/local/pwned-by-kettle-e2e", "/pwned-by-kettle-e2e"}
	jobs := []struct {
		name   string
		attack []string
		want   expectation
	}{
		{"honest", nil, expectation{}},
		{"net-loopback", []string{ln.Addr().String()}, expectation{"BuildFailed", "cargo build failed", "kettle-malicious: no network"}},
		{"read-canary", []string{canary, filepath.Join(data, "work"), "/etc/shadow"}, expectation{"BuildFailed", "cargo build failed", "kettle-malicious: nothing readable"}},
		{"write-outside", outside, expectation{"BuildFailed", "cargo build failed", "kettle-malicious: nothing writable"}},
		{"tee-device", []string{standIn}, expectation{"BuildFailed", "cargo build failed", "kettle-malicious: no TEE device"}},
		{"fork-bomb", nil, expectation{"BuildFailed", "process limit exceeded", ""}},
		{"honest", nil, expectation{}},
		{"mem-hog", nil, expectation{"BuildFailed", "memory limit exceeded", ""}},
		{"disk-hog", nil, expectation{"BuildFailed", "disk usage limit exceeded", ""}},
		{"big-file", nil, expectation{"BuildFailed", "file size limit exceeded", ""}},
		{"sleep-forever", nil, expectation{"Timeout", "timed out", ""}},
		{"cpu-spin", nil, expectation{"BuildFailed", "CPU time limit exceeded", ""}},
		{"honest", nil, expectation{}},
	}
	type result struct {
		events []harness.Event
		err    error
	}
	results := make([]result, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		dir := filepath.Join(root, "src", fmt.Sprint(i))
		if j.name == "honest" {
			honestProject(t, dir)
		} else {
			copyDir(t, filepath.Join("..", "..", "testdata", "malicious", j.name), dir)
		}
		if j.attack != nil {
			mustWrite(t, filepath.Join(dir, "attack.conf"), strings.Join(j.attack, "\n")+"\n")
		}
		id, err := c.SubmitArchive(ctx, targz(t, dir, j.name), j.name+".tar.gz", harness.NewNonce())
		if err != nil {
			t.Fatalf("submit %s: %v", j.name, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			evs, err := c.Wait(ctx, id)
			results[i] = result{evs, err}
		}()
	}
	wg.Wait()

	for i, j := range jobs {
		r := results[i]
		if r.err != nil {
			t.Errorf("%s: %v", j.name, r.err)
			continue
		}
		done, err := harness.ParseComplete(r.events[len(r.events)-1])
		if err != nil {
			t.Errorf("%s: %v", j.name, err)
			continue
		}
		var log strings.Builder
		for _, e := range r.events {
			var v struct{ Msg string }
			if json.Unmarshal([]byte(e.Data), &v) == nil {
				log.WriteString(v.Msg + "\n")
			}
		}
		t.Logf("%-14s %s %s %q", j.name, done.Status, done.ErrorType, done.Error)
		switch {
		case j.want.errorType == "":
			if done.Status != "ok" {
				t.Errorf("honest build beside the malicious ones failed: %+v\n%s", done, tailStr(log.String(), 3000))
			}
		case done.Status != "failed" || done.ErrorType != j.want.errorType || !strings.Contains(done.Error, j.want.errorMsg):
			t.Errorf("%s: complete = %+v, want %s with %q\n%s", j.name, done, j.want.errorType, j.want.errorMsg, tailStr(log.String(), 3000))
		case j.want.logMsg != "" && !strings.Contains(log.String(), j.want.logMsg):
			t.Errorf("%s: build log lacks %q\n%s", j.name, j.want.logMsg, tailStr(log.String(), 3000))
		}
		if strings.Contains(log.String(), "LEAK") || strings.Contains(log.String(), "kettle-canary") {
			t.Errorf("%s: leak in the build log:\n%s", j.name, tailStr(log.String(), 3000))
		}
		if strings.Contains(done.Error, root) {
			t.Errorf("%s: error names a server path: %q", j.name, done.Error)
		}
	}
	select {
	case a := <-arrived:
		t.Errorf("a connection from a build arrived (from %s)", a)
	default:
	}
	for _, p := range outside {
		if _, err := os.Stat(p); err == nil {
			os.Remove(p)
			t.Errorf("%s was written by a build", p)
		}
	}
	if b, err := os.ReadFile(canary); err != nil || string(b) != "kettle-canary-data-dir" {
		t.Errorf("canary changed: %v %q", err, b)
	}
	if resp, err := c.Do(ctx, "GET", "/health", "", nil); err != nil {
		t.Errorf("server unhealthy after the malicious builds: %v", err)
	} else {
		resp.Body.Close()
	}
	if t.Failed() {
		t.Logf("server log:\n%s", tailStr(srv.Log(), 6000))
	}
}

// honestProject writes a zero-dependency crate with an honest build script.
func honestProject(t *testing.T, dir string) {
	t.Helper()
	mustWrite(t, filepath.Join(dir, "Cargo.toml"), "[package]\nname = \"honest\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n")
	mustWrite(t, filepath.Join(dir, "Cargo.lock"), "# This file is automatically @generated by Cargo.\n# It is not intended for manual editing.\nversion = 4\n\n[[package]]\nname = \"honest\"\nversion = \"0.1.0\"\n")
	mustWrite(t, filepath.Join(dir, "build.rs"), "fn main() {\n    let out = std::env::var(\"OUT_DIR\").unwrap();\n    std::fs::write(format!(\"{out}/greeting.txt\"), \"hello from an honest build\").unwrap();\n}\n")
	mustWrite(t, filepath.Join(dir, "src", "main.rs"), "fn main() {\n    println!(\"{}\", include_str!(concat!(env!(\"OUT_DIR\"), \"/greeting.txt\")));\n}\n")
}

func mustWrite(t *testing.T, p, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			if d.Name() == "target" {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// targz packs dir as a gzip tarball under top/.
func targz(t *testing.T, dir, top string) []byte {
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

func tailStr(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
