package nats_test

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tinkerbell/backend"
	natsbackend "github.com/tinkerbell/backend/nats"
)

// TestLookupByIP: a lookup by IP address is accepted only when the answer
// holds that address, as a lookup by MAC address is only for that MAC.
func TestLookupByIP(t *testing.T) {
	want := netip.MustParseAddr("198.18.0.10") // fullMessage's address
	other := fullMessage(testMAC)
	other.IPAddress = netip.MustParseAddr("198.18.0.66")
	tests := []struct {
		name   string
		req    backend.DHCPRequest
		answer backend.Message
		err    error // nil: the answer is accepted
		field  string
		sent   bool // a request reached the responder
	}{
		{name: "matching address", req: backend.DHCPRequest{IPAddress: want}, answer: fullMessage(testMAC), sent: true},
		{name: "another machine's answer", req: backend.DHCPRequest{IPAddress: want}, answer: other, err: backend.ErrInvalidMessage, field: "data.IPAddress", sent: true},
		{name: "not found", req: backend.DHCPRequest{IPAddress: want}, answer: backend.Message{Error: backend.Status{Code: backend.CodeNotFound}}, err: backend.ErrNotFound, sent: true},
		{name: "both addresses", req: backend.DHCPRequest{IPAddress: want, MACAddress: testMAC}, err: backend.ErrInvalidMessage, field: "IPAddress"},
		{name: "IPv6", req: backend.DHCPRequest{IPAddress: netip.MustParseAddr("2001:db8::1")}, err: backend.ErrInvalidMessage, field: "IPAddress"},
	}
	env := newEnv(t)
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			subject := "test.byip." + itoa(i)
			var requests atomicCounter
			respond(t, env.resp, subject, func(*nats.Msg) *nats.Msg {
				requests.add()
				return reply(responseEvent(tc.answer))
			})
			b := newBackend(t, env.req, natsbackend.Config{Subject: subject, Timeout: 100 * time.Millisecond})
			d, _, err := b.Lookup(t.Context(), tc.req)
			switch {
			case tc.err == nil && err != nil:
				t.Fatalf("Lookup: %v", err)
			case tc.err == nil && d.IPAddress != want:
				t.Errorf("Lookup: address %v, want %v", d.IPAddress, want)
			case tc.err != nil && !errors.Is(err, tc.err):
				t.Errorf("Lookup: error %v, want %v", err, tc.err)
			}
			var fe *backend.FieldError
			if tc.field != "" && (!errors.As(err, &fe) || fe.Field != tc.field) {
				t.Errorf("Lookup: error %v, want a *FieldError for %s", err, tc.field)
			}
			if err := env.resp.Flush(); err != nil {
				t.Fatal(err)
			}
			if got := requests.load() > 0; got != tc.sent {
				t.Errorf("request sent: %v, want %v", got, tc.sent)
			}
		})
	}
}
