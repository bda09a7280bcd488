// Package metrics exports the statistics of this module's components as
// Prometheus metrics, with collectors that the caller registers on a
// registry of its choosing:
//
//	reg := prometheus.NewRegistry()
//	reg.MustRegister(metrics.NewDHCPServerCollector(dhcpSrv), metrics.NewResponderCollector(respSrv))
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// The collectors read each component's Stats snapshot when Prometheus
// scrapes, so that the packet and lookup paths pay nothing for metrics: no
// counters of their own, no locks, no allocations. Nothing is registered
// globally. Label values are bounded: DHCP message types, drop reasons,
// outcomes and codes, never MAC or IP addresses. To tell several servers
// of one process apart, wrap the registerer with
// [github.com/prometheus/client_golang/prometheus.WrapRegistererWith].
//
// Every metric name starts with [Namespace]; the README's "Observing it"
// section lists them.
package metrics
