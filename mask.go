package backend

import (
	"math/bits"
	"net"
	"net/netip"
	"strconv"
)

// Mask is an IPv4 subnet mask (DHCP option 1), such as 255.255.255.0. Only
// contiguous masks exist: a Mask is a prefix length from 0 to 32. The zero
// value is unset (no option 1 is sent). Mask is comparable and marshals as a
// dotted quad.
type Mask struct {
	n uint8 // prefix length + 1; 0 = unset
}

// MaskFrom returns the mask with the given prefix length, which must be in
// [0, 32]; otherwise it returns the zero Mask.
func MaskFrom(prefixLen int) Mask {
	if prefixLen < 0 || prefixLen > 32 {
		return Mask{}
	}
	return Mask{n: uint8(prefixLen + 1)}
}

// ParseMask parses a dotted-quad mask such as "255.255.255.0". It rejects
// non-contiguous masks and anything that is not an IPv4 address.
func ParseMask(s string) (Mask, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return Mask{}, err
	}
	a = a.Unmap()
	if !a.Is4() {
		return Mask{}, ErrNotIPv4
	}
	return maskFrom4(a.As4())
}

// MaskFromIPMask converts a [net.IPMask] of 4 bytes, or of 16 bytes that
// hold an IPv4 mask: either in IPv4-mapped form (::ffff:255.255.255.0, what
// net.IP.To16 makes of a 4-byte mask) or as the last 32 bits of a 128-bit
// mask whose first 96 bits are ones.
func MaskFromIPMask(m net.IPMask) (Mask, error) {
	switch len(m) {
	case 4:
		return maskFrom4([4]byte(m))
	case 16:
		mapped, ones := true, true
		for i, b := range m[:12] {
			if b != 0xff {
				ones = false
			}
			if (i < 10 && b != 0) || (i >= 10 && b != 0xff) {
				mapped = false
			}
		}
		if mapped || ones {
			return maskFrom4([4]byte(m[12:]))
		}
	}
	return Mask{}, ErrNotIPv4
}

func maskFrom4(b [4]byte) (Mask, error) {
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	ones := bits.LeadingZeros32(^v)
	if ones < 32 && v<<ones != 0 {
		return Mask{}, ErrBadMask
	}
	return Mask{n: uint8(ones + 1)}, nil
}

// IsValid reports whether m is set.
func (m Mask) IsValid() bool { return m.n != 0 }

// Bits returns the prefix length, or -1 when m is unset.
func (m Mask) Bits() int { return int(m.n) - 1 }

// As4 returns the mask as four bytes; all zero when unset.
func (m Mask) As4() [4]byte {
	if m.n <= 1 {
		return [4]byte{}
	}
	v := ^uint32(0) << (32 - uint(m.n-1))
	return [4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
}

// IPMask returns m as a 4-byte [net.IPMask], or nil when unset.
func (m Mask) IPMask() net.IPMask {
	if !m.IsValid() {
		return nil
	}
	b := m.As4()
	return net.IPMask(b[:])
}

// String returns the dotted quad, or "" when unset.
func (m Mask) String() string {
	if !m.IsValid() {
		return ""
	}
	return string(m.AppendText(nil))
}

// AppendText implements [encoding.TextAppender].
func (m Mask) AppendText(b []byte) []byte {
	if !m.IsValid() {
		return b
	}
	a := m.As4()
	for i, x := range a {
		if i > 0 {
			b = append(b, '.')
		}
		b = strconv.AppendUint(b, uint64(x), 10)
	}
	return b
}

// MarshalText implements [encoding.TextMarshaler]: the dotted quad, or
// empty when unset.
func (m Mask) MarshalText() ([]byte, error) { return m.AppendText(nil), nil }

// UnmarshalText implements [encoding.TextUnmarshaler]. Empty text is the
// unset mask.
func (m *Mask) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*m = Mask{}
		return nil
	}
	v, err := ParseMask(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

func (m Mask) appendJSON(dst []byte) []byte {
	if !m.IsValid() {
		return append(dst, "null"...)
	}
	dst = append(dst, '"')
	dst = m.AppendText(dst)
	return append(dst, '"')
}
