package responder_test

import (
	"context"
	"errors"
	"net/netip"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/internal/natstest"
	"github.com/tinkerbell/backend/internal/wire"
	natsbackend "github.com/tinkerbell/backend/nats"
	"github.com/tinkerbell/backend/responder"
)

// benchParallelism is the number of goroutines per GOMAXPROCS issuing
// lookups in the parallel benchmarks.
const benchParallelism = 8

var benchMaxConc = 64

// BenchmarkLookup measures a lookup end to end (requester → embedded NATS
// → responder → in-memory backend, over loopback TCP) beside its
// baselines: nc.Request to a raw echo subscription with payloads of the
// same sizes ("raw"), and the same with the NATS headers the wire protocol
// requires ("raw-same-headers").
func BenchmarkLookup(b *testing.B) {
	ns := natstest.Run(b, nil)
	cnc := natstest.Connect(b, ns) // the requester's side
	snc := natstest.Connect(b, ns) // the responder's side

	mac := mustMAC(b, "52:54:00:66:ea:9a")
	script := backend.URL("http://198.18.0.1/auto.ipxe")
	answer := backend.Message{
		DHCP: backend.DHCP{
			MACAddress:       mac,
			IPAddress:        netip.MustParseAddr("198.18.0.10"),
			SubnetMask:       backend.MaskFrom(24),
			DefaultGateway:   netip.MustParseAddr("198.18.0.1"),
			NameServers:      []netip.Addr{netip.MustParseAddr("198.18.0.2")},
			Hostname:         "node-1",
			DomainName:       "example.test",
			BroadcastAddress: netip.MustParseAddr("198.18.0.255"),
			LeaseTime:        86400,
			DomainSearch:     []string{"example.test"},
		},
		Netboot: backend.Netboot{AllowNetboot: true, IPXEScriptURL: script},
	}
	mem := Hosts{mac.String(): answer.DHCP}

	be := backendWithNetboot{mem, answer.Netboot}
	benchServe(b, responder.Config{Conn: snc, Backend: be})
	// The same with MaxConcurrent tuned for a backend that never blocks:
	// fewer workers, fewer goroutine wake-ups.
	benchServe(b, responder.Config{Conn: snc, Backend: be, Subject: "bench.tuned", MaxConcurrent: runtime.GOMAXPROCS(0)})
	req, err := natsbackend.New(natsbackend.Config{Conn: cnc, Timeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	tuned, err := natsbackend.New(natsbackend.Config{Conn: cnc, Subject: "bench.tuned", Timeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}

	// The raw baseline: the same request and reply bytes.
	var ids wire.IDs
	reqData := wire.AppendRequest(nil, &wire.Attrs{Source: natsbackend.DefaultSource, Type: backend.RequestEventType, Time: time.Now()}, &ids, &backend.DHCPRequest{MACAddress: mac})
	replyData := wire.AppendResponse(nil, &wire.Attrs{Source: responder.DefaultSource, Type: backend.ResponseEventType, Time: time.Now()}, &ids, &answer)
	echo, err := snc.Subscribe("bench.raw", func(m *nats.Msg) { _ = m.Respond(replyData) })
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = echo.Unsubscribe() })
	// A second baseline with the identical NATS messages: the same bytes
	// and the headers the wire protocol requires (Content-Type and the
	// timeout budget on requests, Content-Type on replies).
	replyMsg := &nats.Msg{Header: nats.Header{backend.HeaderContentType: {backend.ContentType}}, Data: replyData}
	echoH, err := snc.Subscribe("bench.rawh", func(m *nats.Msg) { _ = m.RespondMsg(replyMsg) })
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = echoH.Unsubscribe() })
	if err := snc.Flush(); err != nil {
		b.Fatal(err)
	}
	b.Logf("request event %d bytes, reply event %d bytes", len(reqData), len(replyData))

	lookup := func(b *testing.B) {
		d, _, err := req.Lookup(context.Background(), backend.DHCPRequest{MACAddress: mac})
		if err != nil || d.Hostname != "node-1" {
			b.Fatalf("Lookup = %q, %v", d.Hostname, err)
		}
	}
	lookupTuned := func(b *testing.B) {
		if _, _, err := tuned.Lookup(context.Background(), backend.DHCPRequest{MACAddress: mac}); err != nil {
			b.Fatalf("Lookup: %v", err)
		}
	}
	raw := func(b *testing.B) {
		m, err := cnc.Request("bench.raw", reqData, 5*time.Second)
		if err != nil || len(m.Data) != len(replyData) {
			b.Fatalf("raw request: %v", err)
		}
	}
	rawHeaders := func(b *testing.B) {
		m, err := cnc.RequestMsg(&nats.Msg{Subject: "bench.rawh", Data: reqData, Header: nats.Header{
			backend.HeaderContentType: {backend.ContentType}, backend.HeaderTimeout: {"5000"},
		}}, 5*time.Second)
		if err != nil || len(m.Data) != len(replyData) {
			b.Fatalf("raw request: %v", err)
		}
	}
	// Breakdown: the requester against a raw echo, and a raw request to the
	// responder, to tell which side costs what.
	echoLookup, err := natsbackend.New(natsbackend.Config{Conn: cnc, Subject: "bench.raw", Timeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	requesterOnly := func(b *testing.B) {
		if _, _, err := echoLookup.Lookup(context.Background(), backend.DHCPRequest{MACAddress: mac}); err != nil {
			b.Fatalf("Lookup: %v", err)
		}
	}
	responderOnly := func(b *testing.B) {
		m, err := cnc.RequestMsg(&nats.Msg{Subject: backend.DefaultSubject, Data: reqData}, 5*time.Second)
		if err != nil || m.Header.Get(backend.HeaderServiceErrorCode) != "" {
			b.Fatalf("raw request: %v", err)
		}
	}
	for _, bc := range []struct {
		name string
		do   func(*testing.B)
	}{
		{"responder", lookup}, {"raw", raw}, {"raw-same-headers", rawHeaders},
		{"responder-maxconc-gomaxprocs", lookupTuned},
		{"requester-to-raw", requesterOnly}, {"raw-to-responder", responderOnly},
	} {
		b.Run(bc.name+"/sequential", func(b *testing.B) {
			b.ReportAllocs()
			defer reportCPU(b)()
			for b.Loop() {
				bc.do(b)
			}
		})
		b.Run(bc.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			defer reportCPU(b)()
			b.SetParallelism(benchParallelism)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					bc.do(b)
				}
			})
		})
	}
}

// benchServe runs a responder until the benchmark ends.
func benchServe(b *testing.B, cfg responder.Config) {
	srv, err := responder.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	b.Cleanup(func() {
		if err := srv.Shutdown(context.Background()); err != nil {
			b.Error(err)
		}
		if err := <-served; !errors.Is(err, responder.ErrServerClosed) {
			b.Error(err)
		}
	})
}

// backendWithNetboot adds fixed netboot settings to a Hosts answer.
type backendWithNetboot struct {
	Hosts
	nb backend.Netboot
}

func (h backendWithNetboot) Lookup(ctx context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
	d, _, err := h.Hosts.Lookup(ctx, req)
	return d, h.nb, err
}

// reportCPU reports the CPU time of the whole process (NATS server and
// both clients) per operation, a figure less disturbed than ns/op by other
// load on the machine. Call the returned function when the loop is done.
func reportCPU(b *testing.B) func() {
	start := cpuTime()
	return func() {
		b.ReportMetric(float64((cpuTime()-start).Nanoseconds())/float64(b.N), "cpu-ns/op")
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
