package request

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// largeBody streams a POST /build body carrying size random archive bytes
// (starting with a ZIP magic) as JSON base64 or as a multipart file part,
// and reports their sha256 once fully read.
func largeBody(size int64, asMultipart bool) (body io.Reader, contentType string, sum func() string) {
	pr, pw := io.Pipe()
	var digest string
	done := make(chan struct{})
	ct := "application/json"
	mw := multipart.NewWriter(io.Discard)
	if asMultipart {
		ct = mw.FormDataContentType()
	}
	go func() {
		defer close(done)
		h := sha256.New()
		bw := bufio.NewWriterSize(pw, 1<<20)
		var dst io.Writer
		var closeDst func() error
		if asMultipart {
			fmt.Fprintf(bw, "--%s\r\nContent-Disposition: form-data; name=\"nonce\"\r\n\r\n%s\r\n", mw.Boundary(), nonce16)
			fmt.Fprintf(bw, "--%s\r\nContent-Disposition: form-data; name=\"source\"; filename=\"big.zip\"\r\nContent-Type: application/zip\r\n\r\n", mw.Boundary())
			dst, closeDst = bw, func() error { return nil }
		} else {
			bw.WriteString(`{"nonce":"` + nonce16 + `","source_name":"big.zip","source_data":"`)
			enc := base64.NewEncoder(base64.StdEncoding, bw)
			dst, closeDst = enc, enc.Close
		}
		rng := rand.NewChaCha8([32]byte{1})
		buf := make([]byte, 1<<20)
		for left := size; left > 0; {
			n := int(min(left, int64(len(buf))))
			rng.Read(buf[:n])
			if left == size {
				copy(buf, "PK\x03\x04")
			}
			h.Write(buf[:n])
			if _, err := dst.Write(buf[:n]); err != nil {
				pw.CloseWithError(err)
				return
			}
			left -= int64(n)
		}
		closeDst()
		if asMultipart {
			fmt.Fprintf(bw, "\r\n--%s--\r\n", mw.Boundary())
		} else {
			bw.WriteString(`"}`)
		}
		bw.Flush()
		digest = hex.EncodeToString(h.Sum(nil))
		pw.Close()
	}()
	return pr, ct, func() string { <-done; return digest }
}

func rssBytes() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// memSampler records the peak RSS and Go heap while a parse runs.
type memSampler struct {
	baseRSS, peakRSS, baseHeap, peakHeap atomic.Int64
	stop                                 chan struct{}
	wg                                   sync.WaitGroup
}

func startSampler() *memSampler {
	runtime.GC()
	s := &memSampler{stop: make(chan struct{})}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s.baseRSS.Store(rssBytes())
	s.baseHeap.Store(int64(ms.HeapInuse))
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if r := rssBytes(); r > s.peakRSS.Load() {
				s.peakRSS.Store(r)
			}
			if h := int64(ms.HeapInuse); h > s.peakHeap.Load() {
				s.peakHeap.Store(h)
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *memSampler) finish() (rssGrowth, heapGrowth int64) {
	close(s.stop)
	s.wg.Wait()
	return s.peakRSS.Load() - s.baseRSS.Load(), s.peakHeap.Load() - s.baseHeap.Load()
}

// TestLargeUpload sends a 64 MiB archive (16 MiB under -race or -short)
// through both parsers: the spooled file is exact, and it is the only file
// left in the spool dir. How much memory this takes is a benchmark
// (BenchmarkLargeUploadMemory), not an assertion: it moves with -race and
// machine load.
func TestLargeUpload(t *testing.T) {
	size := int64(64 << 20)
	if raceEnabled || testing.Short() {
		// The race detector slows the per-byte base64 pass ~20×.
		size = 16 << 20
	}
	for _, mp := range []bool{false, true} {
		name := "json"
		if mp {
			name = "multipart"
		}
		t.Run(name, func(t *testing.T) {
			spoolDir := t.TempDir()
			body, ct, sum := largeBody(size, mp)
			b, err := parseLarge(ct, body, spoolDir, mp)
			if err != nil {
				t.Fatal(err)
			}
			if b.Source.ArchiveSize != size || b.Source.ArchiveSHA256 != sum() || b.Source.ArchiveName != "big.zip" {
				t.Fatalf("build %+v", b)
			}
			st, err := os.Stat(b.Source.ArchivePath)
			if err != nil || st.Size() != size || st.Mode().Perm() != 0o600 {
				t.Fatalf("spool file: %v %v", st, err)
			}
			if ents, _ := os.ReadDir(spoolDir); len(ents) != 1 {
				t.Errorf("spool dir holds %d entries, want the archive alone", len(ents))
			}
			b.Remove()
			if ents, _ := os.ReadDir(spoolDir); len(ents) != 0 {
				t.Errorf("spool dir not empty after Remove: %v", ents)
			}
		})
	}
}

func parseLarge(ct string, body io.Reader, spoolDir string, mp bool) (*Build, error) {
	if mp {
		return ParseMultipart(context.Background(), ct, body, spoolDir, 1<<30)
	}
	return ParseJSON(context.Background(), ct, body, spoolDir, 1<<30)
}

// BenchmarkLargeUploadMemory is docs/benchmarks.md's memory budget for the parsers: a
// 1 GiB archive (KETTLE_BENCH_UPLOAD_MIB sets another size) streamed
// through each parser must grow resident memory by well under 64 MiB. It
// reports the peak RSS and Go heap growth per upload; compare them with the
// budget by hand or with benchstat, never under -race.
func BenchmarkLargeUploadMemory(b *testing.B) {
	size := int64(1 << 30)
	if v, err := strconv.ParseInt(os.Getenv("KETTLE_BENCH_UPLOAD_MIB"), 10, 64); err == nil && v > 0 {
		size = v << 20
	}
	for _, mp := range []bool{false, true} {
		name := "json"
		if mp {
			name = "multipart"
		}
		b.Run(name, func(b *testing.B) {
			spoolDir := b.TempDir()
			b.SetBytes(size)
			var rssMax, heapMax int64
			for b.Loop() {
				b.StopTimer()
				body, ct, _ := largeBody(size, mp)
				b.StartTimer()
				s := startSampler()
				bd, err := parseLarge(ct, body, spoolDir, mp)
				rss, heap := s.finish()
				if err != nil {
					b.Fatal(err)
				}
				bd.Remove()
				rssMax, heapMax = max(rssMax, rss), max(heapMax, heap)
			}
			b.ReportMetric(float64(rssMax)/(1<<20), "peak-RSS-growth-MiB")
			b.ReportMetric(float64(heapMax)/(1<<20), "peak-heap-growth-MiB")
		})
	}
}

// BenchmarkParseJSON measures the parser alone on a 64 MiB archive body
// held in memory: JSON scanning, base64 decoding, sha256 and the spool write.
func BenchmarkParseJSON(b *testing.B) {
	const size = 64 << 20
	body, ct, _ := largeBody(size, false)
	data, err := io.ReadAll(body)
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	b.SetBytes(size)
	for b.Loop() {
		bd, err := ParseJSON(context.Background(), ct, bytes.NewReader(data), dir, 1<<30)
		if err != nil {
			b.Fatal(err)
		}
		bd.Remove()
	}
}
