package main

import (
	"log/slog"
	"net"
	"net/url"
	"strings"

	"github.com/kettle-build/kettle/egress"
	"github.com/kettle-build/kettle/sandbox"
)

// egressOption is the sandbox's egress proxy for the fetch phase: the
// repo_url address policy (public addresses only unless
// --allow-private-networks), and deny (ownListeners) unreachable in any
// case.
func egressOption(logger *slog.Logger, allowPrivate bool, deny []string) (sandbox.Option, error) {
	p, err := egress.New(egress.Policy{AllowPrivate: allowPrivate, Deny: deny, Logger: logger})
	if err != nil {
		return nil, err
	}
	return sandbox.WithEgress(p), nil
}

// ownListeners are kettle's own listeners, which neither a build's fetch
// nor a clone may reach: its HTTP --listen, the embedded store's
// --nats-listen, the servers of a --nats cluster.
func ownListeners(listen, natsListen, natsURL string) []string {
	var deny []string
	for _, a := range []string{listen, natsListen} {
		if a != "" {
			deny = append(deny, a)
		}
	}
	return append(deny, natsServers(natsURL)...)
}

// natsServers are the host:port of each server of a NATS URL list
// ("nats://a:4222,tls://b"); the default port is 4222.
func natsServers(urls string) []string {
	var out []string
	for _, u := range strings.Split(urls, ",") {
		u = strings.TrimSpace(u)
		if u == "" {
			continue
		}
		if !strings.Contains(u, "://") {
			u = "nats://" + u
		}
		pu, err := url.Parse(u)
		if err != nil || pu.Hostname() == "" {
			continue
		}
		port := pu.Port()
		if port == "" {
			port = "4222"
		}
		out = append(out, net.JoinHostPort(pu.Hostname(), port))
	}
	return out
}
