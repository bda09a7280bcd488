package backend_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/tinkerbell/backend"
)

// A backend can be an ordinary function. ErrNotFound tells the DHCP server
// that this MAC address is not ours: it then stays silent.
func ExampleBackendFunc() {
	reservations := map[string]netip.Addr{"52:54:00:66:ea:9a": netip.MustParseAddr("198.18.0.10")}
	b := backend.BackendFunc(func(_ context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
		ip, ok := reservations[req.MACAddress.String()]
		if !ok {
			return backend.DHCP{}, backend.Netboot{}, fmt.Errorf("lookup %s: %w", req.MACAddress, backend.ErrNotFound)
		}
		return backend.DHCP{IPAddress: ip, SubnetMask: backend.MaskFrom(24)}, backend.Netboot{AllowNetboot: true}, nil
	})

	mac, _ := net.ParseMAC("52:54:00:66:ea:9a")
	d, n, err := b.Lookup(context.Background(), backend.DHCPRequest{MACAddress: mac})
	fmt.Println(d.IPAddress, d.SubnetMask, n.AllowNetboot, err)

	other, _ := net.ParseMAC("52:54:00:00:00:01")
	_, _, err = b.Lookup(context.Background(), backend.DHCPRequest{MACAddress: other})
	fmt.Println(errors.Is(err, backend.ErrNotFound))
	// Output:
	// 198.18.0.10 255.255.255.0 true <nil>
	// true
}

// The schema types give the wire form with encoding/json directly.
func ExampleMessage() {
	mac, _ := net.ParseMAC("52:54:00:66:ea:9a")
	out, _ := json.Marshal(backend.DHCPRequest{MACAddress: mac})
	fmt.Println(string(out))

	// A reply as another language might send it: nested objects, nulls.
	in := `{"DHCP": {"IPAddress": "198.18.0.10", "SubnetMask": "255.255.255.0", "NameServers": null},
	        "Netboot": {"AllowNetboot": true, "IPXEScriptURL": "http://198.18.0.1/auto.ipxe"}}`
	var m backend.Message
	if err := json.Unmarshal([]byte(in), &m); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(m.IPAddress, m.SubnetMask.Bits(), m.IPXEScriptURL, m.Error.Err())

	// Validation names the field.
	err := json.Unmarshal([]byte(`{"SubnetMask": "255.0.255.0"}`), &m)
	var fe *backend.FieldError
	fmt.Println(errors.As(err, &fe), fe.Field, errors.Is(err, backend.ErrInvalidMessage))
	// Output:
	// {"MACAddress":"52:54:00:66:ea:9a","Traceparent":""}
	// 198.18.0.10 24 http://198.18.0.1/auto.ipxe <nil>
	// true SubnetMask true
}

// Errors cross the wire as a code and a message, and match the same
// sentinels on the other side.
func ExampleStatusOf() {
	wire := backend.StatusOf(fmt.Errorf("no host 52:54:00:66:ea:9a: %w", backend.ErrNotFound))
	fmt.Println(wire.Code)

	err := wire.Err() // what the requester returns
	var re *backend.RemoteError
	fmt.Println(errors.Is(err, backend.ErrNotFound), errors.As(err, &re) && re.Code == backend.CodeNotFound)
	// Output:
	// 404
	// true true
}

func ExampleSubject() {
	fmt.Println(backend.Subject("", ""))
	fmt.Println(backend.Subject("site-a", ""))
	// Output:
	// tinkerbell.dhcp.backend
	// site-a.tinkerbell.dhcp.backend
}

// A backend that also answers lookups by IP address keeps two indexes.
// A backend that knows only MAC addresses needs nothing more than the
// first map: in a lookup by IP address req.MACAddress is nil, so it finds
// nothing and answers ErrNotFound, never another machine.
func ExampleDHCPRequest_byIP() {
	node1 := backend.DHCP{MACAddress: net.HardwareAddr{0x52, 0x54, 0, 0x66, 0xea, 0x9a}, IPAddress: netip.MustParseAddr("198.18.0.10")}
	byMAC := map[string]backend.DHCP{node1.MACAddress.String(): node1}
	byIP := map[netip.Addr]backend.DHCP{node1.IPAddress: node1}
	b := backend.BackendFunc(func(_ context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
		d, ok := byMAC[req.MACAddress.String()]
		if req.ByIP() {
			d, ok = byIP[req.IPAddress]
		}
		if !ok {
			return backend.DHCP{}, backend.Netboot{}, backend.ErrNotFound
		}
		return d, backend.Netboot{}, nil
	})

	req := backend.DHCPRequest{IPAddress: netip.MustParseAddr("198.18.0.10")}
	out, _ := json.Marshal(req)
	fmt.Println(string(out))
	d, _, err := b.Lookup(context.Background(), req)
	fmt.Println(d.MACAddress, err, req.Match(&d)) // Match: what a requester checks

	// An answer about another machine does not match the question.
	wrong := backend.DHCP{IPAddress: netip.MustParseAddr("198.18.0.11")}
	fmt.Println(errors.Is(req.Match(&wrong), backend.ErrUnexpected))
	// Output:
	// {"IPAddress":"198.18.0.10","Traceparent":""}
	// 52:54:00:66:ea:9a <nil> <nil>
	// true
}

// URLs are carried verbatim: iPXE expands the settings in them.
func ExampleURL() {
	m := backend.Message{Netboot: backend.Netboot{AllowNetboot: true, IPXEScriptURL: "http://198.18.0.1/${mac:hexhyp}.ipxe"}}
	fmt.Println(m.Validate())
	out, _ := json.Marshal(m.Netboot)
	fmt.Println(string(out))

	_, err := backend.ParseURL("ftp://198.18.0.1/auto.ipxe")
	fmt.Println(errors.Is(err, backend.ErrBadURL))
	// Output:
	// <nil>
	// {"AllowNetboot":true,"IPXEScriptURL":"http://198.18.0.1/${mac:hexhyp}.ipxe"}
	// true
}
