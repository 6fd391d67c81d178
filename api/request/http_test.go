package request

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// parseHandler is a minimal POST /build front end over the parsers, as the
// api package uses them: a read deadline for slow clients, the status and
// message of *Error, and the spool file removed by the owner.
func parseHandler(t *testing.T, spoolDir string, readTimeout time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if readTimeout > 0 {
			http.NewResponseController(w).SetReadDeadline(time.Now().Add(readTimeout))
		}
		parse := ParseJSON
		if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/") {
			parse = ParseMultipart
		}
		b, err := parse(r.Context(), r.Header.Get("Content-Type"), r.Body, spoolDir, 2048)
		var e *Error
		if errors.As(err, &e) {
			http.Error(w, e.Msg, e.Status)
			return
		}
		if err != nil {
			t.Errorf("unclassified error %v", err)
			http.Error(w, "internal error", 500)
			return
		}
		b.Remove()
		fmt.Fprintln(w, "ok")
	})
}

// TestHostileRequestsOverHTTP posts the hostile corpus to a real HTTP
// server and checks status, one-line body and an empty spool dir.
func TestHostileRequestsOverHTTP(t *testing.T) {
	spoolDir := t.TempDir()
	srv := httptest.NewServer(parseHandler(t, spoolDir, 0))
	defer srv.Close()
	cases := map[string]jsonCase{}
	for _, c := range jsonCases(t) {
		cases[strings.ReplaceAll(c.name, " ", "-")+".json"] = c
	}
	ents, _ := os.ReadDir(requestsDir)
	for _, e := range ents {
		c := cases[e.Name()]
		if e.Name() == "multipart-content-type.json" {
			// Dispatched to the multipart parser, which finds no parts.
			c.status, c.msg = 400, "malformed multipart body"
		}
		body, _ := os.ReadFile(filepath.Join(requestsDir, e.Name()))
		req, _ := http.NewRequest("POST", srv.URL+"/build", bytes.NewReader(body))
		req.Header.Set("Content-Type", c.ct)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := bufio.NewReader(resp.Body).ReadString(0)
		resp.Body.Close()
		if resp.StatusCode != c.status || !strings.Contains(msg, c.msg) || strings.Count(msg, "\n") != 1 {
			t.Errorf("%s: %d %q, want %d %q", e.Name(), resp.StatusCode, msg, c.status, c.msg)
		}
	}
	if ents, _ := os.ReadDir(spoolDir); len(ents) != 0 {
		t.Errorf("spool dir not cleaned: %v", ents)
	}
}

// TestStalledUploadOverHTTP: a client that sends part of its body and stops
// gets 408 when the server's read deadline passes, and its partial upload
// is gone.
func TestStalledUploadOverHTTP(t *testing.T) {
	spoolDir := t.TempDir()
	srv := httptest.NewServer(parseHandler(t, spoolDir, 300*time.Millisecond))
	defer srv.Close()
	for _, c := range []struct{ ct, head string }{
		{"application/json", `{"nonce":"ab","source_data":"UEsDBAAAAAAAAAAA`},
		{"multipart/form-data; boundary=X", "--X\r\nContent-Disposition: form-data; name=\"source\"; filename=\"a.zip\"\r\n\r\nPK\x03\x04abc"},
	} {
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "POST /build HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: 1000\r\n\r\n%s", c.ct, c.head)
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusRequestTimeout {
			t.Errorf("%s: status %d", c.ct, resp.StatusCode)
		}
		conn.Close()
		if ents, _ := os.ReadDir(spoolDir); len(ents) != 0 {
			t.Errorf("%s: spool dir not cleaned: %v", c.ct, ents)
		}
	}
}
