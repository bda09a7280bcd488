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

	"github.com/tinkerbell/backend"
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
	case 3, 121:
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
	case 7:
		return 5
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
	sname          string
	reused         bool // the answer came from an earlier lookup (Stats.Reused)
}

type opt struct {
	code     uint8
	field    uint8 // inOptions, inFile or inSname
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
	sc.sname = ""
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

// addRoutes appends option 121 in the RFC 3442 encoding: per route, the
// prefix length, the significant octets of the destination, the router.
func (sc *scratch) addRoutes(prio int, routes []backend.Route) {
	off := sc.begin()
	for _, r := range routes {
		dst, gw := r.Destination.Masked(), r.Router.Unmap()
		if !dst.Addr().Is4() || !gw.Is4() {
			continue
		}
		bits := dst.Bits()
		a, g := dst.Addr().As4(), gw.As4()
		sc.arena = append(sc.arena, byte(bits))
		sc.arena = append(sc.arena, a[:(bits+7)/8]...)
		sc.arena = append(sc.arena, g[:]...)
	}
	sc.commit(121, prio, off)
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
		// Identical bytes only: a pointer makes the client read the
		// earlier spelling, and names in search lists keep their case.
		if s.name == name {
			return s.off, true
		}
	}
	return 0, false
}

// The fields an option may go in: the options field, and with option
// overload (RFC 2132 §9.3) the file and sname header fields, in the order
// RFC 2131 §4.1 says clients read them.
const (
	inOptions uint8 = 0
	inFile    uint8 = 1 // the bit of option 52's value
	inSname   uint8 = 2
)

// Capacities for options in the file and sname fields, which each end in
// an End option.
const (
	fileOptCap  = 128 - 1
	snameOptCap = 64 - 1
	snameOffset = 44  // of the sname field in the DHCP payload
	fileOffset  = 108 // of the file field
)

// marshal writes the reply to sc.out after the header room, within limit
// bytes. It returns the DHCP payload, or nil when even the mandatory
// options do not fit.
//
// When the options do not fit the options field, the file and sname
// header fields carry options too if the reply does not use them (option
// overload, RFC 2132 §9.3, as dnsmasq does). Only when that is not enough
// are options left out: the most important are placed first and every
// option that still fits is kept, so leaving out one large option does
// not lose smaller ones after it.
func (sc *scratch) marshal(req *dhcpv4.DHCPv4, limit int) []byte {
	size := dhcpHeader + 1 // End
	for _, o := range sc.opts {
		size += optLen(o)
	}
	overload := uint8(0)
	if size > limit && !sc.pack(limit) {
		return nil
	}
	for _, o := range sc.opts {
		switch o.field {
		case inFile:
			overload |= 1
		case inSname:
			overload |= 2
		}
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
	n := len(b)
	b = append(b, zero[:64]...) // sname
	copy(b[n:n+63], sc.sname)
	n = len(b)
	b = append(b, zero[:]...) // file
	copy(b[n:n+127], sc.file)
	b = append(b, 99, 130, 83, 99)
	// 53 and 54 first, 82 last (RFC 3046 §2.1), the rest in code order.
	slices.SortStableFunc(sc.opts, func(a, b opt) int { return cmp.Compare(rank(a.code), rank(b.code)) })
	if overload != 0 {
		b = append(b, 52, 1, overload)
	}
	for _, o := range sc.opts {
		if o.field == inOptions {
			b = appendOpt(b, o.code, sc.arena[o.off:o.end])
		}
	}
	b = append(b, 255)
	for _, f := range [...]struct {
		field uint8
		off   int
	}{{inFile, fileOffset}, {inSname, snameOffset}} {
		if overload&f.field == 0 { // inFile = 1 and inSname = 2, as in option 52
			continue
		}
		w := b[f.off:f.off] // written in place, within the field
		for _, o := range sc.opts {
			if o.field == f.field {
				w = appendOpt(w, o.code, sc.arena[o.off:o.end])
			}
		}
		_ = append(w, 255)
	}
	for len(b) < 300 { // BOOTP minimum, which some relays insist on
		b = append(b, 0)
	}
	return b
}

// pack decides which options go in the reply and in which field, within
// limit bytes; see marshal. Options are taken most important first, each
// kept if the ones kept so far and it can still be placed; it reports
// false when a mandatory option cannot. It runs only for replies that do
// not fit the options field, so it may allocate.
func (sc *scratch) pack(limit int) bool {
	slices.SortStableFunc(sc.opts, func(a, b opt) int {
		return cmp.Compare(prioKey(b.prio), prioKey(a.prio))
	})
	kept := make([]opt, 0, len(sc.opts))
	for _, o := range sc.opts {
		if sc.place(append(kept, o), limit) {
			kept = append(kept, o)
		} else if o.prio < 0 {
			return false
		}
	}
	sc.place(kept, limit) // sets the fields of the final set
	sc.opts = append(sc.opts[:0], kept...)
	return true
}

// place assigns opts to the options field and, if needed and free, the
// file and sname fields (largest first, first fit), and reports whether
// they all fit.
func (sc *scratch) place(opts []opt, limit int) bool {
	room := [3]int{inOptions: limit - dhcpHeader - 1}
	total := 0
	for _, o := range opts {
		total += optLen(o)
	}
	if total <= room[inOptions] {
		for i := range opts {
			opts[i].field = inOptions
		}
		return true
	}
	room[inOptions] -= 3 // option 52
	if sc.file == "" {
		room[inFile] = fileOptCap
	}
	if sc.sname == "" {
		room[inSname] = snameOptCap
	}
	order := make([]int, len(opts))
	for i := range order {
		order[i] = i
	}
	// Options that must stay in the options field first, then the
	// largest first.
	slices.SortStableFunc(order, func(a, b int) int {
		fa, fb := fieldAllowed(opts[a]), fieldAllowed(opts[b])
		if fa != fb {
			if !fa {
				return -1
			}
			return 1
		}
		return cmp.Compare(optLen(opts[b]), optLen(opts[a]))
	})
	for _, i := range order {
		n := optLen(opts[i])
		placed := false
		for _, f := range [...]uint8{inOptions, inFile, inSname} {
			if f != inOptions && !fieldAllowed(opts[i]) {
				break
			}
			if n <= room[f] {
				room[f] -= n
				opts[i].field = f
				placed = true
				break
			}
		}
		if !placed {
			return false
		}
	}
	return true
}

// fieldAllowed reports whether o may go in the file or sname field: the
// options a client needs before it looks there (53, 54) and the relay
// agent option, which must come last in the options field, may not.
func fieldAllowed(o opt) bool {
	switch o.code {
	case 53, 54, 82:
		return false
	}
	return true
}

func prioKey(p int16) int {
	if p < 0 {
		return 1 << 20
	}
	return int(p)
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

// unoverload gives reply (parsed from payload by a parser that does not
// know option overload) the options that payload carries in its file and
// sname fields, as a client reads them: values of an option found in
// several places are concatenated (RFC 3396), the fields that carried
// options are cleared, and option 52 is removed.
func unoverload(reply *dhcpv4.DHCPv4, payload []byte) {
	v := reply.Options[52]
	if len(v) != 1 || len(payload) < dhcpHeader {
		return
	}
	for _, f := range [...]struct {
		field uint8
		off   int
		size  int
	}{{inFile, fileOffset, 128}, {inSname, snameOffset, 64}} {
		if v[0]&f.field == 0 {
			continue
		}
		b := payload[f.off : f.off+f.size]
		for len(b) > 0 && b[0] != 255 {
			if b[0] == 0 {
				b = b[1:]
				continue
			}
			if len(b) < 2 || len(b) < 2+int(b[1]) {
				break
			}
			code := b[0]
			reply.Options[code] = append(reply.Options[code], b[2:2+int(b[1])]...)
			b = b[2+int(b[1]):]
		}
		if f.field == inFile {
			reply.BootFileName = ""
		} else {
			reply.ServerHostName = ""
		}
	}
	delete(reply.Options, 52)
}
