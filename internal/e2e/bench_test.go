package e2e_test

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/dhcpserver"
	"github.com/tinkerbell/backend/events"
	"github.com/tinkerbell/backend/internal/natstest"
	"github.com/tinkerbell/backend/metrics"
	natsbackend "github.com/tinkerbell/backend/nats"
	"github.com/tinkerbell/backend/responder"
)

// The observability options the benchmarks compare, each against the
// plain configuration in the same run.
type observe struct {
	name                     string
	metrics, events, tracing bool
}

var observes = []observe{
	{name: "plain"},
	{name: "metrics", metrics: true},
	{name: "events", events: true},
	{name: "tracing", tracing: true},
	{name: "all", metrics: true, events: true, tracing: true},
}

func memBackend(_ context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
	if req.MACAddress.String() != known.String() {
		return backend.DHCP{}, backend.Netboot{}, backend.ErrNotFound
	}
	return backend.DHCP{IPAddress: netip.MustParseAddr("198.18.0.10"), SubnetMask: backend.MaskFrom(24),
		DefaultGateway: netip.MustParseAddr("198.18.0.1"), NameServers: []netip.Addr{netip.MustParseAddr("198.18.0.2")}}, backend.Netboot{}, nil
}

// scrapeWhile gathers reg every second (Prometheus scrapes every 15 s by
// default) until stop.
func scrapeWhile(b *testing.B, reg *prometheus.Registry) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if _, err := reg.Gather(); err != nil {
					b.Error(err)
				}
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// benchHandle measures dhcpserver.Server.Handle for a DISCOVER, a Backend
// lookup per packet (no answer reuse), with the given backend setup.
func benchHandle(b *testing.B, o observe, be func(tp *sdktrace.TracerProvider) backend.Backend, extra func(reg *prometheus.Registry)) {
	var tp *sdktrace.TracerProvider
	if o.tracing {
		tp = sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
		b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	}
	cfg := dhcpserver.Config{
		Backend: be(tp), ServerAddr: netip.MustParseAddr("127.0.0.1"),
		AnswerReuse: -1, MinLookupInterval: -1,
	}
	if tp != nil {
		cfg.TracerProvider = tp
	}
	var pub *events.Publisher
	if o.events {
		s := natstest.Run(b, nil)
		var err error
		if pub, err = events.New(events.Config{Conn: natstest.Connect(b, s), BufferSize: 1 << 16}); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = pub.Close() })
		cfg.OnDecision = pub.OnDecision
	}
	srv, err := dhcpserver.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = srv.Close() })
	if o.metrics {
		reg := prometheus.NewRegistry()
		reg.MustRegister(metrics.NewDHCPServerCollector(srv))
		if pub != nil {
			reg.MustRegister(metrics.NewEventsCollector(pub))
		}
		if extra != nil {
			extra(reg)
		}
		b.Cleanup(scrapeWhile(b, reg))
	}
	req, err := dhcpv4.NewDiscovery(known, dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if reply, _ := srv.Handle(ctx, req); reply == nil {
			b.Fatal("no reply")
		}
	}
}

// BenchmarkHandle: the DHCP server alone, with an in-memory backend.
func BenchmarkHandle(b *testing.B) {
	for _, o := range observes {
		b.Run(o.name, func(b *testing.B) {
			benchHandle(b, o, func(*sdktrace.TracerProvider) backend.Backend { return backend.BackendFunc(memBackend) }, nil)
		})
	}
}

// BenchmarkTransaction: the whole chain, DHCP server → requester → NATS
// (embedded, loopback TCP) → responder → in-memory backend.
func BenchmarkTransaction(b *testing.B) {
	for _, o := range observes {
		b.Run(o.name, func(b *testing.B) {
			var req *natsbackend.Backend
			var resp *responder.Server
			benchHandle(b, o, func(tp *sdktrace.TracerProvider) backend.Backend {
				s := natstest.Run(b, nil)
				rcfg := responder.Config{Conn: natstest.Connect(b, s), Backend: backend.BackendFunc(memBackend)}
				qcfg := natsbackend.Config{Conn: natstest.Connect(b, s), HedgeDelay: -1}
				if tp != nil {
					rcfg.TracerProvider, qcfg.TracerProvider = tp, tp
				}
				var err error
				if resp, err = responder.New(rcfg); err != nil {
					b.Fatal(err)
				}
				served := make(chan error, 1)
				go func() { served <- resp.Serve() }()
				b.Cleanup(func() { _ = resp.Close(); <-served })
				if req, err = natsbackend.New(qcfg); err != nil {
					b.Fatal(err)
				}
				return req
			}, func(reg *prometheus.Registry) {
				reg.MustRegister(metrics.NewRequesterCollector(req), metrics.NewResponderCollector(resp))
			})
		})
	}
}
