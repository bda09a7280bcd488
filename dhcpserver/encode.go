package dhcpserver

// The byte encoder of replies: option values collected in a reusable
// arena, then written in wire order after the fixed header, dropping the
// least important options when the reply must shrink. What goes into a
// reply is decided in handler.go and netboot.go; how it is written is
// here.

import (
	"cmp"
	"encoding/binary"
	"net/netip"
	"slices"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Options the server sends, and their importance when a reply must shrink
// to fit the size limit: lower goes first. Negative = never dropped.
const (
	prioMandatory = -1
	prioRequested = 100 // added when the client asked for the option (55)
)

func importance(code uint8) int {
	switch code {
	case 1:
		return 60
	case 3:
		return 55
	case 6:
		return 50
	case 43, 60:
		return 45
	case 58, 59:
		return 40
	case 15:
		return 35
	case 12:
		return 30
	case 28:
		return 25
	case 175:
		return 20
	case 42:
		return 15
	case 119:
		return 10
	}
	return 0
}

// scratch is the reusable state of one worker: reply options, their bytes
// and the wire buffer. Nothing in it outlives the handling of one packet.
type scratch struct {
	opts  []opt
	arena []byte
	out   []byte // headroom for Ethernet/IPv4/UDP headers, then the DHCP payload
	sfx   []suffix
	// header fields of the reply
	yiaddr, siaddr [4]byte
	ciaddr         [4]byte
	flags          uint16
	file           string
	reused         bool // the answer came from an earlier lookup (Stats.Reused)
}

type opt struct {
	code     uint8
	prio     int16
	off, end int32
}

type suffix struct {
	off  int
	name string
}

const (
	headroom   = 14 + 20 + 8 // Ethernet, IPv4 and UDP headers
	maxPayload = 1500 - 28   // Ethernet MTU minus IPv4 and UDP headers
	dhcpHeader = 236 + 4     // fixed header and magic cookie
)

func newScratch() *scratch {
	return &scratch{
		opts:  make([]opt, 0, 24),
		arena: make([]byte, 0, 2048),
		out:   make([]byte, headroom+maxPayload),
		sfx:   make([]suffix, 0, 16),
	}
}

func (sc *scratch) reset() {
	sc.opts = sc.opts[:0]
	sc.arena = sc.arena[:0]
	sc.sfx = sc.sfx[:0]
	sc.yiaddr, sc.siaddr, sc.ciaddr = [4]byte{}, [4]byte{}, [4]byte{}
	sc.flags = 0
	sc.file = ""
	sc.reused = false
}

// add appends an option whose value is val.
func (sc *scratch) add(code uint8, prio int, val ...byte) {
	off := len(sc.arena)
	sc.arena = append(sc.arena, val...)
	sc.opts = append(sc.opts, opt{code: code, prio: int16(prio), off: int32(off), end: int32(len(sc.arena))})
}

// begin and commit bracket an option whose value is appended to sc.arena
// in between.
func (sc *scratch) begin() int { return len(sc.arena) }

func (sc *scratch) commit(code uint8, prio int, off int) {
	if len(sc.arena) == off {
		return
	}
	sc.opts = append(sc.opts, opt{code: code, prio: int16(prio), off: int32(off), end: int32(len(sc.arena))})
}

func (sc *scratch) addAddrs(code uint8, prio int, addrs ...netip.Addr) {
	off := sc.begin()
	for _, a := range addrs {
		if a = a.Unmap(); a.Is4() {
			b := a.As4()
			sc.arena = append(sc.arena, b[:]...)
		}
	}
	sc.commit(code, prio, off)
}

func (sc *scratch) addUint32(code uint8, prio int, v uint32) {
	off := sc.begin()
	sc.arena = binary.BigEndian.AppendUint32(sc.arena, v)
	sc.commit(code, prio, off)
}

func (sc *scratch) addString(code uint8, prio int, s string) {
	off := sc.begin()
	sc.arena = append(sc.arena, s...)
	sc.commit(code, prio, off)
}

// addSearch appends option 119 in the RFC 1035 compressed encoding that
// RFC 3397 asks for; pointers are relative to the start of the option data.
func (sc *scratch) addSearch(prio int, domains []string) {
	off := sc.begin()
	sc.sfx = sc.sfx[:0]
	for _, d := range domains {
		name := strings.TrimSuffix(d, ".")
		if !dnsName(name) {
			continue // not encodable as the name it claims to be
		}
		first := len(sc.sfx)
		for {
			if p, ok := sc.findSuffix(name); ok {
				sc.arena = append(sc.arena, 0xc0|byte(p>>8), byte(p))
				// Never point at a sequence that ends in a pointer: nested
				// pointers are valid RFC 1035, but common decoders (the
				// insomniacslk rfc1035label package, used by u-root's
				// client) reject them.
				sc.sfx = sc.sfx[:first]
				break
			}
			if p := len(sc.arena) - off; p < 0x4000 {
				sc.sfx = append(sc.sfx, suffix{off: p, name: name})
			}
			label, rest, _ := strings.Cut(name, ".")
			sc.arena = append(sc.arena, byte(len(label)))
			sc.arena = append(sc.arena, label...)
			if rest == "" {
				sc.arena = append(sc.arena, 0)
				break
			}
			name = rest
		}
	}
	sc.commit(119, prio, off)
}

// dnsName reports whether name (without its trailing dot) can be encoded
// as an RFC 1035 name: at most 253 bytes, labels of 1 to 63 bytes.
func dnsName(name string) bool {
	if name == "" || len(name) > 253 {
		return false
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
	}
	return true
}

func (sc *scratch) findSuffix(name string) (int, bool) {
	for _, s := range sc.sfx {
		if strings.EqualFold(s.name, name) {
			return s.off, true
		}
	}
	return 0, false
}

// marshal writes the reply to sc.out after the header room, dropping the
// least important options until the packet fits in limit bytes. It
// returns the DHCP payload, or nil when even the mandatory options do not
// fit.
func (sc *scratch) marshal(req *dhcpv4.DHCPv4, limit int) []byte {
	size := dhcpHeader + 1 // End
	for _, o := range sc.opts {
		size += optLen(o)
	}
	for size > limit {
		i := -1
		for j, o := range sc.opts {
			if o.prio >= 0 && (i < 0 || o.prio < sc.opts[i].prio) {
				i = j
			}
		}
		if i < 0 {
			return nil
		}
		size -= optLen(sc.opts[i])
		sc.opts = append(sc.opts[:i], sc.opts[i+1:]...)
	}

	b := sc.out[headroom:headroom]
	b = append(b, 2, byte(req.HWType), byte(len(req.ClientHWAddr)), 0)
	b = append(b, req.TransactionID[:]...)
	b = append(b, 0, 0) // secs
	b = binary.BigEndian.AppendUint16(b, sc.flags)
	b = append(b, sc.ciaddr[:]...)
	b = append(b, sc.yiaddr[:]...)
	b = append(b, sc.siaddr[:]...)
	b = append(b, ip4(req.GatewayIPAddr)...)
	var chaddr [16]byte
	copy(chaddr[:], req.ClientHWAddr)
	b = append(b, chaddr[:]...)
	var zero [128]byte
	b = append(b, zero[:64]...) // sname
	n := len(b)
	b = append(b, zero[:]...) // file
	copy(b[n:n+127], sc.file)
	b = append(b, 99, 130, 83, 99)
	// 53 and 54 first, 82 last (RFC 3046 §2.1), the rest in code order.
	slices.SortStableFunc(sc.opts, func(a, b opt) int { return cmp.Compare(rank(a.code), rank(b.code)) })
	for _, o := range sc.opts {
		b = appendOpt(b, o.code, sc.arena[o.off:o.end])
	}
	b = append(b, 255)
	for len(b) < 300 { // BOOTP minimum, which some relays insist on
		b = append(b, 0)
	}
	return b
}

func rank(code uint8) int {
	switch code {
	case 53:
		return 0
	case 54:
		return 1
	case 82:
		return 1000
	}
	return int(code) + 2
}

func optLen(o opt) int {
	n := int(o.end - o.off)
	return n + 2*max(1, (n+254)/255)
}

// appendOpt appends one option, split into several instances when longer
// than 255 bytes (RFC 3396).
func appendOpt(b []byte, code uint8, v []byte) []byte {
	for {
		n := min(len(v), 255)
		b = append(b, code, byte(n))
		b = append(b, v[:n]...)
		v = v[n:]
		if len(v) == 0 {
			return b
		}
	}
}

func ip4(ip []byte) []byte {
	switch len(ip) {
	case 4:
		return ip
	case 16:
		return ip[12:]
	}
	return []byte{0, 0, 0, 0}
}

func addr4(ip []byte) netip.Addr {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	return a.Unmap()
}
