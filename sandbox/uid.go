package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// DefaultHostUID is the host uid (and gid) that Bwrap's commands run as
// when the server runs as root: a number no account or file on a normal
// system uses, so a build owns nothing outside its job directory.
const DefaultHostUID = 2147000000

// WithSandboxUser sets the host uid and gid that Bwrap runs bubblewrap
// (and so every sandboxed command) as, when the server runs as root. The
// sandbox's uid 65534 is mapped to it: what a build writes on the host is
// owned by it. Before each command the runner makes the command's writable
// directories (Cmd.Dir, Cmd.Writable, writable Cmd.Mounts) owned by it.
// uid 0 keeps bubblewrap running as root with 65534 mapped to root (the
// behaviour before this option; not recommended). When the server does not
// run as root the option has no effect: commands run as the server's uid.
func WithSandboxUser(uid, gid int) Option {
	return func(c *config) { c.uid, c.gid, c.uidSet = uid, gid, true }
}

// sandboxUser reports the host identity for commands and whether the
// runner must switch to it (the server runs as root).
func (c *config) sandboxUser() (uid, gid int, switchUser bool) {
	if os.Geteuid() != 0 {
		return os.Geteuid(), os.Getegid(), false
	}
	uid, gid = DefaultHostUID, DefaultHostUID
	if c.uidSet {
		uid, gid = c.uid, c.gid
	}
	if uid == 0 {
		return 0, 0, false
	}
	return uid, gid, true
}

// chownTree makes everything under root owned by uid:gid without following
// a symlink (lchown; WalkDir never descends into one). Regular files with
// more than one link are left alone: they may be shared (a hard-linked
// cache) and must not become writable by the build.
func chownTree(root string, uid, gid int) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == root {
				return err
			}
			return nil // vanished: nothing to own
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok || (int(st.Uid) == uid && int(st.Gid) == gid) {
			return nil
		}
		if d.Type().IsRegular() && st.Nlink > 1 {
			return nil
		}
		if err := unix.Lchown(p, uid, gid); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("sandbox: chown for the sandbox user: %w", err)
		}
		return nil
	})
}

// reachable reports whether uid:gid (no supplementary groups) can search
// every directory on the way to p, as bubblewrap running as that user must
// to bind it. ACLs are ignored: a path they open is staged needlessly,
// which is harmless.
func reachable(p string, uid, gid int) bool {
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		return false
	}
	for d := filepath.Dir(r); ; d = filepath.Dir(d) {
		var st unix.Stat_t
		if unix.Stat(d, &st) != nil {
			return false
		}
		var bit uint32 = 0o001
		switch {
		case int(st.Uid) == uid:
			bit = 0o100
		case int(st.Gid) == gid:
			bit = 0o010
		}
		if st.Mode&bit == 0 {
			return false
		}
		if d == "/" {
			return true
		}
	}
}

// staged is a bind source the sandbox user cannot reach, bound first (by
// the trusted process, in a private mount namespace) at a place it can.
type staged struct{ src, at string }

// stageRoot is where staged sources are bound: a tmpfs mounted over this
// directory in the private mount namespace of the starting thread.
func stageRoot() (string, error) {
	for _, d := range []string{"/run/kettle-sandbox", filepath.Join(os.TempDir(), "kettle-sandbox-stage")} {
		if err := os.MkdirAll(d, 0o755); err == nil {
			return d, nil
		}
	}
	return "", errors.New("sandbox: no directory for staging binds")
}

// stageArgs rewrites the bind sources of bubblewrap's arguments a that
// uid:gid cannot reach to places under root.
func stageArgs(a []string, root string, uid, gid int) ([]string, []staged) {
	out := append([]string(nil), a...)
	var st []staged
	seen := map[string]string{}
	for i := 0; i+2 < len(out); i++ {
		switch out[i] {
		case "--bind", "--ro-bind", "--bind-try", "--ro-bind-try", "--dev-bind", "--dev-bind-try":
		case "--":
			return out, st
		default:
			continue
		}
		src := out[i+1]
		if _, err := os.Stat(src); err != nil || !filepath.IsAbs(src) || reachable(src, uid, gid) {
			i += 2
			continue
		}
		at, ok := seen[src]
		if !ok {
			at = filepath.Join(root, strconv.Itoa(len(st)))
			seen[src] = at
			st = append(st, staged{src: src, at: at})
		}
		out[i+1] = at
		i += 2
	}
	return out, st
}

// mountStaged moves the calling OS thread (locked, never unlocked
// afterwards) into a private mount namespace and binds each staged source
// there; bubblewrap started from this thread inherits it.
func mountStaged(root string, st []staged) error {
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("sandbox: private mount namespace: %w", err)
	}
	// Nothing done here may reach the host's mount table.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("sandbox: make mounts private: %w", err)
	}
	if err := unix.Mount("tmpfs", root, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=1m"); err != nil {
		return fmt.Errorf("sandbox: staging tmpfs: %w", err)
	}
	for _, s := range st {
		fi, err := os.Stat(s.src)
		if err != nil {
			return fmt.Errorf("sandbox: bind source: %w", err)
		}
		if fi.IsDir() {
			err = os.Mkdir(s.at, 0o755)
		} else {
			err = os.WriteFile(s.at, nil, 0o644)
		}
		if err != nil {
			return fmt.Errorf("sandbox: staging: %w", err)
		}
		if err := unix.Mount(s.src, s.at, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("sandbox: staging bind: %w", err)
		}
	}
	return nil
}
