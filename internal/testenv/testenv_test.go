package testenv

import (
	"fmt"
	"testing"
)

// recorder is a testing.TB that records Skipf/Fatalf instead of stopping.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper()                        {}
func (r *recorder) Skipf(f string, a ...any)       { r.skipped = fmt.Sprintf(f, a...) }
func (r *recorder) Fatalf(f string, a ...any)      { r.failed = fmt.Sprintf(f, a...) }
func (r *recorder) result() (skipped, failed bool) { return r.skipped != "", r.failed != "" }

func TestNeed(t *testing.T) {
	for _, tc := range []struct {
		ci, ok       string
		skip, fail   bool
		capabilitySk bool
	}{
		{ci: "", ok: "no", skip: true, capabilitySk: true},
		{ci: "true", ok: "no", fail: true, capabilitySk: true},
		{ci: "1", ok: "no", fail: true, capabilitySk: true},
		{ci: "false", ok: "no", skip: true, capabilitySk: true},
		{ci: "true", ok: "yes"},
		{ci: "", ok: "yes"},
	} {
		t.Run(tc.ci+"/"+tc.ok, func(t *testing.T) {
			t.Setenv("CI", tc.ci)
			r := &recorder{TB: t}
			Need(r, tc.ok == "yes", "frob is not installed")
			if s, f := r.result(); s != tc.skip || f != tc.fail {
				t.Errorf("Need: skipped %q, failed %q", r.skipped, r.failed)
			}
			r = &recorder{TB: t}
			Capability(r, tc.ok == "yes", "no frob cgroup")
			if s, f := r.result(); s != tc.capabilitySk || f {
				t.Errorf("Capability: skipped %q, failed %q", r.skipped, r.failed)
			}
		})
	}
}

func TestNeedTool(t *testing.T) {
	t.Setenv("CI", "true")
	r := &recorder{TB: t}
	if p := NeedTool(r, "sh"); p == "" || r.failed != "" {
		t.Fatalf("sh: %q %q", p, r.failed)
	}
	NeedTool(r, "kettle-no-such-tool")
	if r.failed == "" {
		t.Fatal("a missing tool does not fail with CI=true")
	}
}
