package worker

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kettle-build/kettle/events"
	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/jobs"
)

// Metrics are the collectors of the builds one process ran (`kettle worker
// --metrics-listen`, and the in-process workers of `kettle serve`). They
// are named kettle_worker_* because the cluster-wide build counts
// (kettle_builds_total on every front end) come from job state; summing the
// two would count each build twice.
type Metrics struct {
	Builds   *prometheus.CounterVec   // kettle_worker_builds_total{status,toolchain,error_type}
	Duration *prometheus.HistogramVec // kettle_worker_build_duration_seconds{toolchain,status}
	Running  prometheus.Gauge         // kettle_worker_builds_running
}

// NewMetrics returns unregistered collectors.
func NewMetrics() *Metrics {
	return &Metrics{
		Builds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kettle_worker_builds_total", Help: "Builds this process ran, by what the builder returned (status, toolchain, error type).",
		}, []string{"status", "toolchain", "error_type"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kettle_worker_build_duration_seconds", Help: "Wall time of the builds this process ran.",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 3600},
		}, []string{"toolchain", "status"}),
		Running: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kettle_worker_builds_running", Help: "Builds running in this process.",
		}),
	}
}

// Register adds the collectors to reg.
func (m *Metrics) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.Builds, m.Duration, m.Running} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return err
			}
		}
	}
	return nil
}

// Observe wraps b so that every build it runs is recorded in m.
func Observe(b jobs.Builder, m *Metrics) jobs.Builder { return observed{b, m} }

type observed struct {
	b jobs.Builder
	m *Metrics
}

func (o observed) Build(ctx context.Context, job *jobs.Job, sink events.Sink) (*jobs.Outcome, error) {
	o.m.Running.Inc()
	defer o.m.Running.Dec()
	start := time.Now()
	out, err := o.b.Build(ctx, job, sink)
	tc := "unknown"
	if out != nil && out.Toolchain != "" {
		tc = out.Toolchain
	}
	status, kind := "succeeded", ""
	if err != nil {
		status, kind = "failed", string(failure.KindOf(err))
	}
	o.m.Builds.WithLabelValues(status, tc, kind).Inc()
	o.m.Duration.WithLabelValues(tc, status).Observe(time.Since(start).Seconds())
	return out, err
}
