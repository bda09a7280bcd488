package backend

import (
	"encoding/base64"
	"errors"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/tinkerbell/backend/internal/excerpt"
	"github.com/tinkerbell/backend/internal/jsonx"
)

// This file holds the field encoders and decoders shared by the schema
// types. Decoders report problems as *FieldError naming the field.

// fieldDecoder is a schema type that decodes its fields one key at a time.
type fieldDecoder[T any] interface {
	*T
	decodeField(d *jsonx.Decoder, canonicalKey string) error
	Validate() error
}

// unmarshalObject decodes the JSON object b into a fresh T, field by field
// (keys matched against keys, ignoring case), validates it and only then
// stores it in dst, so that dst is unchanged on error.
func unmarshalObject[T any, P fieldDecoder[T]](b []byte, keys []string, dst P) error {
	var out T
	d := jsonx.NewDecoderString(string(b))
	err := d.Object(func(key string) error { return P(&out).decodeField(d, canonical(key, keys)) })
	if err == nil {
		err = d.End()
	}
	if err != nil {
		return wrapSyntax(err)
	}
	if err := P(&out).Validate(); err != nil {
		return err
	}
	*dst = out
	return nil
}

func wrapSyntax(err error) error {
	var se *jsonx.SyntaxError
	if errors.As(err, &se) {
		return &SyntaxError{Offset: se.Offset, Msg: se.Msg}
	}
	return err
}

// canonical returns the entry of keys that equals key, ignoring case as
// encoding/json does, or key itself when none does.
func canonical(key string, keys []string) string {
	if exactKey(key) {
		return key // the common case, without a search
	}
	for _, k := range keys {
		if strings.EqualFold(k, key) {
			return k
		}
	}
	return key
}

// exactKey reports whether key is spelt exactly as one of the schema's
// keys.
func exactKey(key string) bool {
	switch key {
	case "MACAddress", "IPAddress", "SubnetMask", "DefaultGateway", "NameServers", "Hostname",
		"DomainName", "BroadcastAddress", "NTPServers", "LeaseTime", "DomainSearch",
		"VLANID", "TFTPServerName", "BootFileName", "Arch", "ClasslessStaticRoutes", "Disabled",
		"AllowNetboot", "IPXEScriptURL", "IPXEScript", "IPXEBinary", "Console", "Facility", "OSIE", "Isoboot",
		"DHCP", "Netboot", "Error", "Code", "Message",
		"BaseURL", "Kernel", "Initrd", "KernelParams", "SourceISO", "Destination", "Router":
		return true
	}
	return false
}

// isDHCPKey reports whether the canonical key k names a DHCP field.
func isDHCPKey(k string) bool {
	switch k {
	case "MACAddress", "IPAddress", "SubnetMask", "DefaultGateway", "NameServers", "Hostname",
		"DomainName", "BroadcastAddress", "NTPServers", "LeaseTime", "DomainSearch",
		"VLANID", "TFTPServerName", "BootFileName", "Arch", "ClasslessStaticRoutes", "Disabled":
		return true
	}
	return false
}

func wrongType(d *jsonx.Decoder, field string) error {
	if err := d.Skip(); err != nil {
		return err
	}
	return &FieldError{Field: field, Err: ErrWrongType}
}

// decodeString decodes a string; null means "".
func decodeString(d *jsonx.Decoder, field string) (string, error) {
	switch d.Peek() {
	case jsonx.Null:
		d.TryNull()
		return "", nil
	case jsonx.String:
		return d.String()
	}
	return "", wrongType(d, field)
}

func decodeStrings(d *jsonx.Decoder, field string) ([]string, error) {
	switch d.Peek() {
	case jsonx.Null:
		d.TryNull()
		return nil, nil
	case jsonx.Array:
	default:
		return nil, wrongType(d, field)
	}
	var out []string
	err := d.Array(func() error {
		s, err := decodeString(d, field)
		if err == nil && s != "" {
			out = append(out, s)
		}
		return err
	})
	return out, err
}

func decodeBool(d *jsonx.Decoder, field string) (bool, error) {
	switch d.Peek() {
	case jsonx.Null:
		d.TryNull()
		return false, nil
	case jsonx.Bool:
		return d.Bool()
	}
	return false, wrongType(d, field)
}

func decodeUint(d *jsonx.Decoder, field string, bits int) (uint64, error) {
	switch d.Peek() {
	case jsonx.Null:
		d.TryNull()
		return 0, nil
	case jsonx.Number:
		nb, err := d.NumberBytes()
		if err != nil {
			return 0, err
		}
		n, err := strconv.ParseUint(string(nb), 10, bits)
		if err != nil {
			return 0, &FieldError{Field: field, Value: excerpt.Short(string(nb)), Err: ErrOutOfRange}
		}
		return n, nil
	}
	return 0, wrongType(d, field)
}

// decodeMAC decodes a hardware address written as text
// ("52:54:00:66:ea:9a", or the other forms net.ParseMAC knows) or as
// base64 of its bytes (what encoding/json makes of a net.HardwareAddr).
// null and "" mean unset.
func decodeMAC(d *jsonx.Decoder, field string) (net.HardwareAddr, error) {
	s, err := decodeString(d, field)
	if err != nil || s == "" {
		return nil, err
	}
	if mac, err := net.ParseMAC(s); err == nil {
		return mac, nil
	}
	if n := base64.StdEncoding.DecodedLen(len(s)); n <= 21 {
		var buf [21]byte
		if k, err := base64.StdEncoding.Decode(buf[:], []byte(s)); err == nil && (k == 6 || k == 8 || k == 20) {
			return net.HardwareAddr(append([]byte(nil), buf[:k]...)), nil
		}
	}
	return nil, &FieldError{Field: field, Value: excerpt.Short(s), Err: ErrBadMAC}
}

func appendMAC(dst []byte, mac net.HardwareAddr) []byte {
	if len(mac) == 0 {
		return append(dst, "null"...)
	}
	const hexDigit = "0123456789abcdef"
	dst = append(dst, '"')
	for i, b := range mac {
		if i > 0 {
			dst = append(dst, ':')
		}
		dst = append(dst, hexDigit[b>>4], hexDigit[b&0xf])
	}
	return append(dst, '"')
}

// parseAddr parses an IPv4 address; IPv4-mapped IPv6 addresses are unmapped.
func parseAddr(s, field string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, &FieldError{Field: field, Value: excerpt.Short(s), Err: ErrNotIPv4}
	}
	a = a.Unmap()
	if !a.Is4() {
		return netip.Addr{}, &FieldError{Field: field, Value: excerpt.Short(s), Err: ErrNotIPv4}
	}
	return a, nil
}

// decodeAddr decodes an IPv4 address; null and "" mean unset.
func decodeAddr(d *jsonx.Decoder, field string) (netip.Addr, error) {
	s, err := decodeString(d, field)
	if err != nil || s == "" {
		return netip.Addr{}, err
	}
	return parseAddr(s, field)
}

// decodeAddrs decodes a list of IPv4 addresses; null and [] mean unset,
// and null or "" elements are dropped.
func decodeAddrs(d *jsonx.Decoder, field string) ([]netip.Addr, error) {
	switch d.Peek() {
	case jsonx.Null:
		d.TryNull()
		return nil, nil
	case jsonx.Array:
	default:
		return nil, wrongType(d, field)
	}
	var out []netip.Addr
	err := d.Array(func() error {
		a, err := decodeAddr(d, field)
		if err == nil && a.IsValid() {
			if out == nil {
				out = make([]netip.Addr, 0, 4)
			}
			out = append(out, a)
		}
		return err
	})
	return out, err
}

func appendAddr(dst []byte, a netip.Addr) []byte {
	dst = append(dst, '"')
	if a.IsValid() {
		dst = a.AppendTo(dst)
	}
	return append(dst, '"')
}

func appendAddrs(dst []byte, as []netip.Addr) []byte {
	if as == nil {
		return append(dst, "null"...)
	}
	dst = append(dst, '[')
	for i, a := range as {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendAddr(dst, a)
	}
	return append(dst, ']')
}

// decodeMask decodes a dotted-quad mask or the base64 of a net.IPMask;
// null and "" mean unset.
func decodeMask(d *jsonx.Decoder, field string) (Mask, error) {
	s, err := decodeString(d, field)
	if err != nil || s == "" {
		return Mask{}, err
	}
	if strings.IndexByte(s, '.') >= 0 || strings.IndexByte(s, ':') >= 0 {
		m, err := ParseMask(s)
		if err != nil {
			if !errors.Is(err, ErrBadMask) {
				err = ErrNotIPv4
			}
			return Mask{}, &FieldError{Field: field, Value: excerpt.Short(s), Err: err}
		}
		return m, nil
	}
	var buf [18]byte
	if len(s) <= 24 {
		if n, err := base64.StdEncoding.Decode(buf[:], []byte(s)); err == nil {
			m, err := MaskFromIPMask(net.IPMask(buf[:n]))
			if err != nil {
				return Mask{}, &FieldError{Field: field, Value: excerpt.Short(s), Err: err}
			}
			return m, nil
		}
	}
	return Mask{}, &FieldError{Field: field, Value: excerpt.Short(s), Err: ErrNotIPv4}
}

// decodeURL decodes an absolute http, https or tftp URL, keeping its text;
// null and "" mean unset. A URL written as an object (what encoding/json
// makes of a url.URL) is accepted too.
func decodeURL(d *jsonx.Decoder, field string) (URL, error) {
	if d.Peek() == jsonx.Object {
		return decodeURLObject(d, field)
	}
	s, err := decodeString(d, field)
	if err != nil || s == "" {
		return "", err
	}
	if !validURL(s) {
		return "", &FieldError{Field: field, Value: excerpt.Short(s), Err: ErrBadURL}
	}
	return URL(s), nil
}

// decodeURLObject decodes the encoding/json form of a url.URL into the
// text url.URL.String gives, which is what its sender meant.
func decodeURLObject(d *jsonx.Decoder, field string) (URL, error) {
	var u url.URL
	err := d.Object(func(key string) error {
		var err error
		switch key {
		case "Scheme":
			u.Scheme, err = decodeString(d, field)
		case "Opaque":
			u.Opaque, err = decodeString(d, field)
		case "Host":
			u.Host, err = decodeString(d, field)
		case "Path":
			u.Path, err = decodeString(d, field)
		case "RawPath":
			u.RawPath, err = decodeString(d, field)
		case "RawQuery":
			u.RawQuery, err = decodeString(d, field)
		case "Fragment":
			u.Fragment, err = decodeString(d, field)
		default:
			err = d.Skip()
		}
		return err
	})
	if err != nil {
		return "", err
	}
	s := u.String()
	if !validURL(s) {
		return "", &FieldError{Field: field, Value: excerpt.Short(s), Err: ErrBadURL}
	}
	return URL(s), nil
}

// decodeVLAN decodes a VLAN ID written as a string or as a number; null and
// "" mean unset. The range is checked by DHCP.Validate.
func decodeVLAN(d *jsonx.Decoder, field string) (string, error) {
	if d.Peek() == jsonx.Number {
		nb, err := d.NumberBytes()
		if err != nil {
			return "", err
		}
		s := string(nb)
		if !validVLAN(s) {
			return "", &FieldError{Field: field, Value: excerpt.Short(s), Err: ErrOutOfRange}
		}
		return s, nil
	}
	return decodeString(d, field)
}

// decodeRoutes decodes a list of routes; null and [] mean none.
func decodeRoutes(d *jsonx.Decoder, field string) ([]Route, error) {
	switch d.Peek() {
	case jsonx.Null:
		d.TryNull()
		return nil, nil
	case jsonx.Array:
	default:
		return nil, wrongType(d, field)
	}
	var out []Route
	err := d.Array(func() error {
		if d.Peek() != jsonx.Object {
			return wrongType(d, field)
		}
		var r Route
		err := d.Object(func(key string) error {
			var err error
			switch canonical(key, routeKeys[:]) {
			case "Destination", "Dest":
				r.Destination, err = decodePrefix(d, field)
			case "Router":
				r.Router, err = decodeAddr(d, field)
			default:
				err = d.Skip()
			}
			return err
		})
		if err == nil {
			if rerr := r.validate(); rerr != nil {
				return &FieldError{Field: field, Value: r.String(), Err: rerr}
			}
			out = append(out, r)
		}
		return err
	})
	return out, err
}

var routeKeys = [...]string{"Destination", "Dest", "Router"}

// decodePrefix decodes an IPv4 prefix written as "10.0.0.0/8" or as the
// encoding/json form of a net.IPNet: {"IP": "10.0.0.0", "Mask": "<base64>"}.
func decodePrefix(d *jsonx.Decoder, field string) (netip.Prefix, error) {
	if d.Peek() == jsonx.Object {
		var ip netip.Addr
		var mask Mask
		err := d.Object(func(key string) error {
			var err error
			switch {
			case strings.EqualFold(key, "IP"):
				ip, err = decodeAddr(d, field)
			case strings.EqualFold(key, "Mask"):
				mask, err = decodeMask(d, field)
			default:
				err = d.Skip()
			}
			return err
		})
		if err != nil {
			return netip.Prefix{}, err
		}
		if !ip.IsValid() || !mask.IsValid() {
			return netip.Prefix{}, &FieldError{Field: field, Err: ErrMissing}
		}
		return netip.PrefixFrom(ip, mask.Bits()), nil
	}
	s, err := decodeString(d, field)
	if err != nil {
		return netip.Prefix{}, err
	}
	p, perr := netip.ParsePrefix(s)
	if perr != nil {
		return netip.Prefix{}, &FieldError{Field: field, Value: excerpt.Short(s), Err: ErrNotIPv4}
	}
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p, nil
}

func appendRoutes(dst []byte, rs []Route) []byte {
	dst = append(dst, '[')
	for i, r := range rs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"Destination":"`...)
		if r.Destination.IsValid() {
			dst = r.Destination.AppendTo(dst)
		}
		dst = append(dst, `","Router":`...)
		dst = appendAddr(dst, r.Router)
		dst = append(dst, '}')
	}
	return append(dst, ']')
}

// validDomain reports whether s is a domain name that fits the RFC 1035
// encoding of DHCP option 119: labels of 1 to 63 bytes, 253 bytes in all,
// an optional trailing dot.
func validDomain(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if c <= ' ' || c >= 0x7f {
				return false
			}
		}
	}
	return true
}

func appendUint(dst []byte, n uint64) []byte { return strconv.AppendUint(dst, n, 10) }

func appendInt(dst []byte, n int64) []byte { return strconv.AppendInt(dst, n, 10) }
