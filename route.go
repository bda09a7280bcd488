package backend

import (
	"net/netip"
)

// Route is a classless static route (DHCP option 121, RFC 3442): packets
// for Destination go through Router.
//
// Its JSON form is {"Destination": "10.0.0.0/8", "Router": "198.18.0.1"}.
// Decoding also accepts what encoding/json makes of the route type of
// github.com/insomniacslk/dhcp (the one the Tinkerbell DHCP server uses):
// {"Dest": {"IP": "10.0.0.0", "Mask": "<base64>"}, "Router": "198.18.0.1"}.
type Route struct {
	// Destination is an IPv4 network with its host bits zero, such as
	// 10.0.0.0/8; 0.0.0.0/0 is the default route.
	Destination netip.Prefix

	// Router is the IPv4 address of the gateway; 0.0.0.0 means the
	// destination is on the link.
	Router netip.Addr
}

// validate reports, as a reason for a [*FieldError], why r cannot be sent
// in option 121.
func (r Route) validate() error {
	if !r.Destination.IsValid() || !r.Destination.Addr().Is4() || !r.Router.Is4() {
		return ErrNotIPv4
	}
	if r.Destination.Masked() != r.Destination {
		return ErrBadPrefix
	}
	return nil
}

// String returns "Destination via Router".
func (r Route) String() string { return r.Destination.String() + " via " + r.Router.String() }
