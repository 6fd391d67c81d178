package sandbox

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync/atomic"
	"syscall"
)

// When kettle does not run as root it cannot give a fetch-phase command a
// network namespace whose loopback it listens on itself (privateNetns).
// Then bubblewrap makes the namespace, the runner's egress proxy listens on
// a Unix socket bound into it, and a shim (this binary, run again inside the
// sandbox) listens on ProxyAddr there, forwards each connection to the
// socket, and runs the command.

// shimArg, as os.Args[1], makes Shim act as the shim.
const shimArg = "__kettle-sandbox-egress-shim"

// Paths inside the sandbox.
const (
	shimExe    = "/run/kettle/shim"
	shimSocket = "/run/kettle/egress/egress.sock"
)

var shimHooked atomic.Bool

// Shim must be called first in main (and in TestMain of packages whose
// tests run Network commands under an unprivileged Bwrap): when the process
// was started as the sandbox's egress shim it runs the shim and exits;
// otherwise it records that the shim is available and returns.
func Shim() {
	if len(os.Args) > 2 && os.Args[1] == shimArg {
		os.Exit(runShim(os.Args[2:]))
	}
	shimHooked.Store(true)
}

// runShim: args are the command to run after the listener is up.
func runShim(args []string) int {
	ln, err := net.Listen("tcp4", ProxyAddr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kettle sandbox: egress shim:", err)
		return 125
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go forward(c)
		}
	}()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// Signals meant for the command reach it (the runner kills the whole
	// tree on a limit anyway).
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "kettle sandbox:", err)
		return 127
	}
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()
	err = cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()) // as bubblewrap reports it
		}
		return ee.ExitCode()
	}
	if err != nil {
		return 127
	}
	return 0
}

func forward(c net.Conn) {
	defer c.Close()
	u, err := net.Dial("unix", shimSocket)
	if err != nil {
		return
	}
	defer u.Close()
	go func() {
		_, _ = io.Copy(u, c)
		if uc, ok := u.(*net.UnixConn); ok {
			_ = uc.CloseWrite()
		}
	}()
	_, _ = io.Copy(c, u)
}

// shimSetup prepares the unprivileged egress path of one command: a Unix
// socket in a directory only this process can reach, served by proxy. It
// returns the bubblewrap arguments that bind the socket and the shim, the
// argv prefix that runs the shim, and a cleanup.
func shimSetup() (dir string, exe string, err error) {
	if !shimHooked.Load() {
		return "", "", errors.New("sandbox: network for the fetch phase of an unprivileged server needs sandbox.Shim() called first in main")
	}
	exe, err = os.Executable()
	if err != nil {
		return "", "", fmt.Errorf("sandbox: egress shim: %w", err)
	}
	if exe, err = filepath.EvalSymlinks(exe); err != nil {
		return "", "", fmt.Errorf("sandbox: egress shim: %w", err)
	}
	dir, err = os.MkdirTemp("", "kettle-egress-")
	if err != nil {
		return "", "", fmt.Errorf("sandbox: egress socket: %w", err)
	}
	return dir, exe, nil
}
