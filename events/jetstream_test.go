package events_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/events"
	"github.com/tinkerbell/backend/internal/natstest"
	"github.com/tinkerbell/backend/internal/wire"
)

// auditStream creates the stream of the README's "JetStream audit"
// section on an embedded JetStream server and returns it.
func auditStream(t *testing.T) (*natstest.Server, jetstream.Stream) {
	t.Helper()
	opts := natstest.Options()
	opts.JetStream = true
	opts.StoreDir = t.TempDir()
	s := natstest.Run(t, opts)
	js, err := jetstream.New(natstest.Connect(t, s))
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.CreateStream(t.Context(), jetstream.StreamConfig{
		Name:     "TINKERBELL_DHCP_EVENTS",
		Subjects: []string{"tinkerbell.dhcp.events.>"},
		Storage:  jetstream.FileStorage,
		MaxAge:   90 * 24 * time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s, stream
}

// storedEvents waits until the stream holds n messages and returns their
// subjects and decoded events, in order.
func storedEvents(t *testing.T, stream jetstream.Stream, n int) ([]string, []wire.Event) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for {
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs >= uint64(n) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("stream holds %d events, want %d", info.State.Msgs, n)
		case <-time.After(10 * time.Millisecond): // polling with a deadline
		}
	}
	var subjects []string
	var evs []wire.Event
	for seq := uint64(1); seq <= uint64(n); seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := wire.Decode(m.Data, "")
		if err != nil {
			t.Fatalf("event %d: %v", seq, err)
		}
		subjects = append(subjects, m.Subject)
		evs = append(evs, ev)
	}
	return subjects, evs
}

// TestJetStreamAudit: a stream configured on the NATS side keeps the
// events of a DORA, in order.
func TestJetStreamAudit(t *testing.T) {
	s, stream := auditStream(t)
	p := newPublisher(t, events.Config{Conn: natstest.Connect(t, s)})
	server := netip.MustParseAddr("198.18.0.1")
	ip := netip.MustParseAddr("198.18.0.10")
	for _, e := range []events.Event{
		{Kind: events.KindOffer, MAC: mac, IP: ip, XID: 1, MessageType: "DISCOVER", ServerID: server},
		{Kind: events.KindAck, MAC: mac, IP: ip, XID: 1, MessageType: "REQUEST", ServerID: server},
	} {
		p.Publish(e)
	}
	if err := p.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	subjects, evs := storedEvents(t, stream, 2)
	want := []string{"tinkerbell.dhcp.events.offer", "tinkerbell.dhcp.events.ack"}
	for i := range want {
		if subjects[i] != want[i] || evs[i].Type != backend.EventTypePrefix+want[i][len("tinkerbell.dhcp.events."):] {
			t.Errorf("event %d: subject %q type %q, want %q", i+1, subjects[i], evs[i].Type, want[i])
		}
	}
}
