package worker

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kettle-build/kettle/bundle"
	"github.com/kettle-build/kettle/events"
)

// TestPackProgress: packing a result that takes longer than
// packProgressEvery emits growing "Packing the result: x of y" events, and
// the tarball is the deterministic bundle of the directory.
func TestPackProgress(t *testing.T) {
	prev := packProgressEvery
	packProgressEvery = time.Nanosecond
	t.Cleanup(func() { packProgressEvery = prev })
	dir := t.TempDir()
	big := bytes.Repeat([]byte("kettle result "), (20<<20)/14)
	if err := os.MkdirAll(filepath.Join(dir, "artifacts"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "artifacts", "bin"), big, 0o755); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	p := filepath.Join(t.TempDir(), "r.tar.gz")
	size, err := writeBundle(p, "demo", dir, packProgress(rec, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	msgs := rec.msgs(events.VM)
	if len(msgs) < 2 {
		t.Fatalf("%d pack progress events for 20 MiB: %q", len(msgs), msgs)
	}
	for _, m := range msgs {
		if !strings.HasPrefix(m, "Packing the result: ") || !strings.HasSuffix(m, " of 20.0 MiB") {
			t.Errorf("pack progress %q", m)
		}
	}
	if msgs[0] == msgs[len(msgs)-1] {
		t.Errorf("pack progress does not grow: %q", msgs)
	}
	var want bytes.Buffer
	if err := bundle.Write(&want, "demo", dir); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(p)
	if int64(len(got)) != size || !bytes.Equal(got, want.Bytes()) {
		t.Errorf("packed %d bytes (reported %d), bundle.Write gives %d", len(got), size, want.Len())
	}
}
