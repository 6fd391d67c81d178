package egress

// The CONNECT half of the proxy: the set of a session's connections, so
// closing the session cuts them all, and the splice of a hijacked client
// connection to the upstream the session dialled.

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync"
)

// conns is the set of open connections of one proxy. The zero value is
// ready to use.
type conns struct {
	mu     sync.Mutex
	m      map[net.Conn]bool
	closed bool
}

// add tracks c; after closeAll it closes c and reports false.
func (s *conns) add(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return false
	}
	if s.m == nil {
		s.m = map[net.Conn]bool{}
	}
	s.m[c] = true
	return true
}

// remove stops tracking c and closes it.
func (s *conns) remove(c net.Conn) {
	s.mu.Lock()
	delete(s.m, c)
	s.mu.Unlock()
	c.Close()
}

// closeAll closes every tracked connection and refuses new ones.
func (s *conns) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.m {
		c.Close()
	}
}

// splice hijacks the CONNECT request's connection, answers 200 and copies
// both ways until either side ends; it owns upstream. received, when not
// nil, sees each chunk sent to the client and stops the tunnel by returning
// false (a size limit).
func splice(w http.ResponseWriter, upstream net.Conn, cs *conns, received func(n int) bool) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		upstream.Close()
		http.Error(w, "no hijack", http.StatusInternalServerError)
		return
	}
	client, brw, err := hj.Hijack()
	if err != nil {
		upstream.Close()
		return
	}
	if !cs.add(client) || !cs.add(upstream) {
		client.Close()
		upstream.Close()
		return
	}
	defer cs.remove(client)
	defer cs.remove(upstream)
	if _, err := client.Write([]byte("HTTP/1.1 200 Connection Established\r\n\r\n")); err != nil {
		return
	}
	go func() {
		// Client → server: anything already buffered first.
		_, _ = io.Copy(upstream, io.MultiReader(io.LimitReader(brw.Reader, int64(brw.Reader.Buffered())), client))
		if tc, ok := upstream.(interface{ CloseWrite() error }); ok {
			_ = tc.CloseWrite()
		}
	}()
	from := bufio.NewReaderSize(upstream, 32<<10)
	if received == nil {
		_, _ = io.Copy(client, from)
		return
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 {
			if !received(n) {
				return
			}
			if _, werr := client.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
