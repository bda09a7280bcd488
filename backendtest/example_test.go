package backendtest_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/backendtest"
)

// Hosts is a backend under test: it knows machines by MAC address.
type Hosts map[string]netip.Addr

// Lookup implements [backend.Backend].
func (h Hosts) Lookup(_ context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
	ip, ok := h[req.MACAddress.String()]
	if !ok {
		return backend.DHCP{}, backend.Netboot{}, fmt.Errorf("%w: %s", backend.ErrNotFound, req.MACAddress)
	}
	return backend.DHCP{IPAddress: ip}, backend.Netboot{}, nil
}

// This example checks a backend against the reservations it was loaded
// with; in a test, call [backendtest.Run] instead.
func ExampleTestBackend() {
	mac, _ := net.ParseMAC("52:54:00:66:ea:9a")
	b := Hosts{mac.String(): netip.MustParseAddr("198.18.0.10")}

	err := backendtest.TestBackend(b, backendtest.Reservation{
		DHCP: backend.DHCP{MACAddress: mac, IPAddress: netip.MustParseAddr("198.18.0.10")},
	})
	fmt.Println(err)
	// Output:
	// <nil>
}

// Broken is a backend with two classic mistakes.
type Broken map[string]netip.Addr

// Lookup implements [backend.Backend].
func (h Broken) Lookup(_ context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
	ip, ok := h[req.MACAddress.String()]
	if !ok {
		return backend.DHCP{}, backend.Netboot{}, errors.New("not found") // not backend.ErrNotFound
	}
	return backend.DHCP{IPAddress: ip, LeaseTime: 60}, backend.Netboot{}, nil
}

// This example shows what a broken backend is told.
func ExampleTestBackend_broken() {
	mac, _ := net.ParseMAC("52:54:00:66:ea:9a")
	b := Broken{mac.String(): netip.MustParseAddr("198.18.0.10")}

	c := backendtest.Config{Unknown: []net.HardwareAddr{{0, 0, 0x5e, 0, 0x53, 1}}, Parallel: 1, Rounds: 1}
	err := c.TestBackend(b, backendtest.Reservation{
		DHCP: backend.DHCP{MACAddress: mac, IPAddress: netip.MustParseAddr("198.18.0.10"), LeaseTime: 3600},
	})
	fmt.Println(err)
	// Output:
	// answers: 52:54:00:66:ea:9a: wrong answer: LeaseTime = 60, want 3600
	// not-found: 00:00:5e:00:53:01: Lookup returned "not found", which does not match backend.ErrNotFound (the responder would answer 500, and the DHCP server log a failure)
	// concurrent: with 1 goroutines: 52:54:00:66:ea:9a: wrong answer: LeaseTime = 60, want 3600
	// ownership: 52:54:00:66:ea:9a: after the caller modified the slices and URL of an answer, the next answer differs: Lookup must return copies, not its own data: 52:54:00:66:ea:9a: wrong answer: LeaseTime = 60, want 3600
	// by-ip: 198.18.0.10: Lookup by IP returned "not found"; want an answer, or an error matching backend.ErrNotFound or backend.ErrInvalidMessage (the responder would answer 500)
	// by-ip: 192.0.2.1: Lookup by IP returned "not found"; want an answer, or an error matching backend.ErrNotFound or backend.ErrInvalidMessage (the responder would answer 500)
}

// TestHosts is how a backend author runs the checks.
func TestHosts(t *testing.T) {
	mac, _ := net.ParseMAC("52:54:00:66:ea:9a")
	b := Hosts{mac.String(): netip.MustParseAddr("198.18.0.10")}
	backendtest.Run(t, b, backendtest.Reservation{
		DHCP: backend.DHCP{MACAddress: mac, IPAddress: netip.MustParseAddr("198.18.0.10")},
	})
}
