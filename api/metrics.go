package api

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/jobs"
)

// Metrics are the service's Prometheus collectors (docs/api.md#operations).
// The HTTP handler records watchers and uploads. The build metrics come
// from job state: ObserveJob is fed by the job store's view of every
// finished job (jobs.WithFinished), so every front end of a cluster counts
// every build, whichever process ran it.
type Metrics struct {
	Builds        *prometheus.CounterVec   // kettle_builds_total{status,toolchain,error_type}
	BuildDuration *prometheus.HistogramVec // kettle_build_duration_seconds{toolchain,status}
	QueueDuration prometheus.Histogram     // kettle_queue_wait_seconds
	Submitted     *prometheus.CounterVec   // kettle_submissions_total{api,outcome}
	Watchers      prometheus.Gauge         // kettle_sse_watchers
	Uploaded      prometheus.Counter       // kettle_upload_bytes_total
	EventsSent    prometheus.Counter       // kettle_sse_events_sent_total
	LostWorkers   prometheus.Counter       // kettle_lost_workers_total
	Retried       prometheus.Counter       // kettle_build_retries_total
	PhaseDuration *prometheus.HistogramVec // kettle_phase_duration_seconds{phase,toolchain}

	mu         sync.Mutex
	queueDepth func(context.Context) (int, error)
	registered bool
}

// NewMetrics returns unregistered collectors.
func NewMetrics() *Metrics {
	durBuckets := []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 3600}
	return &Metrics{
		Builds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kettle_builds_total", Help: "Finished builds by status, toolchain and error type.",
		}, []string{"status", "toolchain", "error_type"}),
		BuildDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kettle_build_duration_seconds", Help: "Wall time of builds, from start to result.",
			Buckets: durBuckets,
		}, []string{"toolchain", "status"}),
		QueueDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kettle_queue_wait_seconds", Help: "Time jobs waited in the queue before a worker took them.",
			Buckets: append([]float64{0.005, 0.01, 0.025, 0.05}, durBuckets...),
		}),
		Submitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kettle_submissions_total", Help: "Build submissions by API and outcome.",
		}, []string{"api", "outcome"}),
		Watchers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kettle_sse_watchers", Help: "Active SSE event stream connections.",
		}),
		Uploaded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kettle_upload_bytes_total", Help: "Bytes of request bodies received on submission routes.",
		}),
		EventsSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kettle_sse_events_sent_total", Help: "Events written to SSE watchers.",
		}),
		LostWorkers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kettle_lost_workers_total", Help: "Workers lost (killed, cut off) while holding a job, over finished jobs.",
		}),
		Retried: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kettle_build_retries_total", Help: "Extra attempts of finished jobs (a worker was lost and another took the job).",
		}),
		PhaseDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kettle_phase_duration_seconds", Help: "Wall time of each phase of finished jobs (clone … store).",
			Buckets: append([]float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05}, durBuckets...),
		}, []string{"phase", "toolchain"}),
	}
}

// SetQueueDepth makes kettle_queue_depth report f() on every scrape.
func (m *Metrics) SetQueueDepth(f func(context.Context) (int, error)) {
	m.mu.Lock()
	m.queueDepth = f
	m.mu.Unlock()
}

// Register adds the collectors to reg (once; later calls are no-ops).
func (m *Metrics) Register(reg prometheus.Registerer) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.registered {
		return nil
	}
	m.registered = true
	depth := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "kettle_queue_depth", Help: "Jobs waiting for a worker (-1 when unknown).",
	}, func() float64 {
		m.mu.Lock()
		f := m.queueDepth
		m.mu.Unlock()
		if f == nil {
			return -1
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		n, err := f(ctx)
		if err != nil {
			return -1
		}
		return float64(n)
	})
	for _, c := range []prometheus.Collector{m.Builds, m.BuildDuration, m.QueueDuration, m.Submitted,
		m.Watchers, m.Uploaded, m.EventsSent, m.LostWorkers, m.Retried, m.PhaseDuration, depth} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return err
			}
		}
	}
	return nil
}

// ObserveJob records one finished job from its state: status, toolchain,
// error type, the build's duration (last attempt's start to finish) and its
// wait in the queue (submission to the last attempt's start).
func (m *Metrics) ObserveJob(j *jobs.Job) {
	if j.Status != jobs.StatusSucceeded && j.Status != jobs.StatusFailed {
		return
	}
	tc := j.Toolchain
	if tc == "" {
		tc = "unknown"
	}
	status := string(j.Status)
	m.Builds.WithLabelValues(status, tc, j.ErrorType).Inc()
	if j.StartedAt != nil && j.FinishedAt != nil {
		m.BuildDuration.WithLabelValues(tc, status).Observe(j.FinishedAt.Sub(*j.StartedAt).Seconds())
		if d := j.StartedAt.Sub(j.CreatedAt); d >= 0 {
			m.QueueDuration.Observe(d.Seconds())
		}
	}
	for _, p := range j.Phases {
		m.PhaseDuration.WithLabelValues(p.Name, tc).Observe(p.Duration.Seconds())
	}
	if n := len(j.LostWorkers); n > 0 {
		m.LostWorkers.Add(float64(n))
	}
	if j.Attempts > 1 {
		m.Retried.Add(float64(j.Attempts - 1))
	}
}

// ObserveBuild records one finished build. err nil means succeeded.
func (m *Metrics) ObserveBuild(toolchain string, queued, took time.Duration, err error) {
	if toolchain == "" {
		toolchain = "unknown"
	}
	status, kind := "succeeded", ""
	if err != nil {
		status, kind = "failed", string(failure.KindOf(err))
	}
	m.Builds.WithLabelValues(status, toolchain, kind).Inc()
	m.BuildDuration.WithLabelValues(toolchain, status).Observe(took.Seconds())
	if queued >= 0 {
		m.QueueDuration.Observe(queued.Seconds())
	}
}
