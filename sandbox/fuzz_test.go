package sandbox

import (
	"os"
	"path/filepath"
	"testing"
)

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
