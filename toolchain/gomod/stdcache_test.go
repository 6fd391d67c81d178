package gomod

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kettle-build/kettle/internal/testenv"
	"github.com/kettle-build/kettle/sandbox"
	"github.com/kettle-build/kettle/toolchain"
)

func TestSeedCache(t *testing.T) {
	seed := t.TempDir()
	os.MkdirAll(filepath.Join(seed, "ab"), 0o755)
	os.WriteFile(filepath.Join(seed, "ab", "abcd-d"), []byte("entry"), 0o444)
	os.WriteFile(filepath.Join(seed, "README"), []byte("readme"), 0o444)
	os.WriteFile(filepath.Join(seed, "trim.txt"), []byte("1"), 0o644)
	dst := filepath.Join(t.TempDir(), "cache")
	os.Mkdir(dst, 0o755)
	if err := seedCache(seed, dst); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "ab", "abcd-d")); err != nil || string(b) != "entry" {
		t.Fatalf("entry %q %v", b, err)
	}
	if _, err := os.Lstat(filepath.Join(dst, "trim.txt")); !os.IsNotExist(err) {
		t.Fatalf("trim.txt shared: %v", err)
	}
	if target, err := os.Readlink(filepath.Join(dst, "README")); err != nil || target != filepath.Join(seed, "README") {
		t.Fatalf("README is not a link to the seed: %q %v", target, err)
	}
	// The build cache directories are the build's own (go adds entries).
	if fi, _ := os.Lstat(filepath.Join(dst, "ab")); !fi.IsDir() || fi.Mode().Perm() != 0o755 {
		t.Fatalf("dir mode %v", fi.Mode())
	}
	if err := seedCache("relative", dst); err == nil {
		t.Fatal("relative seed accepted")
	}
}

// attackRunner runs, in place of the Go build's first command, a script
// with that command's sandbox (mounts, environment), then stops the build.
type attackRunner struct {
	sandbox.Runner
	script string
	out    bytes.Buffer
	ran    bool
}

var errStop = errors.New("attack done")

func (a *attackRunner) Run(ctx context.Context, c *sandbox.Cmd) error {
	if a.ran {
		return errStop
	}
	a.ran = true
	cc := *c
	cc.Args = []string{"/bin/sh", "-c", a.script}
	cc.Output = &a.out
	if err := a.Runner.Run(ctx, &cc); err != nil {
		fmt.Fprintf(&a.out, "run: %v\n", err)
	}
	return errStop
}

// TestStdCacheReadOnlyInSandbox: the shared standard library cache is
// bound read-only into a Go build's sandbox. A build that tries to write
// an entry through its GOCACHE link (after chmod), through the seed's own
// path, or to add a file to the seed fails; only its own GOCACHE changes,
// and the seed a later build reads is byte for byte what it was.
func TestStdCacheReadOnlyInSandbox(t *testing.T) {
	needGo(t)
	testenv.NeedTool(t, "bwrap")
	bw, err := sandbox.NewBwrap()
	if err != nil {
		t.Fatal(err)
	}
	dir := projectDir(t, "go-nodeps")
	w, _ := workspace(t, dir)
	d := NewModOnly().(*Driver)
	if _, err := toolchain.Plan(context.Background(), d, w); err != nil {
		t.Fatal(err)
	}
	if err := d.Fetch(context.Background(), w); err != nil {
		t.Fatal(err)
	}
	// A stand-in seed for this go binary, so the test never risks the
	// machine's real one.
	old := StdCacheRoot
	StdCacheRoot = t.TempDir()
	t.Cleanup(func() { StdCacheRoot = old })
	seed := filepath.Join(StdCacheRoot, d.goDigest[:32])
	os.MkdirAll(filepath.Join(seed, "ab"), 0o755)
	os.WriteFile(filepath.Join(seed, "ab", "abcd-d"), []byte("std entry"), 0o444)
	os.WriteFile(filepath.Join(seed, "README"), []byte("go cache"), 0o444)

	ar := &attackRunner{Runner: bw, script: `
f="$GOCACHE/ab/abcd-d"
t=$(readlink "$f")
chmod u+w "$f" 2>/dev/null; chmod u+w "$t" 2>/dev/null
if echo evil > "$f"; then echo WROTE-THROUGH-LINK; fi
if echo evil > "$t"; then echo WROTE-SEED; fi
if echo evil > "$(dirname "$t")/planted"; then echo PLANTED; fi
rm -f "$f" && echo evil > "$f" && echo OWN-CACHE-OK
`}
	w.Runner = ar
	if err := d.Build(context.Background(), w); !errors.Is(err, errStop) && !strings.Contains(err.Error(), "attack done") {
		t.Logf("build: %v", err)
	}
	out := ar.out.String()
	if !ar.ran || !strings.Contains(out, "OWN-CACHE-OK") {
		t.Fatalf("attack script did not run as expected:\n%s", out)
	}
	t.Logf("attack output:\n%s", out)
	for _, bad := range []string{"WROTE-THROUGH-LINK", "WROTE-SEED", "PLANTED"} {
		if strings.Contains(out, bad) {
			t.Errorf("%s:\n%s", bad, out)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(seed, "ab", "abcd-d")); string(b) != "std entry" {
		t.Errorf("seed entry is now %q", b)
	}
	if _, err := os.Lstat(filepath.Join(seed, "ab", "planted")); err == nil {
		t.Error("a file was planted in the seed")
	}
	if fi, _ := os.Stat(filepath.Join(seed, "ab", "abcd-d")); fi.Mode().Perm() != 0o444 {
		t.Errorf("seed entry mode %v", fi.Mode())
	}
	if _, err := os.Lstat(filepath.Join(dir, ScratchDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("scratch left behind: %v", err)
	}
	_ = toolchain.Getenv
}
