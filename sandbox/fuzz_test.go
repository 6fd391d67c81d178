package sandbox

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseSize: operator-supplied sizes never panic and never go negative.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"0", "1", "512MiB", "1.5GiB", "4G", "-1", "1e30", "NaN", "Inf", " 3 K ", "B"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err == nil && n < 0 {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
	})
}

// FuzzReadCgroupMounts: odd mountinfo lines are skipped, never a panic.
func FuzzReadCgroupMounts(f *testing.F) {
	f.Add("35 25 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n36 25 0:31 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n")
	f.Add("1 2 3 / /a\\040b rw shared:1 - cgroup x rw,pids,name=systemd\n- - -\n")
	f.Fuzz(func(t *testing.T, s string) {
		p := filepath.Join(t.TempDir(), "mountinfo")
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		_, _ = readCgroupMounts(p)
		_, _ = readSelfCgroups(p)
		_ = unescapeMount(s)
	})
}
