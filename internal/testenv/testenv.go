// Package testenv lets tests ask for what they need from the machine. On a
// developer's machine a missing tool skips the test with a message naming
// it; with CI=true it fails, so a CI run can never pass by skipping (see
// docs/testing.md).
package testenv

import (
	"os"
	"os/exec"
	"testing"
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
