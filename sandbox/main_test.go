package sandbox

import (
	"os"
	"testing"
)

// TestMain lets this test binary serve as the egress shim of unprivileged
// runners (TestUnprivileged re-runs it under another uid).
func TestMain(m *testing.M) {
	Shim()
	os.Exit(m.Run())
}
