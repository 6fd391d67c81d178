package bundle

import (
	"bytes"
	"crypto/sha256"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// bigResult is a result directory of about size bytes across several
// files, half random (incompressible, like a stripped binary's code) and
// half repetitive, over many compression blocks.
func bigResult(t testing.TB, size int) string {
	t.Helper()
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	for i, n := range []int{size / 2, size / 4, size / 4} {
		b := make([]byte, n)
		for j := 0; j < n; j += 8 {
			v := rng.Uint64()
			if (j/4096)%2 == 1 {
				v = uint64(j / 4096) // compressible runs
			}
			for k := 0; k < 8 && j+k < n; k++ {
				b[j+k] = byte(v >> (8 * k))
			}
		}
		p := filepath.Join(dir, "artifacts", string(rune('a'+i)))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestWriteDeterministicAcrossParallelism: parallel compression gives the
// same bytes whatever the number of threads and however the writes split.
func TestWriteDeterministicAcrossParallelism(t *testing.T) {
	dir := bigResult(t, 9<<20+12345)
	var sums [][32]byte
	for _, procs := range []int{1, 2, 7} {
		prev := runtime.GOMAXPROCS(procs)
		var b bytes.Buffer
		err := Write(&b, "top", dir)
		runtime.GOMAXPROCS(prev)
		if err != nil {
			t.Fatal(err)
		}
		sums = append(sums, sha256.Sum256(b.Bytes()))
		if procs == 2 {
			// and it unpacks to the same files
			out := t.TempDir()
			topDir, err := Extract(bytes.NewReader(b.Bytes()), out, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range []string{"a", "b", "c"} {
				want, _ := os.ReadFile(filepath.Join(dir, "artifacts", n))
				got, _ := os.ReadFile(filepath.Join(topDir, "artifacts", n))
				if !bytes.Equal(want, got) {
					t.Errorf("artifacts/%s differs after a round trip", n)
				}
			}
		}
	}
	for i := 1; i < len(sums); i++ {
		if sums[i] != sums[0] {
			t.Fatalf("tarball bytes depend on GOMAXPROCS: %x vs %x", sums[i], sums[0])
		}
	}
}

// TestWriteProgress: progress is reported as content is packed and ends at
// the total.
func TestWriteProgress(t *testing.T) {
	dir := bigResult(t, 5<<20)
	var calls [][2]int64
	err := WriteWith(new(bytes.Buffer), "top", dir, Options{ProgressEvery: 1 << 20, Progress: func(d, tot int64) {
		calls = append(calls, [2]int64{d, tot})
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(calls) < 4 {
		t.Fatalf("only %d progress calls for 5 MiB at 1 MiB steps", len(calls))
	}
	last := calls[len(calls)-1]
	if last[0] != 5<<20 || last[1] != 5<<20 {
		t.Errorf("last progress %v, want done = total = %d", last, 5<<20)
	}
	for i := 1; i < len(calls); i++ {
		if calls[i][0] < calls[i-1][0] {
			t.Errorf("progress went back: %v", calls)
		}
	}
}

func BenchmarkWrite(b *testing.B) {
	dir := bigResult(b, 32<<20)
	b.SetBytes(32 << 20)
	for b.Loop() {
		if err := Write(discard{}, "top", dir); err != nil {
			b.Fatal(err)
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// goBinaryResult is a result directory of about size bytes of real Go
// machine code: this test binary, repeated (deflate's 32 KiB window sees no
// repetition megabytes apart), as artifacts/app.
func goBinaryResult(b *testing.B, size int) string {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	code, err := os.ReadFile(exe)
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 0, size)
	for len(data) < size {
		data = append(data, code[:min(len(code), size-len(data))]...)
	}
	dir := b.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "artifacts"), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "artifacts", "app"), data, 0o755); err != nil {
		b.Fatal(err)
	}
	return dir
}

// BenchmarkPack packs a 70 MB result (issue 16 point 4: ≥ 200 MB/s on 2
// cores, < 1 s): "mixed" is half random, half repetitive; "gobinary" is
// real Go machine code. It reports MB/s and the compressed size.
func BenchmarkPack(b *testing.B) {
	const size = 70_000_000
	for _, bc := range []struct {
		name string
		dir  func(testing.TB) string
	}{
		{"mixed", func(tb testing.TB) string { return bigResult(tb, size) }},
		{"gobinary", func(testing.TB) string { return goBinaryResult(b, size) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			dir := bc.dir(b)
			b.SetBytes(size)
			var out countingDiscard
			cpu0 := cpuTime()
			for b.Loop() {
				out = 0
				if err := Write(&out, "top", dir); err != nil {
					b.Fatal(err)
				}
			}
			// CPU time says what the wall figure would be on two idle
			// cores when the machine is shared.
			cpu := (cpuTime() - cpu0).Seconds() / float64(b.N)
			b.ReportMetric(size/1e6/cpu, "MB/cpu-s")
			b.ReportMetric(float64(out)/size, "ratio")
		})
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type countingDiscard int64

func (c *countingDiscard) Write(p []byte) (int, error) {
	*c += countingDiscard(len(p))
	return len(p), nil
}
