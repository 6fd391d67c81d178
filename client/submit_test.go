package client

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestSubmitSourceDigest: the archive digest is of the bytes sent by the
// accepted attempt, also when an earlier attempt was refused (503).
func TestSubmitSourceDigest(t *testing.T) {
	archive := make([]byte, 300<<10+7)
	rand.Read(archive)
	want := sha256.Sum256(archive)
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if calls.Add(1) == 1 {
			w.Header().Set("Retry-After", "0")
			http.Error(w, "queue full", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, `{"job_id":"job-1"}`)
	}))
	defer srv.Close()
	sub, err := newTestClient(t, srv.URL).SubmitSource(context.Background(), Request{Nonce: nonce16, Archive: archiveOf(archive)})
	if err != nil {
		t.Fatal(err)
	}
	if sub.JobID != "job-1" || sub.ArchiveSHA256 != hex.EncodeToString(want[:]) || sub.ArchiveSize != int64(len(archive)) {
		t.Errorf("submission = %+v, want sha256 %x size %d", sub, want, len(archive))
	}
	// A repository source has no archive digest.
	sub, err = newTestClient(t, srv.URL).SubmitSource(context.Background(), Request{Nonce: nonce16, RepoURL: "https://h/r.git"})
	if err != nil || sub.ArchiveSHA256 != "" {
		t.Errorf("repo submission = %+v, %v", sub, err)
	}
}

// TestSubmitSourceEarlyAccept: a server that answers with a job id before
// it has read the archive cannot be building it: ErrProtocol.
func TestSubmitSourceEarlyAccept(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.CopyN(io.Discard, r.Body, 1<<10)
		fmt.Fprintln(w, `{"job_id":"job-1"}`)
		w.(http.Flusher).Flush()
	}))
	defer srv.Close()
	archive := make([]byte, 8<<20)
	_, err := newTestClient(t, srv.URL).SubmitSource(context.Background(), Request{Nonce: nonce16, Archive: archiveOf(archive)})
	if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "before receiving the whole source archive") {
		t.Errorf("early accept: %v, want ErrProtocol", err)
	}
}
