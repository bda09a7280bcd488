package metrics_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/cache"
	"github.com/tinkerbell/backend/dhcpserver"
	"github.com/tinkerbell/backend/events"
	"github.com/tinkerbell/backend/internal/dhcptest"
	"github.com/tinkerbell/backend/internal/natstest"
	"github.com/tinkerbell/backend/metrics"
	natsbackend "github.com/tinkerbell/backend/nats"
	"github.com/tinkerbell/backend/responder"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var known = net.HardwareAddr{0x52, 0x54, 0x00, 0x66, 0xea, 0x9a}

func hosts(_ context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
	if req.MACAddress.String() == known.String() {
		return backend.DHCP{IPAddress: netip.MustParseAddr("198.18.0.10"), SubnetMask: backend.MaskFrom(24)}, backend.Netboot{}, nil
	}
	return backend.DHCP{}, backend.Netboot{}, backend.ErrNotFound
}

// startDHCP serves a DHCP server with the hosts backend on a loopback UDP
// socket and returns it with its address.
func startDHCP(t *testing.T) (*dhcpserver.Server, *net.UDPAddr) {
	t.Helper()
	srv, err := dhcpserver.New(dhcpserver.Config{Backend: backend.BackendFunc(hosts), ServerAddr: netip.MustParseAddr("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	return srv, dhcptest.Serve(t, srv)
}

// discover sends a DISCOVER for mac and returns the OFFER, or nil when
// none comes within wait.
func discover(t *testing.T, addr *net.UDPAddr, mac net.HardwareAddr, wait time.Duration) *dhcpv4.DHCPv4 {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d, err := dhcpv4.NewDiscovery(mac)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteToUDP(d.ToBytes(), addr); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 1500)
	n, _, err := c.ReadFromUDP(buf)
	if err != nil {
		return nil
	}
	p, err := dhcpv4.FromBytes(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDHCPServerCollector(t *testing.T) {
	srv, addr := startDHCP(t)
	c := metrics.NewDHCPServerCollector(srv)
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
	if offer := discover(t, addr, known, 5*time.Second); offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("no OFFER: %v", offer)
	}
	if p := discover(t, addr, net.HardwareAddr{0, 0, 0x5e, 0, 0x53, 1}, 300*time.Millisecond); p != nil {
		t.Fatalf("an unknown MAC got %v", p.MessageType())
	}
	// The drop is counted after the (absent) reply: poll.
	deadline := time.Now().Add(5 * time.Second)
	for srv.Stats().Dropped[dhcpserver.DropNotFound] == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	want := `
# HELP tinkerbell_dhcp_lookups_not_found_total Backend lookups that found no reservation.
# TYPE tinkerbell_dhcp_lookups_not_found_total counter
tinkerbell_dhcp_lookups_not_found_total 1
# HELP tinkerbell_dhcp_lookups_total Backend lookups made.
# TYPE tinkerbell_dhcp_lookups_total counter
tinkerbell_dhcp_lookups_total 2
# HELP tinkerbell_dhcp_replies_sent_total DHCP replies sent, by message type.
# TYPE tinkerbell_dhcp_replies_sent_total counter
tinkerbell_dhcp_replies_sent_total{type="ack"} 0
tinkerbell_dhcp_replies_sent_total{type="nak"} 0
tinkerbell_dhcp_replies_sent_total{type="offer"} 1
# HELP tinkerbell_dhcp_requests_received_total Well-formed DHCP requests received, by message type.
# TYPE tinkerbell_dhcp_requests_received_total counter
tinkerbell_dhcp_requests_received_total{type="decline"} 0
tinkerbell_dhcp_requests_received_total{type="discover"} 2
tinkerbell_dhcp_requests_received_total{type="inform"} 0
tinkerbell_dhcp_requests_received_total{type="release"} 0
tinkerbell_dhcp_requests_received_total{type="request"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"tinkerbell_dhcp_lookups_total", "tinkerbell_dhcp_lookups_not_found_total",
		"tinkerbell_dhcp_replies_sent_total", "tinkerbell_dhcp_requests_received_total"); err != nil {
		t.Error(err)
	}
	if got := testutil.ToFloat64(constLabel(c, "tinkerbell_dhcp_packets_dropped_total", "reason", "not-found")); got != 1 {
		t.Errorf("dropped{reason=not-found} = %v, want 1", got)
	}
	if n := histogramCount(t, c, "tinkerbell_dhcp_lookup_duration_seconds"); n != 2 {
		t.Errorf("lookup_duration_seconds count = %d, want 2", n)
	}
}

func TestResponderCollector(t *testing.T) {
	s := natstest.Run(t, nil)
	nc := natstest.Connect(t, s)
	srv, err := responder.New(responder.Config{Conn: nc, Backend: backend.BackendFunc(hosts)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	c := metrics.NewResponderCollector(srv)
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}

	req, err := natsbackend.New(natsbackend.Config{Conn: natstest.Connect(t, s), HedgeDelay: -1}) // exact counts: no hedges
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := req.Lookup(t.Context(), backend.DHCPRequest{MACAddress: known}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := req.Lookup(t.Context(), backend.DHCPRequest{MACAddress: net.HardwareAddr{0, 0, 0x5e, 0, 0x53, 1}}); !errors.Is(err, backend.ErrNotFound) {
		t.Fatal(err)
	}
	// A request is counted after its reply is sent: poll.
	deadline := time.Now().Add(5 * time.Second)
	for srv.Stats().Requests < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	want := `
# HELP tinkerbell_responder_errors_total Lookup requests answered with an error code (404 included) or not answered.
# TYPE tinkerbell_responder_errors_total counter
tinkerbell_responder_errors_total{subject="tinkerbell.dhcp.backend"} 1
# HELP tinkerbell_responder_requests_total Lookup requests handled, successful or not.
# TYPE tinkerbell_responder_requests_total counter
tinkerbell_responder_requests_total{subject="tinkerbell.dhcp.backend"} 2
# HELP tinkerbell_responder_in_flight Requests being handled now.
# TYPE tinkerbell_responder_in_flight gauge
tinkerbell_responder_in_flight{subject="tinkerbell.dhcp.backend"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"tinkerbell_responder_requests_total", "tinkerbell_responder_errors_total", "tinkerbell_responder_in_flight"); err != nil {
		t.Error(err)
	}

	for _, tc := range []struct {
		name, label, value string
		want               float64
	}{
		{"tinkerbell_responder_outcomes_total", "outcome", "ok", 1},
		{"tinkerbell_responder_outcomes_total", "outcome", "not_found", 1},
		{"tinkerbell_responder_outcomes_total", "outcome", "shed", 0},
		{"tinkerbell_responder_replies_total", "code", "404", 1},
		{"tinkerbell_responder_replies_total", "code", "0", 1},
	} {
		if got := testutil.ToFloat64(constLabel(c, tc.name, tc.label, tc.value)); got != tc.want {
			t.Errorf("%s{%s=%q} = %v, want %v", tc.name, tc.label, tc.value, got, tc.want)
		}
	}
	if n := histogramCount(t, c, "tinkerbell_responder_backend_duration_seconds"); n != 2 {
		t.Errorf("responder backend_duration_seconds count = %d, want 2", n)
	}

	rc := metrics.NewRequesterCollector(req)
	if problems, err := testutil.CollectAndLint(rc); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
	for _, tc := range []struct {
		name, label, value string
		want               float64
	}{
		{"tinkerbell_requester_lookups_total", "outcome", "ok", 1},
		{"tinkerbell_requester_lookups_total", "outcome", "not_found", 1},
		{"tinkerbell_requester_lookups_total", "outcome", "timeout", 0},
		{"tinkerbell_requester_error_codes_total", "code", "404", 1},
		{"tinkerbell_requester_error_codes_total", "code", "other", 0},
		{"tinkerbell_requester_requests_total", "subject", "tinkerbell.dhcp.backend", 2},
	} {
		if got := testutil.ToFloat64(constLabel(rc, tc.name, tc.label, tc.value)); got != tc.want {
			t.Errorf("%s{%s=%q} = %v, want %v", tc.name, tc.label, tc.value, got, tc.want)
		}
	}
	if n := histogramCount(t, rc, "tinkerbell_requester_lookup_duration_seconds"); n != 2 {
		t.Errorf("requester lookup_duration_seconds count = %d, want 2", n)
	}
}

// TestNoGlobalRegistration: constructing collectors registers nothing; the
// caller's registry gets them.
func TestNoGlobalRegistration(t *testing.T) {
	srv, _ := startDHCP(t)
	before, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	c := metrics.NewDHCPServerCollector(srv)
	after, _ := prometheus.DefaultGatherer.Gather()
	if len(after) != len(before) {
		t.Errorf("the default registry changed: %d → %d metric families", len(before), len(after))
	}
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}
}

// constLabel returns a collector of the one series of name with
// label=value, for testutil.ToFloat64.
func constLabel(c prometheus.Collector, name, label, value string) prometheus.Collector {
	return filtered{c, func(m prometheus.Metric) bool {
		d := m.Desc().String()
		return strings.Contains(d, `"`+name+`"`) && metricHasLabel(m, label, value)
	}}
}

type filtered struct {
	c    prometheus.Collector
	keep func(prometheus.Metric) bool
}

func (f filtered) Describe(ch chan<- *prometheus.Desc) { f.c.Describe(ch) }
func (f filtered) Collect(ch chan<- prometheus.Metric) {
	all := make(chan prometheus.Metric, 256)
	go func() { f.c.Collect(all); close(all) }()
	for m := range all {
		if f.keep(m) {
			ch <- m
		}
	}
}

func histogramCount(t *testing.T, c prometheus.Collector, name string) uint64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func TestCacheCollector(t *testing.T) {
	b, err := cache.New(cache.Config{Backend: backend.BackendFunc(hosts)})
	if err != nil {
		t.Fatal(err)
	}
	c := metrics.NewCacheCollector(b)
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
	unknown := net.HardwareAddr{0, 0, 0x5e, 0, 0x53, 1}
	for _, mac := range []net.HardwareAddr{known, unknown, unknown} {
		_, _, _ = b.Lookup(t.Context(), backend.DHCPRequest{MACAddress: mac})
	}
	want := `
# HELP tinkerbell_cache_entries MAC addresses remembered now.
# TYPE tinkerbell_cache_entries gauge
tinkerbell_cache_entries 2
# HELP tinkerbell_cache_lookups_total Lookups through the cache.
# TYPE tinkerbell_cache_lookups_total counter
tinkerbell_cache_lookups_total 3
# HELP tinkerbell_cache_negative_hits_total Not-found answered from the negative cache without asking the backend.
# TYPE tinkerbell_cache_negative_hits_total counter
tinkerbell_cache_negative_hits_total 1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"tinkerbell_cache_entries", "tinkerbell_cache_lookups_total", "tinkerbell_cache_negative_hits_total"); err != nil {
		t.Error(err)
	}
}

func TestEventsCollector(t *testing.T) {
	s := natstest.Run(t, nil)
	p, err := events.New(events.Config{Conn: natstest.Connect(t, s)})
	if err != nil {
		t.Fatal(err)
	}
	c := metrics.NewEventsCollector(p)
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
	p.Publish(events.Event{Kind: events.KindOffer, MAC: known})
	if err := p.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	p.Publish(events.Event{Kind: events.KindAck, MAC: known}) // after Shutdown: dropped
	want := `
# HELP tinkerbell_events_dropped_total Decision events dropped because the buffer was full or the publisher stopped.
# TYPE tinkerbell_events_dropped_total counter
tinkerbell_events_dropped_total 1
# HELP tinkerbell_events_published_total Decision events handed to the NATS connection.
# TYPE tinkerbell_events_published_total counter
tinkerbell_events_published_total 1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "tinkerbell_events_published_total", "tinkerbell_events_dropped_total"); err != nil {
		t.Error(err)
	}
}
