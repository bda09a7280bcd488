package events_test

import (
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/events"
	"github.com/tinkerbell/backend/internal/natstest"
	"github.com/tinkerbell/backend/internal/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var mac = net.HardwareAddr{0x52, 0x54, 0x00, 0x66, 0xea, 0x9a}

func newPublisher(t *testing.T, cfg events.Config) *events.Publisher {
	t.Helper()
	p, err := events.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func TestPublish(t *testing.T) {
	s := natstest.Run(t, nil)
	nc := natstest.Connect(t, s)
	sub, err := nc.SubscribeSync("site-a.tinkerbell.dhcp.events.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil { // the publisher uses another connection
		t.Fatal(err)
	}
	p := newPublisher(t, events.Config{Conn: natstest.Connect(t, s), SubjectPrefix: "site-a"})
	at := time.Date(2026, 12, 1, 15, 0, 0, 0, time.UTC)
	if !p.Publish(events.Event{
		Kind: events.KindAck, MAC: mac, IP: netip.MustParseAddr("198.18.0.10"), XID: 0x3903f326, MessageType: "REQUEST",
		ServerID: netip.MustParseAddr("198.18.0.1"), Traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		Reason: "", Time: at,
	}) {
		t.Fatal("Publish dropped the event")
	}
	p.Publish(events.Event{Kind: events.KindNotFound, MAC: mac, XID: 7, Reason: "no reservation"})
	if err := p.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}

	msg, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Subject != "site-a.tinkerbell.dhcp.events.ack" || msg.Header.Get("Content-Type") != backend.ContentType {
		t.Errorf("subject %q, header %v", msg.Subject, msg.Header)
	}
	ev, err := wire.Decode(msg.Data, backend.EventTypePrefix+"ack")
	if err != nil {
		t.Fatal(err)
	}
	if ev.Source != events.DefaultSource || !ev.Time.Equal(at) || ev.Traceparent != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" {
		t.Errorf("attributes %+v", ev.Attrs)
	}
	var data map[string]any
	if err := json.Unmarshal(ev.Data, &data); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"MACAddress": "52:54:00:66:ea:9a", "IPAddress": "198.18.0.10", "TransactionID": "0x3903f326", "MessageType": "REQUEST",
		"ServerID": "198.18.0.1", "Reason": "", "Traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	}
	if diff := cmp.Diff(want, data); diff != "" {
		t.Errorf("data (-want +got):\n%s", diff)
	}

	msg, err = sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ev, err = wire.Decode(msg.Data, backend.EventTypePrefix+"not-found")
	if err != nil || msg.Subject != "site-a.tinkerbell.dhcp.events.not-found" {
		t.Fatalf("%s: %v", msg.Subject, err)
	}
	if err := json.Unmarshal(ev.Data, &data); err != nil || data["IPAddress"] != nil || data["Reason"] != "no reservation" || data["TransactionID"] != "0x00000007" {
		t.Errorf("data %v, %v", data, err)
	}
	if st := p.Stats(); st.Published != 2 || st.Dropped != 0 || st.Failed != 0 {
		t.Errorf("stats %+v", st)
	}
	if err := p.Shutdown(t.Context()); !errors.Is(err, events.ErrClosed) {
		t.Errorf("second Shutdown = %v, want ErrClosed", err)
	}
	if p.Publish(events.Event{Kind: events.KindAck}) {
		t.Error("Publish after Shutdown queued an event")
	}
}

// TestBoundedBuffer: a burst far larger than the buffer never blocks the
// caller; what does not fit is dropped and counted, nothing is lost
// silently.
func TestBoundedBuffer(t *testing.T) {
	s := natstest.Run(t, nil)
	p := newPublisher(t, events.Config{Conn: natstest.Connect(t, s), BufferSize: 4})
	const n = 20000
	queued := 0
	start := time.Now()
	for i := range n {
		if p.Publish(events.Event{Kind: events.KindOffer, MAC: mac, XID: uint32(i)}) {
			queued++
		}
	}
	elapsed := time.Since(start)
	if err := p.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	st := p.Stats()
	if st.Dropped == 0 || st.Published+st.Dropped != n || st.Published != uint64(queued) {
		t.Errorf("stats %+v with %d queued of %d", st, queued, n)
	}
	// Generous: a blocking Publish would take the publishing time of every
	// event; this is only a sanity bound.
	if elapsed > 5*time.Second {
		t.Errorf("%d Publish calls took %v", n, elapsed)
	}
}

// TestNeverBlocksOnAStalledConnection: the NATS connection goes through a
// proxy that stops forwarding; Publish still returns at once and counts
// drops.
func TestNeverBlocksOnAStalledConnection(t *testing.T) {
	s := natstest.Run(t, nil)
	proxy := newStallProxy(t, s.Addr().String())
	nc, err := nats.Connect("nats://"+proxy.addr(), nats.ReconnectBufSize(-1), nats.MaxReconnects(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	p := newPublisher(t, events.Config{Conn: nc, BufferSize: 16})
	proxy.stall()
	big := make([]byte, 4096)
	for i := range big {
		big[i] = 'x'
	}
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		done := make(chan bool, 1)
		go func() {
			done <- p.Publish(events.Event{Kind: events.KindOffer, MAC: mac, XID: uint32(i), Reason: string(big)})
		}()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			t.Fatalf("Publish blocked on a stalled connection after %d events", i)
		}
		// Once the socket buffers are full, the publishing goroutine is
		// stuck and the buffer fills: drops are counted.
		if p.Stats().Dropped > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no drops after 10s: %+v", p.Stats())
		}
	}
	proxy.release()
	nc.Close() // unblocks the publishing goroutine
}
