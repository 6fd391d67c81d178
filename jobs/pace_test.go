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
