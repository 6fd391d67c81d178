// Package e2e runs the malicious Cargo projects of testdata/malicious through
// a real `kettle serve` (issue 7.2): all at once, with honest builds beside
// them, under bubblewrap with small limits. Each malicious job must end
// failed with a clear error_type and message, the honest ones must succeed,
// and the server must stay healthy.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
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
	os.Exit(harness.Main(m, "sandbox/e2e", &kettleBin))
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
	// A cleanup, not a defer: it must run after the server's (StartTest),
	// which cleanups do in reverse order.
	t.Cleanup(func() {
		for i := 0; i < 20 && os.RemoveAll(root) != nil; i++ {
			time.Sleep(100 * time.Millisecond)
		}
	})
	data := filepath.Join(root, "data")
	// Things in the server's data directory a build must not reach.
	canary := filepath.Join(data, "canary")
	standIn := filepath.Join(data, "dev", "sev-guest")
	harness.WriteFile(t, canary, "kettle-canary-data-dir")
	harness.WriteFile(t, standIn, "kettle-canary-stand-in-device")

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
	_, c := harness.StartTest(t, harness.Config{
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
	}, false)

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
			harness.CopyTree(t, filepath.Join("..", "..", "testdata", "malicious", j.name), dir, "target")
		}
		if j.attack != nil {
			harness.WriteFile(t, filepath.Join(dir, "attack.conf"), strings.Join(j.attack, "\n")+"\n")
		}
		id, err := c.SubmitArchive(ctx, harness.Targz(t, dir, j.name), j.name+".tar.gz", harness.NewNonce())
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
				t.Errorf("honest build beside the malicious ones failed: %+v\n%s", done, harness.Tail(log.String(), 40))
			}
		case done.Status != "failed" || done.ErrorType != j.want.errorType || !strings.Contains(done.Error, j.want.errorMsg):
			t.Errorf("%s: complete = %+v, want %s with %q\n%s", j.name, done, j.want.errorType, j.want.errorMsg, harness.Tail(log.String(), 40))
		case j.want.logMsg != "" && !strings.Contains(log.String(), j.want.logMsg):
			t.Errorf("%s: build log lacks %q\n%s", j.name, j.want.logMsg, harness.Tail(log.String(), 40))
		}
		if strings.Contains(log.String(), "LEAK") || strings.Contains(log.String(), "kettle-canary") {
			t.Errorf("%s: leak in the build log:\n%s", j.name, harness.Tail(log.String(), 40))
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
}

// honestProject writes a zero-dependency crate with an honest build script.
func honestProject(t *testing.T, dir string) {
	t.Helper()
	harness.WriteFile(t, filepath.Join(dir, "Cargo.toml"), "[package]\nname = \"honest\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n")
	harness.WriteFile(t, filepath.Join(dir, "Cargo.lock"), "# This file is automatically @generated by Cargo.\n# It is not intended for manual editing.\nversion = 4\n\n[[package]]\nname = \"honest\"\nversion = \"0.1.0\"\n")
	harness.WriteFile(t, filepath.Join(dir, "build.rs"), "fn main() {\n    let out = std::env::var(\"OUT_DIR\").unwrap();\n    std::fs::write(format!(\"{out}/greeting.txt\"), \"hello from an honest build\").unwrap();\n}\n")
	harness.WriteFile(t, filepath.Join(dir, "src", "main.rs"), "fn main() {\n    println!(\"{}\", include_str!(concat!(env!(\"OUT_DIR\"), \"/greeting.txt\")));\n}\n")
}
