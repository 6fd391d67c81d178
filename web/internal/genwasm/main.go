// Command genwasm builds the verifier for the web page (`go generate
// ./web`): web/wasm compiled with GOOS=js GOARCH=wasm, gzip-compressed into
// web/static/gen/verify.wasm.gz, beside the wasm_exec.js of the same Go.
package main

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "genwasm:", err)
		os.Exit(1)
	}
}

func run() error {
	// go generate runs in the package directory (web/).
	out := filepath.Join("static", "gen")
	tmp, err := os.MkdirTemp("", "kettle-wasm-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	raw := filepath.Join(tmp, "verify.wasm")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", raw, "./wasm")
	cmd.Env = append(os.Environ(), "GOOS=js", "GOARCH=wasm", "GOFLAGS=-buildvcs=false")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build ./web/wasm: %w", err)
	}
	b, err := os.ReadFile(raw)
	if err != nil {
		return err
	}
	var z bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&z, gzip.BestCompression)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		return err
	}
	if err := writeIfChanged(filepath.Join(out, "verify.wasm.gz"), z.Bytes()); err != nil {
		return err
	}
	root, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return fmt.Errorf("go env GOROOT: %w", err)
	}
	js, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(root)), "lib", "wasm", "wasm_exec.js"))
	if err != nil {
		return err
	}
	if err := writeIfChanged(filepath.Join(out, "wasm_exec.js"), js); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "genwasm: verify.wasm %d bytes, %d gzip-compressed\n", len(b), z.Len())
	return nil
}

// writeIfChanged leaves an identical file alone, so that the embedding
// binary is not relinked for nothing.
func writeIfChanged(name string, b []byte) error {
	if old, err := os.ReadFile(name); err == nil && bytes.Equal(old, b) {
		return nil
	}
	// A unique temporary name: test binaries may generate concurrently.
	f, err := os.CreateTemp(filepath.Dir(name), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), name)
}
