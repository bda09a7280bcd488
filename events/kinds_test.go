package events_test

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/tinkerbell/backend/dhcpserver"
	"github.com/tinkerbell/backend/events"
)

// TestFromDecisionKinds: every decision kind of the DHCP server maps to
// the event kind of the same name, with the decision's fields.
func TestFromDecisionKinds(t *testing.T) {
	tests := []struct {
		kind dhcpserver.DecisionKind
		want string
	}{
		{dhcpserver.DecisionOffer, events.KindOffer},
		{dhcpserver.DecisionAck, events.KindAck},
		{dhcpserver.DecisionNak, events.KindNak},
		{dhcpserver.DecisionDecline, events.KindDecline},
		{dhcpserver.DecisionRelease, events.KindRelease},
		{dhcpserver.DecisionInform, events.KindInform},
		{dhcpserver.DecisionNotFound, events.KindNotFound},
		{dhcpserver.DecisionBackendError, events.KindBackendError},
		{dhcpserver.DecisionStaleAnswer, events.KindStaleAnswer},
	}
	for _, tt := range tests {
		t.Run(string(tt.kind), func(t *testing.T) {
			d := dhcpserver.Decision{
				Kind: tt.kind, MessageType: dhcpv4.MessageTypeRequest, MAC: mac,
				IP: netip.MustParseAddr("198.18.0.10"), XID: dhcpv4.TransactionID{0, 0, 0, 7},
				ServerID: netip.MustParseAddr("198.18.0.1"), Reason: "ack from a last-known-good answer 3s old",
			}
			want := events.Event{
				Kind: tt.want, MAC: mac, IP: d.IP, XID: 7, ServerID: d.ServerID,
				MessageType: "REQUEST", Reason: d.Reason,
			}
			if diff := cmp.Diff(want, events.FromDecision(d), cmpopts.EquateComparable(netip.Addr{})); diff != "" {
				t.Errorf("FromDecision (-want +got):\n%s", diff)
			}
		})
	}
}
