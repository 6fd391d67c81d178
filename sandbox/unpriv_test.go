package sandbox

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kettle-build/kettle/egress"
	"github.com/kettle-build/kettle/internal/testenv"
)

const unprivUID = DefaultHostUID + 1

// TestUnprivileged runs this test binary as an unprivileged user (what
// `kettle serve` as a non-root user does) and, there, TestUnprivilegedChild:
// bubblewrap in an unprivileged user namespace, limits by rlimits (no
// cgroup delegation), fetch-phase egress through the shim.
func TestUnprivileged(t *testing.T) {
	if os.Getenv("KETTLE_UNPRIV_CHILD") != "" {
		t.Skip("child")
	}
	if os.Getuid() != 0 {
		t.Skip("needs root to start a process as another user")
	}
	testenv.NeedTool(t, "bwrap")
	testenv.NeedTool(t, "curl")
	// A directory the user can reach, holding a copy of this binary.
	base, err := os.MkdirTemp("/var/tmp", "kettle-unpriv-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(base)
	os.Chmod(base, 0o755)
	self, _ := os.Executable()
	bin := filepath.Join(base, "sandbox.test")
	copyFile(t, self, bin)
	home := filepath.Join(base, "home")
	os.Mkdir(home, 0o700)
	os.Chown(home, unprivUID, unprivUID)

	denied, deniedHits := hostListener(t)
	control, controlHits := hostListener(t)
	cmd := exec.Command(bin, "-test.run", "^TestUnprivilegedChild$", "-test.v", "-test.count=1")
	cmd.Dir = home
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + home, "TMPDIR=" + home, "KETTLE_UNPRIV_CHILD=1",
		"KETTLE_UNPRIV_DENIED=" + denied, "KETTLE_UNPRIV_CONTROL=" + control}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: unprivUID, Gid: unprivUID, Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	t.Logf("as uid %d:\n%s", unprivUID, out)
	if err != nil || !strings.Contains(string(out), "--- PASS: TestUnprivilegedChild") {
		t.Fatalf("unprivileged run: %v", err)
	}
	if *deniedHits != 0 {
		t.Errorf("the denied host listener was reached")
	}
	if *controlHits == 0 {
		t.Errorf("the control listener was not reached through the proxy")
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	out.Close()
}

// TestUnprivilegedChild is TestUnprivileged's part under the unprivileged
// user.
func TestUnprivilegedChild(t *testing.T) {
	if os.Getenv("KETTLE_UNPRIV_CHILD") == "" {
		t.Skip("run by TestUnprivileged")
	}
	denied, control := os.Getenv("KETTLE_UNPRIV_DENIED"), os.Getenv("KETTLE_UNPRIV_CONTROL")
	proxy, err := egress.New(egress.Policy{AllowPrivate: true, Deny: []string{denied}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewBwrap(WithEgress(proxy))
	if err != nil {
		t.Fatalf("bubblewrap as an unprivileged user: %v", err)
	}
	t.Logf("cgroups: %v", b.cgs != nil)
	dir := t.TempDir()
	var out bytes.Buffer
	err = b.Run(context.Background(), &Cmd{Args: []string{"sh", "-c", "id -u; echo x > made"}, Dir: dir, Env: testEnv, Output: &out,
		Limits: Limits{Memory: 1 << 30, Procs: 64, FileSize: 1 << 20, Wall: time.Minute}})
	if err != nil || strings.TrimSpace(out.String()) != "65534" {
		t.Fatalf("identity: %v %q", err, out.String())
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(dir, "made"), &st); err != nil || int(st.Uid) != os.Getuid() {
		t.Fatalf("made owned by %d, want the server's uid %d", st.Uid, os.Getuid())
	}
	// A limit still holds (rlimit fallback without delegated cgroups).
	err = b.Run(context.Background(), &Cmd{Args: []string{"sh", "-c", "head -c 10000000 /dev/zero > big"}, Dir: dir, Env: testEnv,
		Limits: Limits{FileSize: 1 << 20}})
	if err == nil || !strings.Contains(err.Error(), "file size limit") {
		t.Fatalf("file size limit: %v", err)
	}
	out.Reset()
	var got contacts
	script := "curl -fsS --max-time 5 -p http://" + control + "/ && echo CONTROL-OK; " +
		"curl -fsS --max-time 5 -p http://" + denied + "/ && echo DENIED-REACHED; " +
		"bash -c 'exec 3<>/dev/tcp/" + strings.Replace(denied, ":", "/", 1) + "' 2>/dev/null && echo DIRECT-REACHED; true"
	err = b.Run(context.Background(), &Cmd{Args: []string{"sh", "-c", script}, Dir: dir, Env: testEnv, Output: &out,
		Network: true, Contacted: got.add, Limits: Limits{Wall: time.Minute}})
	t.Logf("network:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	s := out.String()
	if !strings.Contains(s, "CONTROL-OK") || strings.Contains(s, "DENIED-REACHED") || strings.Contains(s, "DIRECT-REACHED") {
		t.Fatalf("egress through the shim: %q", s)
	}
	if c, ok := got.find(denied); !ok || !c.Refused {
		t.Errorf("denied listener reported as %+v %v", c, ok)
	}
	_ = net.IPv4len
}
