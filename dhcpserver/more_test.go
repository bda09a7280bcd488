package dhcpserver

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/tinkerbell/backend"
)

// TestTraceparent: with a TracerProvider, each lookup runs in a span whose
// context reaches the Backend as DHCPRequest.Traceparent.
func TestTraceparent(t *testing.T) {
	var got []string
	var mu sync.Mutex
	be := backend.BackendFunc(func(ctx context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
		mu.Lock()
		got = append(got, req.Traceparent)
		mu.Unlock()
		return reservation(), backend.Netboot{}, nil
	})
	cfg := testConfig(be)
	cfg.TracerProvider = noop.NewTracerProvider()   // keeps the parent's span context
	cfg.AnswerReuse, cfg.MinLookupInterval = -1, -1 // two lookups
	s := newTestServer(t, cfg)
	parent := trace.ContextWithSpanContext(t.Context(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: traceID, SpanID: spanID, TraceFlags: trace.FlagsSampled}))
	s.Handle(parent, request(macKnown, dhcpv4.MessageTypeDiscover))
	s.Handle(t.Context(), request(macKnown, dhcpv4.MessageTypeDiscover))
	want := []string{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", ""}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Traceparent seen by the Backend (-want +got):\n%s", diff)
	}
}

// TestQueueFull: with every worker busy and the queue full, packets are
// dropped and counted rather than piling up. (Clients never answered go
// to the unknown queue: one worker and one slot with MaxConcurrent 1.)
func TestQueueFull(t *testing.T) {
	release := make(chan struct{})
	be := backend.BackendFunc(func(ctx context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return reservation(), backend.Netboot{}, nil
	})
	cfg := testConfig(be)
	cfg.MaxConcurrent = 1
	s := newTestServer(t, cfg)
	c := newClient(t, serveLoopback(t, s))
	defer close(release)
	c.send(request(macKnown, dhcpv4.MessageTypeDiscover).ToBytes())
	waitFor(t, "the only worker to block in a lookup", func() bool { return s.Stats().Lookups == 1 })
	for range 5 { // one fits in the queue, the rest do not
		c.send(request(macNoBoot, dhcpv4.MessageTypeDiscover).ToBytes())
	}
	waitFor(t, "queue-full drops", func() bool { return s.Stats().Dropped[DropUnknownQueueFull] == 4 })
}

func frameFor(payload []byte, mut func(f []byte)) []byte {
	f := make([]byte, headroom+len(payload))
	copy(f[headroom:], payload)
	copy(f[6:12], macKnown)
	binary.BigEndian.PutUint16(f[12:14], 0x0800)
	buildIPUDP(f[14:], [4]byte{198, 18, 0, 10}, netip.MustParseAddrPort("198.18.0.1:67"), len(payload))
	binary.BigEndian.PutUint16(f[14+20:], 68) // source port of a client
	if mut != nil {
		mut(f)
	}
	return f
}

// TestParseFrame: the lower-layer checks of raw mode.
func TestParseFrame(t *testing.T) {
	payload := request(macKnown, dhcpv4.MessageTypeDiscover).ToBytes()
	type out struct {
		Off, N    int
		Src       string
		SrcMAC    string
		Malformed bool
	}
	good := out{Off: headroom, N: len(payload), Src: "198.18.0.10:68", SrcMAC: macKnown.String()}
	bad := out{Malformed: true}
	tests := []struct {
		name  string
		frame []byte
		want  out
	}{
		{"valid", frameFor(payload, nil), good},
		{"ethernet padding after the datagram", append(frameFor(payload, nil), 0, 0, 0, 0), good},
		{"truncated", frameFor(payload, nil)[:headroom+10], bad},
		{"too short for headers", frameFor(payload, nil)[:30], bad},
		{"bad IP checksum", frameFor(payload, func(f []byte) { f[14+10] ^= 0xff }), bad},
		{"not IPv4", frameFor(payload, func(f []byte) { f[14] = 0x65 }), bad},
		{"UDP length beyond the datagram", frameFor(payload, func(f []byte) { binary.BigEndian.PutUint16(f[14+24:], 0xffff) }), bad},
		{"UDP length below its header", frameFor(payload, func(f []byte) { binary.BigEndian.PutUint16(f[14+24:], 4) }), bad},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			off, n, p := parseFrame(tt.frame)
			got := out{Malformed: p.malformed}
			if !p.malformed {
				got = out{Off: off, N: n, Src: p.src.String(), SrcMAC: net.HardwareAddr(p.srcMAC[:]).String()}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("parseFrame (-want +got):\n%s", diff)
			}
		})
	}
}

// TestBuildIPUDP checks the headers against the checksums a receiver
// computes.
func TestBuildIPUDP(t *testing.T) {
	for _, n := range []int{0, 1, 300, 1471} {
		b := make([]byte, 28+n)
		for i := range n {
			b[28+i] = byte(i * 7)
		}
		buildIPUDP(b, [4]byte{198, 18, 0, 1}, netip.MustParseAddrPort("198.18.0.10:68"), n)
		if checksum(b[:20], 0) != 0xffff {
			t.Errorf("n=%d: IP header checksum does not verify", n)
		}
		pseudo := uint32(17) + uint32(8+n) + 198<<8 + 18 + 0 + 1 + 198<<8 + 18 + 0 + 10
		if checksum(b[20:], pseudo) != 0xffff {
			t.Errorf("n=%d: UDP checksum does not verify", n)
		}
		if got := binary.BigEndian.Uint16(b[2:4]); int(got) != 28+n {
			t.Errorf("n=%d: IP total length %d", n, got)
		}
	}
}
