package sandbox

import (
	"bytes"
	"context"
	"testing"
)

func newTestBwrap(t *testing.T, opts ...Option) *Bwrap {
	t.Helper()
	b, err := NewBwrap(opts...)
	if err != nil {
		t.Skipf("bubblewrap unavailable: %v", err)
	}
	return b
}

func TestBwrapBasics(t *testing.T) {
	b := newTestBwrap(t)
	dir := t.TempDir()
	var out bytes.Buffer
	err := b.Run(context.Background(), &Cmd{
		Args:   []string{"sh", "-c", `id; env; pwd; ls /; cat /etc/passwd; ls /etc; grep CapEff /proc/self/status; cat /proc/net/dev; echo hi > f; ls -ln`},
		Dir:    dir,
		Env:    append(testEnv, "FOO=bar"),
		Output: &out,
	})
	t.Logf("%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
}
