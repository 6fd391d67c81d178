package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kettle-build/kettle/egress"
)

// Bwrap runs each command under bubblewrap:
//
//   - all namespaces new (user, pid, ipc, uts, cgroup, network): without
//     Cmd.Network the command sees only a loopback interface of its own;
//   - inside, uid/gid 65534 (nobody) with no capabilities, and no further
//     user namespaces. The user namespace maps 65534 to the server's uid, so
//     files the command writes in Cmd.Dir belong to the server and can be
//     collected without chown; isolation comes from what is mounted: a
//     read-only system (/usr, the /bin and /lib links, a minimal /etc with a
//     synthetic passwd/group/hosts, the PATH directories of Cmd.Env and
//     WithSystemPaths), a fresh /proc, a minimal /dev (null, zero, full,
//     random, urandom, tty, pts, shm: no TEE device), no /sys, a private
//     /tmp (tmpfs), Cmd.Dir and Cmd.Writable read-write, Cmd.ReadOnly
//     read-only, and nothing else — not the server's data directory, other
//     jobs, /root or the server's environment (Env is exactly Cmd.Env);
//   - paths given to WithHiddenPaths (and the TEE devices) are masked where
//     a mounted directory would show them;
//   - limits as for every runner (see run): the cgroups and rlimits are put
//     on bubblewrap before it starts, so the whole sandbox inherits them.
type Bwrap struct {
	cfg      *config
	cgs      *cgroups
	probeErr error
	once     sync.Once

	egressOnce sync.Once
	egress     *egress.Proxy
	egressErr  error
}

// Default hidden paths: the TEE guest devices and configfs-tsm. Bwrap never
// mounts /dev or /sys from the host, so these matter only when a caller
// binds a directory that contains them.
var defaultHidden = []string{
	"/dev/sev-guest", "/dev/sev", "/dev/tdx_guest", "/dev/tdx-guest",
	"/dev/tpm*", "/dev/tpmrm*", "/sys/kernel/config",
}

// setprivPath drops bubblewrap to the sandbox user (util-linux).
const setprivPath = "/usr/bin/setpriv"

// sandboxUID is the uid and gid of commands inside the sandbox.
const sandboxUID = 65534

// NewBwrap returns a Bwrap runner after checking that bubblewrap works here;
// the error wraps ErrUnavailable when it does not.
func NewBwrap(opts ...Option) (*Bwrap, error) {
	b := newBwrap(newConfig(opts))
	if err := b.Probe(); err != nil {
		return nil, err
	}
	return b, nil
}

func newBwrap(cfg *config) *Bwrap {
	b := &Bwrap{cfg: cfg}
	if !cfg.noCgroups {
		cgs, err := detectCgroups(cfg.cgroupName)
		if err != nil {
			cfg.logger.Warn("sandbox: cgroups unavailable: memory is bounded as address space (RLIMIT_AS) and processes by RLIMIT_NPROC of the sandbox user, which does not bind when that user is root", "err", err)
		}
		b.cgs = cgs
	}
	return b
}

// Name implements Runner.
func (b *Bwrap) Name() string { return bwrapName }

const bwrapName = "bwrap"

// Probe runs a trivial command in the sandbox, once, and reports whether
// that worked.
func (b *Bwrap) Probe() error {
	b.once.Do(func() {
		if _, err := os.Stat(b.cfg.bwrapPath); err != nil {
			b.probeErr = fmt.Errorf("%w: bubblewrap not found: %v", ErrUnavailable, err)
			return
		}
		dir, err := os.MkdirTemp("", "kettle-sandbox-probe-")
		if err != nil {
			b.probeErr = fmt.Errorf("%w: %v", ErrUnavailable, err)
			return
		}
		defer os.RemoveAll(dir)
		var out bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err = b.run(ctx, &Cmd{
			Args:   []string{"true"},
			Dir:    dir,
			Env:    []string{"PATH=/usr/bin:/bin"},
			Output: &out,
		})
		if err != nil {
			b.probeErr = fmt.Errorf("%w: bubblewrap fails here: %v: %s", ErrUnavailable, err, strings.TrimSpace(out.String()))
		}
	})
	return b.probeErr
}

// Run implements Runner.
func (b *Bwrap) Run(ctx context.Context, c *Cmd) error {
	if err := b.Probe(); err != nil {
		return err
	}
	return b.run(ctx, c)
}

func (b *Bwrap) run(ctx context.Context, c *Cmd) error {
	if err := checkCmd(c); err != nil {
		return err
	}
	path, err := lookPath(c.Args[0], c.Env, c.Dir)
	if err != nil {
		return err
	}
	args, err := b.args(c, path)
	if err != nil {
		return err
	}
	watch := append([]string{c.Dir}, c.Writable...)
	p := &proc{
		path:   b.cfg.bwrapPath,
		args:   args,
		env:    c.Env, // bubblewrap passes its environment on unchanged
		dir:    "/",
		out:    c.Output,
		limits: c.Limits,
		watch:  watch,
		bwrap:  true,
		files:  etcData,
		name:   filepath.Base(c.Args[0]),
	}
	var prepare []func() error
	if uid, gid, switchUser := b.cfg.sandboxUser(); switchUser {
		// bubblewrap runs as the sandbox user, in a user namespace of its
		// own that maps 65534 to it: what the build writes on the host is
		// owned by that user, and it can write only what is made its own.
		own := append([]string{c.Dir}, c.Writable...)
		for _, m := range c.Mounts {
			if m.Writable {
				own = append(own, m.Source)
			}
		}
		for _, d := range own {
			if err := chownTree(d, uid, gid); err != nil {
				return err
			}
		}
		root, err := stageRoot()
		if err != nil {
			return err
		}
		var st []staged
		p.args, st = stageArgs(p.args, root, uid, gid)
		if len(st) > 0 {
			prepare = append(prepare, func() error { return mountStaged(root, st) })
		}
		if sp, err := os.Stat(setprivPath); err == nil && sp.Mode().IsRegular() {
			// setpriv drops to the sandbox user only after the runner
			// gave the stopped process its rlimits: prlimit on another
			// user's process needs CAP_SYS_RESOURCE, which a root server
			// in a container often lacks.
			p.path = setprivPath
			p.args = append([]string{setprivPath, "--reuid=" + strconv.Itoa(uid), "--regid=" + strconv.Itoa(gid),
				"--clear-groups", "--nnp", "--pdeathsig=SIGKILL", "--"}, p.args...)
		} else {
			p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
		}
	}
	if c.Network {
		proxy, err := b.proxy()
		if err != nil {
			return err
		}
		p.env = withEnv(c.Env, proxyEnv()...)
		var sess *egress.Session
		defer func() {
			if sess != nil {
				sess.Close()
			}
		}()
		if os.Geteuid() != 0 {
			// No private namespace of our making: bubblewrap makes it
			// and the shim bridges it to the proxy's Unix socket.
			dir, exe, err := shimSetup()
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			ln, err := net.Listen("unix", filepath.Join(dir, filepath.Base(shimSocket)))
			if err != nil {
				return fmt.Errorf("sandbox: egress socket: %w", err)
			}
			sess = proxy.Serve(ln, c.Contacted)
			p.args = shimArgs(p.args, dir, exe)
		} else {
			prepare = append(prepare, func() error {
				ln, err := privateNetns()
				if err != nil {
					return err
				}
				// cfg.run returns only after the start goroutine
				// reported, so sess is set by then.
				sess = proxy.Serve(ln, c.Contacted)
				return nil
			})
		}
	}
	if len(prepare) > 0 {
		p.prepare = func() error {
			for _, f := range prepare {
				if err := f(); err != nil {
					return err
				}
			}
			return nil
		}
	}
	return b.cfg.run(ctx, b.cgs, p)
}

// shimArgs turns bubblewrap arguments a for the shim: a network namespace
// of bubblewrap's own (no --share-net), the socket directory and the shim
// bound in, and the shim running the command.
func shimArgs(a []string, dir, exe string) []string {
	end := slices.Index(a, "--") // bubblewrap's options end here (see args)
	var out []string
	for i, s := range a[:end] {
		if s == "--share-net" {
			continue
		}
		if s == "--remount-ro" && a[i+1] == "/" {
			out = append(out, "--ro-bind", exe, shimExe, "--bind", dir, filepath.Dir(shimSocket))
		}
		out = append(out, s)
	}
	out = append(out, "--", shimExe, shimArg)
	return append(out, a[end+1:]...)
}

// proxy is the egress proxy of Network commands.
func (b *Bwrap) proxy() (*egress.Proxy, error) {
	b.egressOnce.Do(func() {
		if b.cfg.egress != nil {
			b.egress = b.cfg.egress
			return
		}
		b.egress, b.egressErr = egress.New(egress.Policy{Logger: b.cfg.logger})
	})
	return b.egress, b.egressErr
}

// Synthetic identity files: the sandbox user exists by name, nobody else does.
const (
	etcPasswd = "root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
	etcGroup  = "root:x:0:\nnogroup:x:65534:\n"
	etcHosts  = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
)

// etcFiles are bound read-only from the host when they exist: what the
// toolchains need to run (loader, alternatives, CA certificates for the fetch
// phase, time zone). Notably absent: shadow, ssl/private, ssh, credentials.
var etcFiles = []string{
	"/etc/alternatives", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d",
	"/etc/localtime", "/etc/timezone", "/etc/nsswitch.conf", "/etc/host.conf", "/etc/gai.conf",
	"/etc/protocols", "/etc/services", "/etc/os-release", "/etc/debian_version", "/etc/mime.types",
	"/etc/ssl/certs", "/etc/ssl/openssl.cnf", "/etc/ca-certificates", "/etc/ca-certificates.conf",
}

// topLinks are the top-level directories that merged-/usr systems make
// symlinks into /usr.
var topLinks = []string{"/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"}

type mount struct {
	src string
	rw  bool
}

// args builds bubblewrap's command line for c.
func (b *Bwrap) args(c *Cmd, path string) ([]string, error) {
	hidden, err := b.hiddenPaths()
	if err != nil {
		return nil, err
	}
	a := []string{b.cfg.bwrapPath,
		"--unshare-all", "--unshare-user", "--disable-userns",
		"--uid", fmt.Sprint(sandboxUID), "--gid", fmt.Sprint(sandboxUID),
		"--hostname", "kettle",
		"--die-with-parent", "--new-session",
	}
	if c.Network {
		// The network namespace bubblewrap shares is not the host's: run
		// starts it from a thread that privateNetns moved into a fresh
		// one whose only exit is the egress proxy.
		a = append(a, "--share-net")
	}

	// Read-only system.
	a = append(a, "--ro-bind", "/usr", "/usr")
	for _, d := range topLinks {
		fi, err := os.Lstat(d)
		switch {
		case err != nil:
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(d)
			if err == nil {
				a = append(a, "--symlink", target, d)
			}
		case fi.IsDir():
			a = append(a, "--ro-bind", d, d)
		}
	}
	for _, f := range etcFiles {
		a = append(a, "--ro-bind-try", f, f)
	}
	a = append(a, "--proc", "/proc", "--dev", "/dev")
	tmpSize := b.cfg.tmpfsSize
	if tmpSize == 0 {
		tmpSize = c.Limits.Disk
	}
	if tmpSize > 0 {
		a = append(a, "--size", fmt.Sprint(tmpSize))
	}
	a = append(a, "--tmpfs", "/tmp")

	// Directories: system extras and PATH read-only, then the command's own.
	// A directory inside one already bound is not bound again, unless its
	// mode differs.
	var order []string
	mounts := map[string]mount{}
	add := func(p string, rw bool) error {
		p = filepath.Clean(p)
		if !filepath.IsAbs(p) {
			return fmt.Errorf("sandbox: %q is not an absolute path", p)
		}
		if p == "/" {
			return errors.New("sandbox: refusing to expose /")
		}
		for _, h := range hidden {
			if p == h {
				return fmt.Errorf("sandbox: refusing to expose a hidden path")
			}
		}
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("sandbox: directory to bind: %w", err)
		}
		if m, ok := mounts[p]; ok {
			if rw && !m.rw {
				mounts[p] = mount{src: p, rw: true}
			}
			return nil
		}
		mounts[p] = mount{src: p, rw: rw}
		order = append(order, p)
		return nil
	}
	var sys []string
	sys = append(sys, b.cfg.system...)
	sys = append(sys, toolchainDirs(c.Env)...)
	for _, p := range sys {
		if p == "/" || !filepath.IsAbs(p) || under(p, "/usr") || isHiddenOrUnder(p, hidden) {
			continue // never the root, never relative entries, never hidden places
		}
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			if err := add(p, false); err != nil {
				return nil, err
			}
		}
	}
	for _, p := range c.ReadOnly {
		if err := add(p, false); err != nil {
			return nil, err
		}
	}
	for _, p := range c.Writable {
		if err := add(p, true); err != nil {
			return nil, err
		}
	}
	if err := add(c.Dir, true); err != nil {
		return nil, err
	}
	// Parents first, so a child bind is not hidden under its parent's.
	sort.SliceStable(order, func(i, j int) bool {
		return strings.Count(order[i], "/") < strings.Count(order[j], "/")
	})
	for _, p := range order {
		m := mounts[p]
		if m.rw {
			a = append(a, "--bind", m.src, p)
		} else {
			a = append(a, "--ro-bind", m.src, p)
		}
	}
	for _, m := range c.Mounts {
		if !filepath.IsAbs(m.Source) || !filepath.IsAbs(m.Target) || filepath.Clean(m.Target) == "/" {
			return nil, fmt.Errorf("sandbox: mount %q -> %q must be absolute and not /", m.Source, m.Target)
		}
		if isHiddenOrUnder(filepath.Clean(m.Source), hidden) {
			return nil, fmt.Errorf("sandbox: refusing to expose a hidden path")
		}
		if fi, err := os.Stat(m.Source); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("sandbox: directory to mount: %w", fs.ErrNotExist)
		}
		flag := "--ro-bind"
		if m.Writable {
			flag = "--bind"
		}
		a = append(a, flag, m.Source, filepath.Clean(m.Target))
	}
	// Mask hidden paths that a bound directory would show.
	for _, h := range hidden {
		for _, p := range order {
			if !isUnder(h, p) {
				continue
			}
			fi, err := os.Lstat(h)
			if err != nil {
				break
			}
			if fi.IsDir() {
				a = append(a, "--tmpfs", h, "--remount-ro", h)
			} else {
				a = append(a, "--ro-bind", "/dev/null", h)
			}
			break
		}
	}
	// Synthetic identity files come through pipes (descriptors 3, 4, 5 of
	// bubblewrap; see proc.files).
	for i, f := range []string{"passwd", "group", "hosts"} {
		a = append(a, "--ro-bind-data", fmt.Sprint(3+i), "/etc/"+f)
	}
	a = append(a, "--remount-ro", "/", "--chdir", c.Dir, "--")
	// bubblewrap always sets PWD; env takes it out again (or puts back the
	// caller's), so the environment is exactly Cmd.Env.
	a = append(a, "/usr/bin/env", "-u", "PWD")
	if pwd, ok := envLookup(c.Env, "PWD"); ok {
		a = append(a, "PWD="+pwd)
	}
	if strings.Contains(path, "=") {
		return nil, fmt.Errorf("sandbox: command path %q contains '='", filepath.Base(path))
	}
	a = append(a, path)
	a = append(a, c.Args[1:]...)
	return a, nil
}

// etcData is what bubblewrap reads from descriptors 3, 4, 5.
var etcData = []string{etcPasswd, etcGroup, etcHosts}

// hiddenPaths expands the default and configured hidden paths.
func (b *Bwrap) hiddenPaths() ([]string, error) {
	var out []string
	for _, h := range append(append([]string{}, defaultHidden...), b.cfg.hidden...) {
		if !filepath.IsAbs(h) {
			return nil, fmt.Errorf("sandbox: hidden path %q is not absolute", h)
		}
		h = filepath.Clean(h)
		if strings.ContainsAny(h, "*?[") {
			matches, err := filepath.Glob(h)
			if err != nil {
				return nil, fmt.Errorf("sandbox: hidden path %q: %w", h, err)
			}
			out = append(out, matches...)
			continue
		}
		// Resolve symlinks too: a bind of the link's target must not show it.
		out = append(out, h)
		if r, err := filepath.EvalSymlinks(h); err == nil && r != h {
			out = append(out, r)
		}
	}
	return out, nil
}

// toolchainDirs are the directories a command needs to find its toolchain:
// every absolute PATH entry of env and, for rustup's proxies, RUSTUP_HOME
// (or the .rustup beside a .cargo/bin on PATH). Only the bin directory of
// ~/.cargo is exposed, never ~/.cargo itself (it may hold credentials).
func toolchainDirs(env []string) []string {
	var out []string
	for _, d := range filepath.SplitList(envValue(env, "PATH")) {
		if !filepath.IsAbs(d) {
			continue
		}
		d = filepath.Clean(d)
		out = append(out, d)
		if envValue(env, "RUSTUP_HOME") == "" && filepath.Base(d) == "bin" && filepath.Base(filepath.Dir(d)) == ".cargo" {
			out = append(out, filepath.Join(filepath.Dir(filepath.Dir(d)), ".rustup"))
		}
	}
	if r := envValue(env, "RUSTUP_HOME"); filepath.IsAbs(r) {
		out = append(out, filepath.Clean(r))
	}
	return out
}

// isUnder reports whether p is strictly inside dir.
func isUnder(p, dir string) bool {
	if dir == "/" {
		return p != "/"
	}
	return strings.HasPrefix(p, dir+"/")
}

// under reports whether p is dir or inside it.
func under(p, dir string) bool { return p == dir || isUnder(p, dir) }

func isHiddenOrUnder(p string, hidden []string) bool {
	for _, h := range hidden {
		if under(p, h) || isUnder(h, p) {
			return true
		}
	}
	return false
}
