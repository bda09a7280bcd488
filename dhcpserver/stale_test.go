package dhcpserver

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/cache"
)

// TestStaleAnswerDecisions: a server with OnDecision over a cache.Backend
// whose wrapped backend fails emits, for every reply built from a
// last-known-good answer, the offer or ack decision and then a
// stale-answer decision with the same MAC, address and transaction id,
// including the requests that shared one stale lookup.
func TestStaleAnswerDecisions(t *testing.T) {
	mem := newMemBackend()
	var down atomic.Bool
	gate := make(chan struct{})
	inner := backend.BackendFunc(func(ctx context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
		if !down.Load() {
			return mem.Lookup(ctx, req)
		}
		select {
		case <-gate:
		case <-ctx.Done():
		}
		return backend.DHCP{}, backend.Netboot{}, fmt.Errorf("test outage: %w", backend.ErrUnavailable)
	})
	c, err := cache.New(cache.Config{Backend: inner})
	if err != nil {
		t.Fatal(err)
	}
	var rec recorder
	cfg := testConfig(c)
	cfg.OnDecision = rec.on
	cfg.AnswerReuse, cfg.MinLookupInterval = -1, -1 // every request asks the Backend
	s := newTestServer(t, cfg)

	// Warm the cache: a fresh offer, no stale-answer.
	if reply, _ := s.Handle(t.Context(), request(macKnown, dhcpv4.MessageTypeDiscover)); reply == nil {
		t.Fatal("no OFFER with the backend up")
	}
	if got := kinds(rec.take()); !cmp.Equal(got, []DecisionKind{DecisionOffer}) {
		t.Fatalf("decisions with the backend up: %v, want [offer]", got)
	}

	// The backend goes down; 4 DISCOVERs share one lookup.
	down.Store(true)
	const n = 4
	var wg sync.WaitGroup
	replies := make([]*dhcpv4.DHCPv4, n)
	for i := range n {
		wg.Go(func() {
			req := request(macKnown, dhcpv4.MessageTypeDiscover)
			req.TransactionID = dhcpv4.TransactionID{0, 0, 1, byte(i)}
			replies[i], _ = s.Handle(t.Context(), req)
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.Stats().Waiting < n && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(gate)
	wg.Wait()
	if w := s.Stats().Waiting; w != 0 {
		t.Fatalf("%d requests still waiting", w)
	}
	for i, r := range replies {
		if r == nil || r.MessageType() != dhcpv4.MessageTypeOffer {
			t.Fatalf("request %d got %v, want an OFFER from the last-known-good answer", i, r)
		}
	}
	ds := rec.take()
	byXID := map[dhcpv4.TransactionID][]DecisionKind{}
	for _, d := range ds {
		byXID[d.XID] = append(byXID[d.XID], d.Kind)
		if d.MAC.String() != macKnown.String() || d.IP != netip.MustParseAddr("198.18.0.10") {
			t.Errorf("decision %+v: want MAC %v and IP 198.18.0.10", d, macKnown)
		}
		if d.Kind == DecisionStaleAnswer && !strings.HasPrefix(d.Reason, "offer from a last-known-good answer ") {
			t.Errorf("stale-answer reason %q", d.Reason)
		}
	}
	want := map[dhcpv4.TransactionID][]DecisionKind{}
	for i := range n {
		want[dhcpv4.TransactionID{0, 0, 1, byte(i)}] = []DecisionKind{DecisionOffer, DecisionStaleAnswer}
	}
	if diff := cmp.Diff(want, byXID); diff != "" {
		t.Errorf("decisions per transaction during the outage (-want +got):\n%s", diff)
	}
	if st := c.Stats(); st.StaleServes == 0 || st.StaleServes > n {
		t.Errorf("cache stale serves %d, want 1..%d (shared lookups)", st.StaleServes, n)
	}

	// A REQUEST during the outage: ack, then stale-answer.
	req := request(macKnown, dhcpv4.MessageTypeRequest, withIPOpt(54, serverIP), withIPOpt(50, clientIP))
	if reply, _ := s.Handle(t.Context(), req); reply == nil || reply.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("REQUEST during the outage got %v, want an ACK", reply)
	}
	if got := kinds(rec.take()); !cmp.Equal(got, []DecisionKind{DecisionAck, DecisionStaleAnswer}) {
		t.Errorf("decisions for a REQUEST during the outage: %v, want [ack stale-answer]", got)
	}
}

func kinds(ds []Decision) []DecisionKind {
	var out []DecisionKind
	for _, d := range ds {
		out = append(out, d.Kind)
	}
	return out
}
