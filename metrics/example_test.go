package metrics_test

import (
	"fmt"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/dhcpserver"
	"github.com/tinkerbell/backend/metrics"
)

// This example registers the collector of a DHCP server on a registry of
// its own; promhttp.HandlerFor(reg, promhttp.HandlerOpts{}) would serve it.
func ExampleNewDHCPServerCollector() {
	srv, err := dhcpserver.New(dhcpserver.Config{
		Backend:    backend.BackendFunc(hosts),
		ServerAddr: netip.MustParseAddr("198.18.0.1"),
	})
	if err != nil {
		panic(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewDHCPServerCollector(srv))

	families, err := reg.Gather()
	if err != nil {
		panic(err)
	}
	for _, f := range families {
		fmt.Println(f.GetName(), f.GetType())
	}
	// Output:
	// tinkerbell_dhcp_lookup_duration_seconds HISTOGRAM
	// tinkerbell_dhcp_lookup_errors_total COUNTER
	// tinkerbell_dhcp_lookups_coalesced_total COUNTER
	// tinkerbell_dhcp_lookups_in_flight GAUGE
	// tinkerbell_dhcp_lookups_not_found_total COUNTER
	// tinkerbell_dhcp_lookups_reused_total COUNTER
	// tinkerbell_dhcp_lookups_total COUNTER
	// tinkerbell_dhcp_packets_dropped_total COUNTER
	// tinkerbell_dhcp_replies_sent_total COUNTER
	// tinkerbell_dhcp_requests_received_total COUNTER
	// tinkerbell_dhcp_requests_waiting GAUGE
}
