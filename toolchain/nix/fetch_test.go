package nix

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kettle-build/kettle/internal/testenv"
	"github.com/kettle-build/kettle/sandbox"
	"github.com/kettle-build/kettle/toolchain"
)

// TestFetchInputsThenOffline: kettle's fetch expression puts a locked
// tarball input into the job's store, and the flake then evaluates offline
// in a step where the tarball's location is not even visible: Nix finds the
// input by its narHash. (The lock names a file:// URL, which ParseLock
// refuses; the test sets the checked lock directly so it needs no server.)
func TestFetchInputsThenOffline(t *testing.T) {
	testenv.NeedTool(t, "nix")
	runner, err := sandbox.New("bwrap")
	testenv.Need(t, err == nil, "bubblewrap cannot run here")
	base := t.TempDir()
	src := filepath.Join(base, "src", "input")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "hello.txt"), []byte("hello from a tarball input\n"), 0o644)
	root, _ := os.OpenRoot(filepath.Join(base, "src"))
	narHash, err := NARHash(root, "input")
	root.Close()
	if err != nil {
		t.Fatal(err)
	}
	proj := filepath.Join(base, "proj")
	os.MkdirAll(proj, 0o755)
	var logs strings.Builder
	w := &toolchain.Workspace{Dir: proj, CacheDir: filepath.Join(base, "cache"), Runner: runner,
		Limits: sandbox.Limits{Wall: 2 * time.Minute}, Env: []string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8"},
		Log: func(l string) { logs.WriteString(l + "\n") }}
	d := &Driver{}
	_, d.nix, err = toolchain.ResolveTool(context.Background(), w, "nix")
	if err != nil {
		t.Fatal(err)
	}
	// The tarball lies beside the job's directories (its place is visible
	// only to the fetch step, whose working directory it is).
	cache := w.CacheDir
	tarball := filepath.Join(cache, "nix", "work", "x.tar.gz")
	url := "file://" + tarball
	if d.job, err = newJobStore(cache, []string{url}); err != nil {
		t.Fatal(err)
	}
	defer d.Cleanup(w)
	writeTarGz(t, tarball, src, "input")
	d.lock = &Lock{Remote: map[string]map[string]any{"x": {"type": "tarball", "url": url, "narHash": narHash}}}
	if err := d.fetchInputs(t.Context(), w); err != nil {
		t.Fatalf("fetchInputs: %v\n%s", err, logs.String())
	}
	os.WriteFile(filepath.Join(proj, "flake.nix"), []byte(`{ inputs.x = { url = "`+url+`"; flake = false; };
  outputs = { self, x }: { packages.x86_64-linux.default = derivation { name = "uses-x"; system = "x86_64-linux";
    builder = "/bin/sh"; args = [ "-c" "cat ${x}/hello.txt > $out" ]; }; }; }`), 0o644)
	os.WriteFile(filepath.Join(proj, "flake.lock"), []byte(`{"nodes":{"x":{"flake":false,"locked":{"type":"tarball","url":"`+url+`","narHash":"`+narHash+`"},
  "original":{"type":"tarball","url":"`+url+`"}},"root":{"inputs":{"x":"x"}}},"root":"root","version":7}`), 0o644)
	top, _, err := d.evaluate(t.Context(), w)
	if err != nil {
		t.Fatalf("evaluate: %v\n%s", err, logs.String())
	}
	if len(top.Derivations) != 1 || top.Derivations[0].Name != "uses-x" {
		t.Errorf("derivation %+v", top.Derivations)
	}
	// Without the lock's URL in allowed-uris, restrict-eval refuses it.
	conf := filepath.Join(d.job.conf, "nix.conf")
	b, _ := os.ReadFile(conf)
	os.Chmod(conf, 0o644)
	os.WriteFile(conf, []byte(strings.Replace(string(b), "allowed-uris = "+url, "allowed-uris =", 1)), 0o644)
	logs.Reset()
	if _, _, err := d.evaluate(t.Context(), w); err == nil {
		t.Errorf("evaluation with the URL outside allowed-uris succeeded")
	}
}

func writeTarGz(t *testing.T, dst, dir, top string) {
	t.Helper()
	f, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	zw := gzip.NewWriter(f)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: top + "/", Typeflag: tar.TypeDir, Mode: 0o755})
	b, _ := os.ReadFile(filepath.Join(dir, "hello.txt"))
	tw.WriteHeader(&tar.Header{Name: top + "/hello.txt", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(b))})
	tw.Write(b)
	tw.Close()
	zw.Close()
	f.Close()
}
