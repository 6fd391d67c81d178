package jobs

import (
	"bytes"
	"context"
	"io"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/kettle-build/kettle/events"
)

// stampBuilder emits n build lines carrying their emission time.
type stampBuilder struct {
	n     int
	every time.Duration
	fakeBuilder
}

func (b *stampBuilder) Build(ctx context.Context, j *Job, sink events.Sink) (*Outcome, error) {
	sink.Emit(events.Detected("cargo", "Cargo"))
	for i := 0; i < b.n; i++ {
		sink.Emit(events.Event{Type: events.Build, Msg: strconv.FormatInt(time.Now().UnixNano(), 10)})
		if b.every > 0 {
			time.Sleep(b.every)
		}
	}
	return b.fakeBuilder.Build(ctx, j, events.Discard)
}

// BenchmarkWatchers1000 follows one build with 1,000 concurrent watchers
// and reports the p50/p99 delay from Emit to delivery.
//
//	go test -run '^$' -bench Watchers1000 -benchtime 1x ./jobs
func BenchmarkWatchers1000(b *testing.B) {
	const watchers, lines = 1000, 2000
	for it := 0; it < b.N; it++ {
		s, err := OpenEmbedded(context.Background(), b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		release := make(chan struct{})
		sb := &stampBuilder{n: lines, every: time.Millisecond, fakeBuilder: fakeBuilder{dir: b.TempDir(), gate: func(ctx context.Context, j *Job) error {
			<-release
			return nil
		}, beforeDetect: true}}
		ctx, cancel := context.WithCancel(context.Background())
		go s.RunWorker(ctx, "bench", sb)
		j, err := s.Submit(ctx, Request{Nonce: []byte{1}, Source: Source{URL: "https://x/y"}})
		if err != nil {
			b.Fatal(err)
		}
		var mu sync.Mutex
		var lat []time.Duration
		var wg sync.WaitGroup
		counts := make([]int, watchers)
		for w := 0; w < watchers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				local := make([]time.Duration, 0, lines)
				s.Watch(ctx, j.ID, 0, func(i int, ev events.Event) error {
					counts[w]++
					if ev.Type == events.Build {
						if ns, err := strconv.ParseInt(ev.Msg, 10, 64); err == nil {
							local = append(local, time.Since(time.Unix(0, ns)))
						}
					}
					return nil
				})
				mu.Lock()
				lat = append(lat, local...)
				mu.Unlock()
			}(w)
		}
		time.Sleep(200 * time.Millisecond)
		b.ResetTimer()
		close(release)
		wg.Wait()
		b.StopTimer()
		for w, c := range counts {
			if c != counts[0] {
				b.Fatalf("watcher %d got %d events, watcher 0 %d", w, c, counts[0])
			}
		}
		sort.Slice(lat, func(a, c int) bool { return lat[a] < lat[c] })
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		b.ReportMetric(float64(counts[0]), "events/watcher")
		cancel()
		s.Close()
	}
}

// BenchmarkAppend measures how fast a build's events reach the log.
func BenchmarkAppend(b *testing.B) {
	s, err := OpenEmbedded(context.Background(), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	c := newCursor("bench")
	ctx := context.Background()
	ev := events.Msgf(events.Build, "   Compiling serde v1.0.0 (registry+https://github.com/rust-lang/crates.io-index)")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.appendEvent(ctx, c, ev, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRoundTrip is the store's share of a build's fixed cost: submit
// an archive, a worker takes it (no-op build), follow the log to
// `complete`, download the result.
func BenchmarkRoundTrip(b *testing.B) {
	s, err := OpenEmbedded(context.Background(), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.RunWorker(ctx, "bench", &fakeBuilder{dir: b.TempDir()})
	for s.Ready(ctx) != nil {
		time.Sleep(time.Millisecond)
	}
	src := bytesOf(64 << 10)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		j, err := s.Submit(ctx, Request{Nonce: []byte{1}, Archive: bytesReader(src), Source: Source{ArchiveName: "x.zip"}})
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Watch(ctx, j.ID, 0, func(int, events.Event) error { return nil }); err != nil {
			b.Fatal(err)
		}
		r, _, err := s.Result(ctx, j.ID)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, r)
		r.Close()
	}
}

func bytesOf(n int) []byte { return make([]byte, n) }

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
