package dhcpserver

import (
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// TestOverNATS runs the whole chain: DHCP client → dhcpserver (UDP mode on
// loopback) → nats requester → embedded NATS server → responder → the
// in-memory Backend.
func TestOverNATS(t *testing.T) {
	requester := overNATS(t, newMemBackend())
	s := newTestServer(t, testConfig(requester))
	c := newClient(t, serveLoopback(t, s))

	offer := c.exchange(request(macKnown, dhcpv4.MessageTypeDiscover, pxe("PXEClient", 7), withStrOpt(77, "Tinkerbell")))
	got := summarize(offer, Destination{})
	want := netbootOffer("http://198.18.0.1/auto.ipxe", 175, "b00101")
	want.Flags, want.Dest = 0, Destination{}
	if diff := cmpDiff(want, got); diff != "" {
		t.Errorf("OFFER over NATS (-want +got):\n%s", diff)
	}
	ack := c.exchange(request(macKnown, dhcpv4.MessageTypeRequest, withIPOpt(54, serverIP), withIPOpt(50, clientIP)))
	if ack.MessageType() != dhcpv4.MessageTypeAck || !ack.YourIPAddr.Equal(clientIP.AsSlice()) {
		t.Errorf("ACK over NATS: %v", ack.Summary())
	}

	// An unknown MAC address: the responder says 404, the server stays
	// silent.
	c.send(request(macNone, dhcpv4.MessageTypeDiscover).ToBytes())
	waitFor(t, "not-found drop", func() bool { return s.Stats().Dropped[DropNotFound] == 1 })
	if st := s.Stats(); st.NotFound != 1 || st.BackendErrors != 0 {
		t.Errorf("Stats: NotFound %d, BackendErrors %d; want 1, 0", st.NotFound, st.BackendErrors)
	}
}
