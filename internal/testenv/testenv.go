// Package testenv lets tests ask for what they need from the machine. On a
// developer's machine a missing tool skips the test with a message naming
// it; with CI=true it fails, so a CI run can never pass by skipping (see
// docs/testing.md).
package testenv

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"testing"
	"time"
)

// CI reports whether the tests run in CI (CI=true or CI=1).
func CI() bool {
	v := os.Getenv("CI")
	return v == "true" || v == "1"
}

// Need skips the test, or fails it in CI, when ok is false; why says what is
// missing and how to get it.
func Need(t testing.TB, ok bool, why string) {
	t.Helper()
	if ok {
		return
	}
	if CI() {
		t.Fatalf("CI=true and %s (scripts/setup.sh installs the test tools)", why)
		return
	}
	t.Skipf("%s (scripts/setup.sh installs it)", why)
}

// NeedTool returns the path of the named program, skipping the test (or
// failing it in CI) when it is not on PATH.
func NeedTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	Need(t, err == nil, name+" is not installed")
	return p
}

// NeedReachable skips the test (or fails it in CI) unless url answers a GET
// within 10 s: tests that download from a real registry (the Go module
// proxy, the npm registry) need it to be there.
func NeedReachable(t testing.TB, url string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err == nil {
		resp.Body.Close()
	}
	Need(t, err == nil, fmt.Sprintf("%s is unreachable: %v", url, err))
}

// Capability skips the test when the machine lacks a kernel or platform
// feature (a memory cgroup, say) that no package installs. It skips in CI
// too: such a test cannot be made to run by setup, and the message says
// which capability was missing.
func Capability(t testing.TB, ok bool, what string) {
	t.Helper()
	if !ok {
		t.Skipf("machine capability missing, not a tool: %s", what)
	}
}

// MainNeed is Need for TestMain, where there is no *testing.T: when ok is
// false it prints why and exits, with status 0 (the package's tests skip)
// locally and 1 in CI.
func MainNeed(ok bool, pkg, why string) {
	if ok {
		return
	}
	if CI() {
		fmt.Fprintf(os.Stderr, "%s: CI=true and %s (scripts/setup.sh installs the test tools)\n", pkg, why)
		os.Exit(1)
	}
	fmt.Printf("%s: %s, skipping (scripts/setup.sh installs it)\n", pkg, why)
	os.Exit(0)
}
