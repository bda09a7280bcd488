package backend

import (
	"net"
	"strings"

	"github.com/tinkerbell/backend/internal/jsonx"
)

// DHCPRequest is what a DHCP server asks a [Backend]: the data of the
// request event on the wire.
//
// Its JSON form is
//
//	{"MACAddress": "52:54:00:66:ea:9a", "Traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
//
// Decoding also accepts the older key "MacAddress" and a MAC address in
// base64 (what encoding/json makes of a [net.HardwareAddr]). A missing or
// malformed MAC address is a [*FieldError].
//
// Hardware addresses of 6 bytes (Ethernet, DHCP htype 1) are the case that
// matters; the 8- and 20-byte forms that [net.ParseMAC] knows are accepted
// too, so that the schema does not need to change for other link types.
type DHCPRequest struct {
	// MACAddress is the client hardware address (DHCP chaddr header).
	MACAddress net.HardwareAddr

	// Traceparent is the W3C trace context of the lookup
	// ("00-<trace id>-<span id>-<flags>"), or "" when there is none. It is
	// carried as text; an invalid value is ignored by trace propagation.
	Traceparent string
}

// MarshalJSON implements [encoding/json.Marshaler]. A request without a
// MAC address encodes as "MACAddress": null, which decoding rejects.
func (r DHCPRequest) MarshalJSON() ([]byte, error) {
	return r.AppendJSON(make([]byte, 0, 128)), nil
}

// AppendJSON appends the canonical JSON form of r to dst.
func (r DHCPRequest) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"MACAddress":`...)
	dst = appendMAC(dst, r.MACAddress)
	dst = append(dst, `,"Traceparent":`...)
	dst = jsonx.AppendString(dst, r.Traceparent)
	return append(dst, '}')
}

// UnmarshalJSON implements [encoding/json.Unmarshaler]. Errors match
// [ErrInvalidMessage].
func (r *DHCPRequest) UnmarshalJSON(b []byte) error {
	return r.decode(jsonx.NewDecoder(b))
}

func (r *DHCPRequest) decode(d *jsonx.Decoder) error {
	var out DHCPRequest
	seenMAC := false
	err := d.Object(func(key string) error {
		switch key {
		case "MACAddress", "MacAddress", "macAddress", "macaddress", "mac_address":
			seenMAC = true
			mac, err := decodeMAC(d, key)
			out.MACAddress = mac
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
	if !seenMAC || out.MACAddress == nil {
		return &FieldError{Field: "MACAddress", Err: ErrMissing}
	}
	*r = out
	return nil
}
