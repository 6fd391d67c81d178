package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// cgroups places each command in its own control group, so memory and the
// number of processes are bounded for the command's whole process tree (and
// nothing else: the server stays outside), total CPU time can be measured, and
// every process can be killed, even ones that left the process group.
//
// Both the unified hierarchy (v2) and the legacy one (v1) are supported: v1 is
// used for each controller mounted there, v2 for the rest.
type cgroups struct {
	// parent directory per controller ("memory", "pids", "cpu"); empty when
	// the controller cannot be used.
	memory, pids, cpu string
	memoryV2, pidsV2  bool
	cpuV2             bool
}

// cgroupSeq numbers command groups across every runner of this process.
var cgroupSeq atomic.Uint64

// cgroup is one command's groups.
type cgroup struct {
	cg                *cgroups
	memory, pids, cpu string // directories; "" when not used
	dirs              []string
}

// detectCgroups finds writable cgroup parents for this process. It creates
// (and keeps) one directory named name under each, in which commands get
// their own groups. It returns nil when no controller can be used.
func detectCgroups(name string) (*cgroups, error) {
	self, err := readSelfCgroups("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	mounts, err := readCgroupMounts("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	cg := &cgroups{}
	var v2mount string
	for _, m := range mounts {
		if m.v2 {
			if v2mount == "" {
				v2mount = m.dir
			}
			continue
		}
		for _, ctl := range m.controllers {
			var dst *string
			switch ctl {
			case "memory":
				dst = &cg.memory
			case "pids":
				dst = &cg.pids
			case "cpuacct":
				dst = &cg.cpu
			default:
				continue
			}
			if *dst != "" {
				continue
			}
			p := filepath.Join(m.dir, self[strings.Join(m.controllers, ",")], name)
			// Writable by us, not merely present (an unprivileged server
			// finds root's directory from an earlier run).
			if err := os.MkdirAll(p, 0o755); err == nil && unix.Access(p, unix.W_OK|unix.X_OK) == nil {
				*dst = p
			}
		}
	}
	if v2mount != "" && (cg.memory == "" || cg.pids == "" || cg.cpu == "") {
		// A v2 group may hold processes or enable controllers for its
		// children, not both; the server's own group usually holds the
		// server, so the commands' groups go under the root.
		base := filepath.Join(v2mount, name)
		avail, _ := os.ReadFile(filepath.Join(v2mount, "cgroup.controllers"))
		have := map[string]bool{}
		for _, f := range strings.Fields(string(avail)) {
			have[f] = true
		}
		var enable []string
		if cg.memory == "" && have["memory"] {
			enable = append(enable, "memory")
		}
		if cg.pids == "" && have["pids"] {
			enable = append(enable, "pids")
		}
		if err := os.MkdirAll(base, 0o755); err == nil && unix.Access(base, unix.W_OK|unix.X_OK) == nil {
			for _, ctl := range enable {
				if writeFile(filepath.Join(v2mount, "cgroup.subtree_control"), "+"+ctl) != nil ||
					writeFile(filepath.Join(base, "cgroup.subtree_control"), "+"+ctl) != nil {
					continue
				}
				if ctl == "memory" {
					cg.memory, cg.memoryV2 = base, true
				} else {
					cg.pids, cg.pidsV2 = base, true
				}
			}
			// cpu.stat (usage_usec) exists in every v2 group.
			if cg.cpu == "" {
				cg.cpu, cg.cpuV2 = base, true
			}
		}
	}
	if cg.memory == "" && cg.pids == "" && cg.cpu == "" {
		return nil, errors.New("no usable cgroup controller")
	}
	for _, parent := range []string{cg.memory, cg.pids, cg.cpu} {
		removeStale(parent)
	}
	return cg, nil
}

// removeStale removes the empty groups of processes that died (kill -9)
// before removing their own. rmdir fails on a group that still has tasks.
func removeStale(parent string) {
	if parent == "" {
		return
	}
	ents, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, e := range ents {
		pid, _, ok := strings.Cut(e.Name(), "-")
		if !e.IsDir() || !ok {
			continue
		}
		n, err := strconv.Atoi(pid)
		if err != nil || n <= 0 {
			continue
		}
		if _, err := os.Stat(filepath.Join("/proc", pid)); errors.Is(err, os.ErrNotExist) {
			_ = os.Remove(filepath.Join(parent, e.Name()))
		}
	}
}

// readSelfCgroups maps a hierarchy's controller list ("memory", "" for v2)
// to this process's path in it.
func readSelfCgroups(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]string{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		parts := strings.SplitN(s.Text(), ":", 3)
		if len(parts) == 3 {
			m[parts[1]] = parts[2]
		}
	}
	return m, s.Err()
}

type cgroupMount struct {
	dir         string
	v2          bool
	controllers []string // v1 only, in the order of /proc/self/cgroup
}

func readCgroupMounts(path string) ([]cgroupMount, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []cgroupMount
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superopts
		fields := strings.Fields(s.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		// Six fields before the separator, fstype and source after it.
		if sep < 6 || len(fields) < sep+3 {
			continue
		}
		fstype, dir := fields[sep+1], unescapeMount(fields[4])
		if fields[3] != "/" {
			continue // a bind of a sub-group: paths from /proc/self/cgroup do not apply
		}
		switch fstype {
		case "cgroup2":
			out = append(out, cgroupMount{dir: dir, v2: true})
		case "cgroup":
			var ctls []string
			if len(fields) > sep+3 {
				for _, o := range strings.Split(fields[sep+3], ",") {
					switch o {
					case "rw", "ro", "relatime", "noatime", "nosuid", "nodev", "noexec", "clone_children", "xattr":
						continue
					}
					if strings.Contains(o, "=") {
						continue
					}
					ctls = append(ctls, o)
				}
			}
			out = append(out, cgroupMount{dir: dir, controllers: ctls})
		}
	}
	return out, s.Err()
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func writeFile(path, s string) error {
	return os.WriteFile(path, []byte(s), 0o644)
}

// create makes the groups for one command and sets its limits.
func (cg *cgroups) create(l Limits) (*cgroup, error) {
	name := fmt.Sprintf("%d-%d", os.Getpid(), cgroupSeq.Add(1))
	g := &cgroup{cg: cg}
	mk := func(parent string) (string, error) {
		d := filepath.Join(parent, name)
		for _, have := range g.dirs {
			if have == d {
				return d, nil
			}
		}
		if err := os.Mkdir(d, 0o755); err != nil {
			return "", err
		}
		g.dirs = append(g.dirs, d)
		return d, nil
	}
	var err error
	if cg.memory != "" {
		if g.memory, err = mk(cg.memory); err != nil {
			g.remove()
			return nil, err
		}
		if l.Memory > 0 {
			v := strconv.FormatInt(l.Memory, 10)
			if cg.memoryV2 {
				err = writeFile(filepath.Join(g.memory, "memory.max"), v)
				_ = writeFile(filepath.Join(g.memory, "memory.swap.max"), "0")
			} else {
				err = writeFile(filepath.Join(g.memory, "memory.limit_in_bytes"), v)
				_ = writeFile(filepath.Join(g.memory, "memory.memsw.limit_in_bytes"), v)
			}
			if err != nil {
				g.remove()
				return nil, fmt.Errorf("set memory limit: %w", err)
			}
		}
	}
	if cg.pids != "" {
		if g.pids, err = mk(cg.pids); err != nil {
			g.remove()
			return nil, err
		}
		if l.Procs > 0 {
			if err := writeFile(filepath.Join(g.pids, "pids.max"), strconv.Itoa(l.Procs)); err != nil {
				g.remove()
				return nil, fmt.Errorf("set process limit: %w", err)
			}
		}
	}
	if cg.cpu != "" {
		if g.cpu, err = mk(cg.cpu); err != nil {
			g.remove()
			return nil, err
		}
	}
	return g, nil
}

// hasMemory and hasPids say whether the kernel enforces these limits.
func (g *cgroup) hasMemory() bool { return g != nil && g.memory != "" }
func (g *cgroup) hasPids() bool   { return g != nil && g.pids != "" }

// join moves pid (stopped before its first instruction) into the groups.
func (g *cgroup) join(pid int) error {
	for _, d := range g.dirs {
		if err := writeFile(filepath.Join(d, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
			return fmt.Errorf("join cgroup: %w", err)
		}
	}
	return nil
}

// oomKilled reports whether the kernel killed a process for memory.
func (g *cgroup) oomKilled() bool {
	if g.memory == "" {
		return false
	}
	if g.cg.memoryV2 {
		return readKey(filepath.Join(g.memory, "memory.events"), "oom_kill") > 0
	}
	return readKey(filepath.Join(g.memory, "memory.oom_control"), "oom_kill") > 0
}

// pidsExhausted reports whether a fork was refused by pids.max.
func (g *cgroup) pidsExhausted() bool {
	if g.pids == "" {
		return false
	}
	return readKey(filepath.Join(g.pids, "pids.events"), "max") > 0
}

// cpuUsage is the total CPU time of every process that ran in the group.
func (g *cgroup) cpuUsage() (time.Duration, bool) {
	if g == nil || g.cpu == "" {
		return 0, false
	}
	if g.cg.cpuV2 {
		v := readKey(filepath.Join(g.cpu, "cpu.stat"), "usage_usec")
		return time.Duration(v) * time.Microsecond, v >= 0
	}
	b, err := os.ReadFile(filepath.Join(g.cpu, "cpuacct.usage"))
	if err != nil {
		return 0, false
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return time.Duration(v), err == nil
}

// killAll kills every process in the groups until none is left.
func (g *cgroup) killAll() {
	if g == nil {
		return
	}
	for _, d := range g.dirs {
		if writeFile(filepath.Join(d, "cgroup.kill"), "1") == nil {
			continue
		}
		for i := 0; i < 100; i++ {
			pids := readPids(filepath.Join(d, "cgroup.procs"))
			if len(pids) == 0 {
				break
			}
			for _, p := range pids {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
			time.Sleep(time.Millisecond * time.Duration(1+i))
		}
	}
}

// remove deletes the groups; their processes must be gone.
func (g *cgroup) remove() {
	if g == nil {
		return
	}
	for _, d := range g.dirs {
		for i := 0; i < 50; i++ {
			err := os.Remove(d)
			if err == nil || errors.Is(err, os.ErrNotExist) {
				break
			}
			// Killed processes leave the group only once reaped.
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func readPids(path string) []int {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// readKey returns the value of "key N" in a flat-keyed cgroup file, -1 when absent.
func readKey(path, key string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == key {
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err == nil {
				return n
			}
		}
	}
	return -1
}
