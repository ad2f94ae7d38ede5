// Package metrics defines the join service's Prometheus metrics. They are
// served on their own port, never on the attested gRPC port. Labels have a
// bounded set of values: a rejection reason is the name of the failed check
// ("pcr[4]", "binding", "csr-identity"), never free text from a peer.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is the join service's set of metrics, in its own registry.
type Metrics struct {
	registry       *prometheus.Registry
	tickets        *prometheus.CounterVec
	rejections     *prometheus.CounterVec
	verifySeconds  *prometheus.HistogramVec
	handlerSeconds *prometheus.HistogramVec
}

// New registers the metrics in a fresh registry (with Go and process
// collectors).
func New() *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		tickets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cloister_joinservice_tickets_total",
			Help: "Tickets issued, by kind (join, rejoin).",
		}, []string{"kind"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cloister_joinservice_rejections_total",
			Help: "Refused attestations and requests, by stage (attestation, request, rate-limit) and reason (the failed check).",
		}, []string{"stage", "reason"}),
		verifySeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cloister_joinservice_verification_seconds",
			Help:    "Time to validate one peer's evidence, by variant and result.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"variant", "result"}),
		handlerSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cloister_joinservice_handler_seconds",
			Help:    "Time spent in a gRPC handler, by method and gRPC code.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}, []string{"method", "code"}),
	}
	m.registry.MustRegister(m.tickets, m.rejections, m.verifySeconds, m.handlerSeconds,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// Registry is the registry, for tests that read values.
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }

// Ticket counts an issued ticket.
func (m *Metrics) Ticket(kind string) { m.tickets.WithLabelValues(kind).Inc() }

// Rejection counts a refusal.
func (m *Metrics) Rejection(stage, reason string) { m.rejections.WithLabelValues(stage, reason).Inc() }

// Verification records how long validating one peer's evidence took.
func (m *Metrics) Verification(variant, result string, d time.Duration) {
	m.verifySeconds.WithLabelValues(variant, result).Observe(d.Seconds())
}

// HandlerDone records how long a handler took.
func (m *Metrics) HandlerDone(method, code string, d time.Duration) {
	m.handlerSeconds.WithLabelValues(method, code).Observe(d.Seconds())
}
