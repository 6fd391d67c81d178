package jobs

import (
	"bytes"
	"context"
	"io"
	"testing"
)

func TestPacedReaderFlushesEveryPace(t *testing.T) {
	flushes := 0
	data := bytes.Repeat([]byte{1}, 5*paceBytes+10)
	p := &pacedReader{ctx: context.Background(), r: bytes.NewReader(data), flush: func(context.Context) error {
		flushes++
		return nil
	}}
	got, err := io.ReadAll(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("paced reader changed the data")
	}
	if flushes != 5 {
		t.Fatalf("flushes = %d, want 5", flushes)
	}
}

// TestSubmitLargeArchivePaced stores an archive larger than several paces
// through a real embedded store, with a context that has no deadline.
func TestSubmitLargeArchivePaced(t *testing.T) {
	s, err := OpenEmbedded(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	data := bytes.Repeat([]byte("kettle"), 3*paceBytes/6+1000)
	j, err := s.Submit(context.Background(), Request{Nonce: []byte{1}, Archive: bytes.NewReader(data), Source: Source{ArchiveName: "a.zip"}})
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	if j.Source.ArchiveSize != int64(len(data)) {
		t.Fatalf("stored %d bytes, want %d", j.Source.ArchiveSize, len(data))
	}
}
