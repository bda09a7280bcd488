package e2e_test

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/dhcpserver"
	"github.com/tinkerbell/backend/internal/dhcptest"
	"github.com/tinkerbell/backend/internal/natstest"
	natsbackend "github.com/tinkerbell/backend/nats"
	"github.com/tinkerbell/backend/responder"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var known = net.HardwareAddr{0x52, 0x54, 0x00, 0x66, 0xea, 0x9a}

// loop is the whole chain with one TracerProvider: a DHCP server on
// loopback UDP asking the NATS requester, a responder serving a backend
// that makes a span of its own.
type loop struct {
	spans *tracetest.SpanRecorder
	addr  *net.UDPAddr
}

func startLoop(t *testing.T) *loop {
	t.Helper()
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	s := natstest.Run(t, nil)
	be := backend.BackendFunc(func(ctx context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
		_, span := tp.Tracer("example.com/backend").Start(ctx, "hosts.lookup")
		defer span.End()
		if req.MACAddress.String() != known.String() {
			return backend.DHCP{}, backend.Netboot{}, backend.ErrNotFound
		}
		return backend.DHCP{IPAddress: netip.MustParseAddr("198.18.0.10"), SubnetMask: backend.MaskFrom(24)}, backend.Netboot{}, nil
	})
	resp, err := responder.New(responder.Config{Conn: natstest.Connect(t, s), Backend: be, TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- resp.Serve() }()
	t.Cleanup(func() { _ = resp.Close(); <-served })

	// No hedges: on a loaded machine one would add a second responder span
	// (a sibling, in the same trace) and make the chain's shape vary.
	req, err := natsbackend.New(natsbackend.Config{Conn: natstest.Connect(t, s), TracerProvider: tp, HedgeDelay: -1})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := dhcpserver.New(dhcpserver.Config{Backend: req, ServerAddr: netip.MustParseAddr("127.0.0.1"), TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	return &loop{spans: spans, addr: dhcptest.Serve(t, srv)}
}

// discover sends a DISCOVER with the given options and returns the OFFER.
func (l *loop) discover(t *testing.T, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d, err := dhcpv4.NewDiscovery(known, mods...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteToUDP(d.ToBytes(), l.addr); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, _, err := c.ReadFromUDP(buf)
	if err != nil {
		t.Fatalf("no OFFER: %v", err)
	}
	p, err := dhcpv4.FromBytes(buf[:n])
	if err != nil || p.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("reply %v, %v; want an OFFER", p, err)
	}
	return p
}

// ended waits until n spans have ended and returns them.
func (l *loop) ended(t *testing.T, n int) []sdktrace.ReadOnlySpan {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := l.spans.Ended()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d spans ended, want %d", len(got), n)
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline
	}
}

// link is one span as the test sees it: its place in the chain.
type link struct {
	Name         string
	Kind         trace.SpanKind
	Parent       string // the name of the parent span, "" for a root, "remote" for a remote parent outside the recorded spans
	ParentRemote bool
}

// chain describes spans by the names of their parents, and checks they
// share one trace.
func chain(t *testing.T, spans []sdktrace.ReadOnlySpan, traceID trace.TraceID) []link {
	t.Helper()
	names := map[trace.SpanID]string{}
	for _, s := range spans {
		names[s.SpanContext().SpanID()] = s.Name()
	}
	var out []link
	for _, s := range spans {
		if s.SpanContext().TraceID() != traceID {
			t.Errorf("span %q is in trace %v, want %v", s.Name(), s.SpanContext().TraceID(), traceID)
		}
		p := ""
		if s.Parent().IsValid() {
			p = names[s.Parent().SpanID()]
			if p == "" {
				p = "remote"
			}
		}
		out = append(out, link{s.Name(), s.SpanKind(), p, s.Parent().IsRemote()})
	}
	return out
}

// TestOneTransactionOneTrace: the spans of one DHCP transaction form one
// trace across the NATS hop: DHCP server → requester → responder (continued
// from the request's traceparent) → the backend's span.
func TestOneTransactionOneTrace(t *testing.T) {
	l := startLoop(t)
	l.discover(t)
	spans := l.ended(t, 4)
	if len(spans) != 4 {
		t.Fatalf("%d spans, want 4", len(spans))
	}
	var root sdktrace.ReadOnlySpan
	for _, s := range spans {
		if !s.Parent().IsValid() {
			root = s
		}
	}
	if root == nil {
		t.Fatal("no root span")
	}
	got := chain(t, spans, root.SpanContext().TraceID())
	// Spans end innermost first.
	want := []link{
		{"hosts.lookup", trace.SpanKindInternal, "process tinkerbell.dhcp.backend", false},
		{"process tinkerbell.dhcp.backend", trace.SpanKindServer, "lookup tinkerbell.dhcp.backend", true},
		{"lookup tinkerbell.dhcp.backend", trace.SpanKindClient, "dhcp.lookup", false},
		{"dhcp.lookup", trace.SpanKindServer, "", false},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("spans (-want +got):\n%s", diff)
	}
	// The requester's span records its requests (attempts, retries,
	// hedges) as events.
	var evs []string
	for _, e := range spans[2].Events() {
		evs = append(evs, e.Name)
	}
	if len(evs) == 0 || evs[0] != "attempt" {
		t.Errorf("requester span events %q, want the first attempt", evs)
	}
}

// TestIPXEContinuesTheClientTrace: a traceparent in option 43 sub-option
// 69 (the binary form the server hands to iPXE, echoed back) makes the
// lookup part of the client's trace, across the NATS hop too.
func TestIPXEContinuesTheClientTrace(t *testing.T) {
	l := startLoop(t)
	traceID := trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36}
	spanID := trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7}
	opt43 := append([]byte{69, 26, 0}, traceID[:]...)
	opt43 = append(append(opt43, spanID[:]...), 1, 255)
	l.discover(t, dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, opt43)))
	spans := l.ended(t, 4)
	got := chain(t, spans, traceID)
	want := []link{
		{"hosts.lookup", trace.SpanKindInternal, "process tinkerbell.dhcp.backend", false},
		{"process tinkerbell.dhcp.backend", trace.SpanKindServer, "lookup tinkerbell.dhcp.backend", true},
		{"lookup tinkerbell.dhcp.backend", trace.SpanKindClient, "dhcp.lookup", false},
		{"dhcp.lookup", trace.SpanKindServer, "remote", true},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("spans (-want +got):\n%s", diff)
	}
	if p := spans[3].Parent(); p.SpanID() != spanID {
		t.Errorf("the DHCP span's parent is %v, want the client's span %v", p.SpanID(), spanID)
	}
}
