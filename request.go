package backend

import (
	"bytes"
	"net"
	"net/netip"
	"strings"

	"github.com/tinkerbell/backend/internal/jsonx"
)

// DHCPRequest is what a DHCP server (or another Tinkerbell service) asks a
// [Backend]: the data of the request event on the wire. It carries exactly
// one of MACAddress and IPAddress: a lookup by MAC address ("what is the
// reservation of this client?", what a DHCP server asks) or by IP address
// ("which machine has this address?", what an iPXE script or metadata
// service asks about the source of an HTTP request).
//
// Its JSON form is
//
//	{"MACAddress": "52:54:00:66:ea:9a", "Traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
//
// or, for a lookup by IP address,
//
//	{"IPAddress": "198.18.0.10", "Traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
//
// Decoding also accepts the older key "MacAddress" and a MAC address in
// base64 (what encoding/json makes of a [net.HardwareAddr]). A request with
// neither address, with both, or with a malformed one is a [*FieldError]
// (see [DHCPRequest.Validate]).
//
// A backend that only knows MAC addresses needs no code for lookups by IP:
// req.MACAddress is nil in them, so a lookup keyed by req.MACAddress finds
// nothing and the backend answers [ErrNotFound]. The requester also checks
// every answer with [DHCPRequest.Match], so a backend that ignores the
// question cannot hand out another machine's data.
//
// Hardware addresses of 6 bytes (Ethernet, DHCP htype 1) are the case that
// matters; the 8- and 20-byte forms that [net.ParseMAC] knows are accepted
// too, so that the schema does not need to change for other link types.
type DHCPRequest struct {
	// MACAddress is the client hardware address (DHCP chaddr header) of a
	// lookup by MAC address; nil in a lookup by IP address.
	MACAddress net.HardwareAddr

	// IPAddress is the IPv4 address of a lookup by IP address: the
	// machine whose reservation (DHCP.IPAddress) is this address. The zero
	// Addr in a lookup by MAC address.
	IPAddress netip.Addr

	// Traceparent is the W3C trace context of the lookup
	// ("00-<trace id>-<span id>-<flags>"), or "" when there is none. It is
	// carried as text; an invalid value is ignored by trace propagation.
	Traceparent string
}

// ByIP reports whether r is a lookup by IP address.
func (r DHCPRequest) ByIP() bool { return r.IPAddress.IsValid() }

// Validate reports, as a [*FieldError], a request that a backend cannot
// answer: neither MACAddress nor IPAddress set ([ErrMissing]), both set
// ([ErrConflict]), a MAC address that is not 6, 8 or 20 bytes, or an
// IPAddress that is not IPv4.
func (r DHCPRequest) Validate() error {
	hasMAC, hasIP := len(r.MACAddress) != 0, r.IPAddress.IsValid()
	switch {
	case !hasMAC && !hasIP:
		return &FieldError{Field: "MACAddress", Err: ErrMissing}
	case hasMAC && hasIP:
		return &FieldError{Field: "IPAddress", Value: r.IPAddress.String(), Err: ErrConflict}
	case hasIP && !r.IPAddress.Is4():
		return &FieldError{Field: "IPAddress", Value: r.IPAddress.String(), Err: ErrNotIPv4}
	}
	if n := len(r.MACAddress); hasMAC && n != 6 && n != 8 && n != 20 {
		return &FieldError{Field: "MACAddress", Value: r.MACAddress.String(), Err: ErrBadMAC}
	}
	return nil
}

// Match reports whether h can be the answer to r, as a [*FieldError]
// (matching [ErrUnexpected]) naming the field that disagrees: in a lookup
// by MAC address, h.MACAddress must be unset or equal to r.MACAddress; in a
// lookup by IP address, h.IPAddress must equal r.IPAddress. A requester
// rejects an answer that does not match, so that no backend can answer one
// machine's question with another machine's data.
func (r DHCPRequest) Match(h *DHCP) error {
	if r.IPAddress.IsValid() {
		if h.IPAddress != r.IPAddress {
			return &FieldError{Field: "IPAddress", Value: h.IPAddress.String(), Err: ErrUnexpected}
		}
		return nil
	}
	if len(h.MACAddress) != 0 && !bytes.Equal(h.MACAddress, r.MACAddress) {
		return &FieldError{Field: "MACAddress", Value: h.MACAddress.String(), Err: ErrUnexpected}
	}
	return nil
}

// MarshalJSON implements [encoding/json.Marshaler]. A request without an
// address encodes as "MACAddress": null, which decoding rejects.
func (r DHCPRequest) MarshalJSON() ([]byte, error) {
	return r.AppendJSON(make([]byte, 0, 128)), nil
}

// AppendJSON appends the canonical JSON form of r to dst: "MACAddress"
// (left out in a lookup by IP address), "IPAddress" (only in a lookup by
// IP address), "Traceparent".
func (r DHCPRequest) AppendJSON(dst []byte) []byte {
	dst = append(dst, '{')
	if len(r.MACAddress) != 0 || !r.IPAddress.IsValid() {
		dst = append(dst, `"MACAddress":`...)
		dst = appendMAC(dst, r.MACAddress)
		dst = append(dst, ',')
	}
	if r.IPAddress.IsValid() {
		dst = append(dst, `"IPAddress":`...)
		dst = appendAddr(dst, r.IPAddress)
		dst = append(dst, ',')
	}
	dst = append(dst, `"Traceparent":`...)
	dst = jsonx.AppendString(dst, r.Traceparent)
	return append(dst, '}')
}

// UnmarshalJSON implements [encoding/json.Unmarshaler]. Errors match
// [ErrInvalidMessage]; the result is checked with [DHCPRequest.Validate].
func (r *DHCPRequest) UnmarshalJSON(b []byte) error {
	return r.decode(jsonx.NewDecoder(b))
}

func (r *DHCPRequest) decode(d *jsonx.Decoder) error {
	var out DHCPRequest
	err := d.Object(func(key string) error {
		switch key {
		case "MACAddress", "MacAddress", "macAddress", "macaddress", "mac_address":
			mac, err := decodeMAC(d, key)
			out.MACAddress = mac
			return err
		case "IPAddress", "IpAddress", "ipAddress", "ipaddress", "ip_address":
			a, err := decodeAddr(d, key)
			out.IPAddress = a
			return err
		case "Traceparent", "traceparent", "TraceParent":
			s, err := decodeString(d, key)
			out.Traceparent = s
			return err
		}
		return d.Skip()
	})
	if err == nil {
		err = d.End()
	}
	if fe, ok := err.(*FieldError); ok {
		// Field is the key as spelt in b, which the decoder does not copy.
		fe.Field = strings.Clone(fe.Field)
	}
	if err != nil {
		return wrapSyntax(err)
	}
	if err := out.Validate(); err != nil {
		return err
	}
	*r = out
	return nil
}
