// Command upload measures docs/benchmarks.md's upload budget on a real `kettle serve`
// process: a source_data body carrying a 1 GiB archive (base64, ~1.33 GiB
// on the wire) must raise the server's resident memory by < 64 MiB. It
// samples /proc/<pid>/status (VmRSS) every 10 ms and reads VmHWM after
// resetting it, from before the upload until the job is accepted.
//
//	go run ./bench/upload -size 1GiB
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/kettle-build/kettle/bench/harness"
	"github.com/kettle-build/kettle/internal/bytesize"
)

func main() {
	size := flag.String("size", "1GiB", "archive size (bytes, or with KiB/MiB/GiB)")
	bin := flag.String("bin", "", "kettle binary (default: go build ./cmd/kettle)")
	keep := flag.Bool("keep", false, "keep the temp dir (server log, data)")
	flag.Parse()
	n, err := bytesize.Parse(*size)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := run(n, *bin, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "upload bench:", err)
		os.Exit(1)
	}
}

// noise is a cheap incompressible-looking stream.
type noise struct{ x uint64 }

func (r *noise) Read(p []byte) (int, error) {
	for i := range p {
		r.x ^= r.x << 13
		r.x ^= r.x >> 7
		r.x ^= r.x << 17
		p[i] = byte(r.x)
	}
	return len(p), nil
}

func run(size int64, bin string, keep bool) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "kettle-upload-bench-")
	if err != nil {
		return err
	}
	if keep {
		fmt.Println("temp dir:", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	if bin == "" {
		if bin, err = harness.BuildBinary(ctx, dir); err != nil {
			return err
		}
	}
	// --workers 0: only the upload path is measured, not a build of it.
	s, err := harness.Start(ctx, harness.Config{Bin: bin, DataDir: filepath.Join(dir, "data"),
		Args: []string{"--attester", "insecure", "--sandbox", "none", "--workers", "0",
			"--max-upload", strconv.FormatInt(size+(1<<20), 10)}})
	if err != nil {
		return err
	}
	defer s.Kill()
	c := &harness.Client{URL: s.URL}
	time.Sleep(500 * time.Millisecond) // let start-up allocations settle
	before, err := harness.ReadMem(s.PID())
	if err != nil {
		return err
	}
	if err := harness.ResetHWM(s.PID()); err != nil {
		fmt.Fprintln(os.Stderr, "cannot reset VmHWM (sampling only):", err)
	}
	sampler := harness.Sample(s.PID(), 10*time.Millisecond)
	src := io.MultiReader(bytes.NewReader([]byte{0x1f, 0x8b}), io.LimitReader(&noise{x: 88172645463325252}, size-2))
	t0 := time.Now()
	id, err := c.SubmitRaw(ctx, "application/json", harness.Base64JSONBody(harness.NewNonce(), "big.tar.gz", src))
	took := time.Since(t0)
	peak := sampler.Stop()
	after, _ := harness.ReadMem(s.PID())
	if err != nil {
		return fmt.Errorf("submit: %w\nserver log:\n%s", err, s.Log())
	}
	st, err := c.Status(ctx, id)
	if err != nil {
		return err
	}
	top := max(peak.RSS, peak.HWM, after.HWM)
	growth := top - before.RSS
	wire := (size + 2) / 3 * 4
	fmt.Printf("archive %d MiB (%d MiB base64 on the wire) accepted in %v (%.0f MiB/s of body)\n",
		size>>20, wire>>20, took.Round(time.Millisecond), float64(wire)/(1<<20)/took.Seconds())
	fmt.Printf("server RSS before %.1f MiB, peak %.1f MiB (VmHWM %.1f MiB), after %.1f MiB: growth %.1f MiB (budget < 64 MiB)\n",
		mib(before.RSS), mib(max(peak.RSS, peak.HWM)), mib(after.HWM), mib(after.RSS), mib(growth))
	fmt.Printf("job %s source %v\n", id, st["source"])
	if growth >= 64<<20 {
		return fmt.Errorf("RSS grew by %.1f MiB", mib(growth))
	}
	return nil
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }
