package dhcpserver

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/insomniacslk/dhcp/dhcpv4"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/tinkerbell/backend"
)

// recorder collects decisions.
type recorder struct {
	mu sync.Mutex
	ds []Decision
}

func (r *recorder) on(d Decision) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ds = append(r.ds, d)
}

func (r *recorder) take() []Decision {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.ds
	r.ds = nil
	return out
}

func TestDecisions(t *testing.T) {
	xid := dhcpv4.TransactionID{1, 2, 3, 4}
	dec := func(kind DecisionKind, typ dhcpv4.MessageType, mac net.HardwareAddr, ip string, reason string) Decision {
		d := Decision{Kind: kind, MessageType: typ, MAC: mac, XID: xid, ServerID: serverIP, Reason: reason}
		if ip != "" {
			d.IP = netip.MustParseAddr(ip)
		}
		return d
	}
	D, R := dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest
	tests := []struct {
		name string
		reqs []*dhcpv4.DHCPv4
		want []Decision
	}{
		{"DORA", []*dhcpv4.DHCPv4{request(macKnown, D), request(macKnown, R, withIPOpt(54, serverIP), withIPOpt(50, clientIP))},
			[]Decision{dec(DecisionOffer, D, macKnown, "198.18.0.10", ""), dec(DecisionAck, R, macKnown, "198.18.0.10", "answer reused")}},
		{"NAK", []*dhcpv4.DHCPv4{request(macKnown, R, withIPOpt(50, otherIP))},
			[]Decision{dec(DecisionNak, R, macKnown, "198.18.0.99", "the reservation is 198.18.0.10")}},
		{"not found, then remembered", []*dhcpv4.DHCPv4{request(macNone, D), request(macNone, D)},
			[]Decision{dec(DecisionNotFound, D, macNone, "", "no reservation"), dec(DecisionNotFound, D, macNone, "", "no reservation (remembered)")}},
		{"backend error", []*dhcpv4.DHCPv4{request(macError, D)},
			[]Decision{dec(DecisionBackendError, D, macError, "", "database on fire")}},
		{"inform", []*dhcpv4.DHCPv4{request(macKnown, dhcpv4.MessageTypeInform, dhcpv4.WithClientIP(clientIP.AsSlice()))},
			[]Decision{dec(DecisionInform, dhcpv4.MessageTypeInform, macKnown, "198.18.0.10", "")}},
		{"release", []*dhcpv4.DHCPv4{request(macKnown, dhcpv4.MessageTypeRelease, dhcpv4.WithClientIP(clientIP.AsSlice()))},
			[]Decision{dec(DecisionRelease, dhcpv4.MessageTypeRelease, macKnown, "198.18.0.10", "")}},
		{"decline", []*dhcpv4.DHCPv4{request(macKnown, dhcpv4.MessageTypeDecline, withIPOpt(50, clientIP))},
			[]Decision{dec(DecisionDecline, dhcpv4.MessageTypeDecline, macKnown, "198.18.0.10", "address in use by another host")}},
		{"not a decision: another server's REQUEST", []*dhcpv4.DHCPv4{request(macKnown, R, withIPOpt(54, otherIP))}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rec recorder
			cfg := testConfig(newMemBackend())
			cfg.OnDecision = rec.on
			s := newTestServer(t, cfg)
			for _, r := range tt.reqs {
				s.Handle(t.Context(), r)
			}
			if diff := cmp.Diff(tt.want, rec.take(), cmpopts.EquateComparable(netip.Addr{}), cmpopts.IgnoreFields(Decision{}, "Trace")); diff != "" {
				t.Errorf("decisions (-want +got):\n%s", diff)
			}
		})
	}
}

// TestClientTraceparent: a request that carries a traceparent in option
// 43 sub-option 69 (as iPXE echoes the one the server gave it) has its
// lookup span continue that trace, and the Backend and the Decision see
// it.
func TestClientTraceparent(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	var seen string
	be := backend.BackendFunc(func(ctx context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
		seen = req.Traceparent
		return reservation(), backend.Netboot{}, nil
	})
	var rec recorder
	cfg := testConfig(be)
	cfg.TracerProvider = tp
	cfg.OnDecision = rec.on
	s := newTestServer(t, cfg)

	opt43 := append([]byte{subTraceparent, 26, 0}, traceID[:]...)
	opt43 = append(append(opt43, spanID[:]...), 1, 255)
	reply, _ := s.Handle(t.Context(), request(macKnown, dhcpv4.MessageTypeDiscover, withOpt(43, opt43...)))
	if reply == nil {
		t.Fatal("no reply")
	}
	ended := spans.Ended()
	if len(ended) != 1 {
		t.Fatalf("%d spans ended, want 1", len(ended))
	}
	type span struct {
		Name          string
		TraceID       trace.TraceID
		Parent        trace.SpanID
		ParentRemote  bool
		Kind          trace.SpanKind
		SeenByBackend bool
	}
	sp := ended[0]
	got := span{sp.Name(), sp.SpanContext().TraceID(), sp.Parent().SpanID(), sp.Parent().IsRemote(), sp.SpanKind(),
		seen == "00-"+traceID.String()+"-"+sp.SpanContext().SpanID().String()+"-01"}
	want := span{"dhcp.lookup", traceID, spanID, true, trace.SpanKindServer, true}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("lookup span (-want +got):\n%s", diff)
	}
	if ds := rec.take(); len(ds) != 1 || ds[0].Trace.TraceID() != traceID {
		t.Errorf("decision %+v, want one in trace %v", ds, traceID)
	}

	// Without option 43.69 the lookup starts a trace of its own.
	s.Handle(t.Context(), request(macNoBoot, dhcpv4.MessageTypeDiscover))
	if ended := spans.Ended(); len(ended) != 2 || ended[1].SpanContext().TraceID() == traceID || ended[1].Parent().IsValid() {
		t.Errorf("a request without a traceparent joined a trace: %+v", ended[len(ended)-1])
	}
}

// TestStatsGauges: InFlight and Waiting show lookups running and the
// requests waiting for them.
func TestStatsGauges(t *testing.T) {
	release := make(chan struct{})
	be := backend.BackendFunc(func(ctx context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
		<-release
		return reservation(), backend.Netboot{}, nil
	})
	s := newTestServer(t, testConfig(be))
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { s.Handle(t.Context(), request(macKnown, dhcpv4.MessageTypeDiscover)) })
	}
	waitFor(t, "three requests waiting on one lookup", func() bool {
		st := s.Stats()
		return st.InFlight == 1 && st.Waiting == 3
	})
	close(release)
	wg.Wait()
	if st := s.Stats(); st.InFlight != 0 || st.Waiting != 0 {
		t.Errorf("after the lookup: InFlight %d, Waiting %d; want 0, 0", st.InFlight, st.Waiting)
	}
	if diff := cmp.Diff(dropReasons[:], DropReasons()); diff != "" {
		t.Errorf("DropReasons() (-want +got):\n%s", diff)
	}
}
