package main

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoopbackListen(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8080": true, "[::1]:8080": true, "localhost:8080": true, "127.9.9.9:1": true,
		":8080": false, "0.0.0.0:8080": false, "[::]:8080": false, "10.0.0.5:8080": false,
		"kettle.example.com:80": false, "garbage": false,
	} {
		if got := loopbackListen(addr); got != want {
			t.Errorf("loopbackListen(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestParseOrigins(t *testing.T) {
	got, err := parseOrigins(" https://a.example, http://b.example:8080/ ,,")
	if err != nil || strings.Join(got, " ") != "https://a.example http://b.example:8080" {
		t.Fatalf("%q %v", got, err)
	}
	if got, err := parseOrigins(""); err != nil || got != nil {
		t.Fatalf("empty: %q %v", got, err)
	}
	for _, bad := range []string{"a.example", "https://a.example/path", "ftp://a.example", "https://u@a.example", "https://"} {
		if _, err := parseOrigins(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// captureServe runs `kettle serve args…` in-process with stderr redirected
// until the log contains stop (then it cancels) or the command ends; it
// returns the log.
func captureServe(t *testing.T, stop string, args ...string) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stderr
	os.Stderr = w
	defer func() { os.Stderr = old }()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan int, 1)
	go func() { done <- runServe(ctx, args); w.Close() }()
	var log strings.Builder
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
		if stop != "" && strings.Contains(sc.Text(), stop) {
			cancel()
		}
	}
	<-done
	return log.String()
}

// TestServeWarnsWithoutAuth: listening beyond loopback without
// --auth-token-file logs a warning at start-up (stderr); loopback or a
// token does not.
func TestServeWarnsWithoutAuth(t *testing.T) {
	base := []string{"--workers", "0", "--attester", "insecure", "--sandbox", "none"}
	// 192.0.2.1 (TEST-NET-1) is on no interface: the warning comes before
	// the listen, which then fails, so no test server binds beyond loopback.
	out := captureServe(t, "", append(base, "--data-dir", t.TempDir(), "--listen", "192.0.2.1:0")...)
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, "NO AUTHENTICATION") {
		t.Fatalf("no warning for a non-loopback --listen without a token:\n%s", out)
	}
	out = captureServe(t, "kettle serve listening", append(base, "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0")...)
	if strings.Contains(out, "NO AUTHENTICATION") || !strings.Contains(out, "kettle serve listening") {
		t.Fatalf("loopback listener:\n%s", out)
	}
	tok := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tok, []byte("t0ken\n"), 0o600)
	out = captureServe(t, "", append(base, "--data-dir", t.TempDir(), "--listen", "192.0.2.1:0", "--auth-token-file", tok)...)
	if strings.Contains(out, "NO AUTHENTICATION") {
		t.Fatalf("warned although a token is required:\n%s", out)
	}
	out = captureServe(t, "kettle serve listening", append(base, "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0", "--cors-origins", "*")...)
	if !strings.Contains(out, "--cors-origins '*'") {
		t.Fatalf("no warning for --cors-origins '*':\n%s", out)
	}
}

// TestServeNATSListenCreds: `kettle serve --nats-listen` prints how workers
// join (URL and credentials file), and the file is the store's member seed.
func TestServeNATSListenCreds(t *testing.T) {
	data := t.TempDir()
	out := captureServe(t, "kettle serve listening", "--workers", "0", "--attester", "insecure", "--sandbox", "none",
		"--data-dir", data, "--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0")
	creds := filepath.Join(data, "store", "auth", "member.nk")
	if !strings.Contains(out, "--nats-creds "+creds) {
		t.Fatalf("no join hint naming %s:\n%s", creds, out)
	}
	if fi, err := os.Stat(creds); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("creds file: %v %v", fi, err)
	}
}

func TestNATSFlagsCheck(t *testing.T) {
	for _, tc := range []struct {
		replicas int
		ttl      time.Duration
		ok       bool
	}{
		{1, 10 * time.Second, true},
		{3, 2 * time.Second, true},
		{5, time.Second, true},
		{0, 10 * time.Second, false},
		{6, 10 * time.Second, false},
		{3, 500 * time.Millisecond, false},
		{3, 0, false},
	} {
		n := natsFlags{replicas: tc.replicas, workerTTL: tc.ttl}
		if err := n.check(); (err == nil) != tc.ok {
			t.Errorf("replicas %d ttl %v: %v, want ok=%v", tc.replicas, tc.ttl, err, tc.ok)
		}
	}
	// Both commands refuse a bad value before doing anything.
	if code := runWorkerCmd(context.Background(), []string{"--nats", "nats://127.0.0.1:1", "--worker-ttl", "10ms"}); code != exitBadArgs {
		t.Errorf("kettle worker --worker-ttl 10ms: exit %d", code)
	}
	if code := runServe(context.Background(), []string{"--nats-replicas", "0"}); code != exitBadArgs {
		t.Errorf("kettle serve --nats-replicas 0: exit %d", code)
	}
}
