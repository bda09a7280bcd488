package events_test

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/dhcpserver"
	"github.com/tinkerbell/backend/events"
	"github.com/tinkerbell/backend/internal/dhcptest"
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
// events of a real DORA, and of an unknown client, in order.
func TestJetStreamAudit(t *testing.T) {
	s, stream := auditStream(t)
	p := newPublisher(t, events.Config{Conn: natstest.Connect(t, s)})
	addr := startDHCP(t, p.OnDecision)

	dora(t, addr, mac)
	unknown := net.HardwareAddr{0, 0, 0x5e, 0, 0x53, 1}
	if reply := exchange(t, addr, discovery(t, unknown), 300*time.Millisecond); reply != nil {
		t.Fatalf("an unknown client got %v", reply.MessageType())
	}
	if err := p.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	subjects, evs := storedEvents(t, stream, 3)
	type row struct{ Subject, Type, MAC, IP, MessageType, ServerID string }
	var got []row
	for i, ev := range evs {
		var d struct{ MACAddress, IPAddress, MessageType, ServerID string }
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			t.Fatal(err)
		}
		got = append(got, row{subjects[i], ev.Type, d.MACAddress, d.IPAddress, d.MessageType, d.ServerID})
	}
	want := []row{
		{"tinkerbell.dhcp.events.offer", backend.EventTypePrefix + "offer", "52:54:00:66:ea:9a", "198.18.0.10", "DISCOVER", "127.0.0.1"},
		{"tinkerbell.dhcp.events.ack", backend.EventTypePrefix + "ack", "52:54:00:66:ea:9a", "198.18.0.10", "REQUEST", "127.0.0.1"},
		{"tinkerbell.dhcp.events.not-found", backend.EventTypePrefix + "not-found", "00:00:5e:00:53:01", "", "DISCOVER", "127.0.0.1"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("stored events (-want +got):\n%s", diff)
	}
}

func hosts(_ context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
	if req.MACAddress.String() == mac.String() {
		return backend.DHCP{IPAddress: netip.MustParseAddr("198.18.0.10"), SubnetMask: backend.MaskFrom(24)}, backend.Netboot{}, nil
	}
	return backend.DHCP{}, backend.Netboot{}, backend.ErrNotFound
}

// startDHCP serves a DHCP server with the hosts backend and onDecision on
// a loopback UDP socket.
func startDHCP(t *testing.T, onDecision func(dhcpserver.Decision)) *net.UDPAddr {
	t.Helper()
	srv, err := dhcpserver.New(dhcpserver.Config{
		Backend: backend.BackendFunc(hosts), ServerAddr: netip.MustParseAddr("127.0.0.1"), OnDecision: onDecision,
	})
	if err != nil {
		t.Fatal(err)
	}
	return dhcptest.Serve(t, srv)
}

func discovery(t *testing.T, m net.HardwareAddr) *dhcpv4.DHCPv4 {
	t.Helper()
	d, err := dhcpv4.NewDiscovery(m)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// exchange sends req and returns the reply, or nil after wait.
func exchange(t *testing.T, addr *net.UDPAddr, req *dhcpv4.DHCPv4, wait time.Duration) *dhcpv4.DHCPv4 {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.WriteToUDP(req.ToBytes(), addr); err != nil {
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

// dora runs DISCOVER, OFFER, REQUEST, ACK for m.
func dora(t *testing.T, addr *net.UDPAddr, m net.HardwareAddr) {
	t.Helper()
	offer := exchange(t, addr, discovery(t, m), 5*time.Second)
	if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("no OFFER: %v", offer)
	}
	req, err := dhcpv4.NewRequestFromOffer(offer)
	if err != nil {
		t.Fatal(err)
	}
	ack := exchange(t, addr, req, 5*time.Second)
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("no ACK: %v", ack)
	}
}
