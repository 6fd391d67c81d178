package sandbox

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// ProxyAddr is where a command with Cmd.Network finds the egress proxy: a
// listener on the loopback interface of its own network namespace, held by
// the trusted process (the namespace is private to the command, so the port
// never clashes).
const ProxyAddr = "127.0.0.1:3128"

// proxyEnv are the variables that point every toolchain at the proxy: curl
// (cargo, git, nix) reads the lower-case http_proxy and either case of
// https_proxy/all_proxy, Go and npm/pnpm read both cases. NO_PROXY is
// emptied so no destination bypasses it (there is no other way out anyway).
func proxyEnv() []string {
	u := "http://" + ProxyAddr
	var env []string
	for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"} {
		env = append(env, k+"="+u)
	}
	return append(env, "NO_PROXY=", "no_proxy=")
}

// withEnv returns env with each "KEY=value" of kv replacing earlier values.
func withEnv(env []string, kv ...string) []string {
	drop := map[string]bool{}
	for _, e := range kv {
		k, _, _ := splitEnv(e)
		drop[k] = true
	}
	out := make([]string, 0, len(env)+len(kv))
	for _, e := range env {
		if k, _, _ := splitEnv(e); !drop[k] {
			out = append(out, e)
		}
	}
	return append(out, kv...)
}

func splitEnv(e string) (string, string, bool) {
	for i := 0; i < len(e); i++ {
		if e[i] == '=' {
			return e[:i], e[i+1:], true
		}
	}
	return e, "", false
}

// privateNetns moves the calling OS thread (locked, and never unlocked
// afterwards: the runtime then ends the thread with its goroutine) into a
// new network namespace with only a loopback interface, brings that up and
// listens on ProxyAddr in it. A child started from this thread and run with
// bubblewrap's --share-net lives in this namespace: its only way out is the
// returned listener, which the trusted process serves with the egress
// proxy. Needs CAP_SYS_ADMIN (kettle running as root).
func privateNetns() (net.Listener, error) {
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return nil, fmt.Errorf("sandbox: a private network namespace for the fetch phase needs kettle to run as root: %w", err)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("sandbox: loopback: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return nil, fmt.Errorf("sandbox: loopback: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return nil, fmt.Errorf("sandbox: loopback flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return nil, fmt.Errorf("sandbox: loopback up: %w", err)
	}
	ln, err := net.Listen("tcp4", ProxyAddr)
	if err != nil {
		return nil, fmt.Errorf("sandbox: egress listener: %w", err)
	}
	return ln, nil
}
