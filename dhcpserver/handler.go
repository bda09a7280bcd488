package dhcpserver

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"slices"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/tinkerbell/backend"
)

// Link says which link-layer (Ethernet) address a reply is sent to.
type Link uint8

// The link-layer destinations of [Destination].
const (
	// LinkSource: back to the Ethernet source of the request (a relay, a
	// router, or a client that has its address).
	LinkSource Link = iota
	// LinkBroadcast: the Ethernet broadcast address.
	LinkBroadcast
	// LinkClient: the client's hardware address (chaddr), without ARP:
	// the client has no IP address yet (RFC 2131 §4.1).
	LinkClient
)

// Destination is where a reply goes, as RFC 2131 §4.1 says: relay
// (giaddr:67), the client's current address (ciaddr:68), broadcast
// (255.255.255.255:68), or the offered address (yiaddr:68) at chaddr.
type Destination struct {
	Addr netip.AddrPort // IPv4 destination address and UDP port
	Link Link           // Ethernet destination
}

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

// sizeLimit is the largest DHCP payload the client accepts: option 57
// (the whole IP datagram, so 28 bytes of IP and UDP headers come off), at
// least 576 and at most an Ethernet frame.
func sizeLimit(req *dhcpv4.DHCPv4) int {
	limit := dhcpv4.MaxMessageSize
	if v := get(req, dhcpv4.OptionMaximumDHCPMessageSize); len(v) == 2 {
		limit = max(limit, min(int(binary.BigEndian.Uint16(v)), 1500))
	}
	return limit - 28
}

// requested reports whether the client listed code in option 55.
func requested(req *dhcpv4.DHCPv4, code uint8) bool {
	return bytes.IndexByte(get(req, dhcpv4.OptionParameterRequestList), code) >= 0
}

func (sc *scratch) prio(req *dhcpv4.DHCPv4, code uint8) int {
	p := importance(code)
	if requested(req, code) {
		p += prioRequested
	}
	return p
}

// result is what handling one request produced.
type result struct {
	payload []byte // the reply; nil = silence
	dst     Destination
	typ     dhcpv4.MessageType
	drop    DropReason
}

// handle answers one parsed request, writing the reply into sc.
func (s *Server) handle(ctx context.Context, sc *scratch, req *dhcpv4.DHCPv4) result {
	sc.reset()
	if req.OpCode != dhcpv4.OpcodeBootRequest {
		return result{drop: DropNotRequest}
	}
	if req.HWType != iana.HWTypeEthernet || len(req.ClientHWAddr) != 6 {
		return result{drop: DropHardware}
	}
	mt := get(req, dhcpv4.OptionDHCPMessageType)
	if len(mt) != 1 {
		return result{drop: DropMessageType}
	}
	typ := dhcpv4.MessageType(mt[0])
	switch typ {
	case dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeInform,
		dhcpv4.MessageTypeRelease, dhcpv4.MessageTypeDecline:
	default:
		return result{drop: DropMessageType}
	}
	s.stats.received[typ].Add(1)

	ciaddr := addr4(req.ClientIPAddr)
	var state requestState
	requestedIP := netip.Addr{}
	if v := get(req, dhcpv4.OptionRequestedIPAddress); len(v) == 4 {
		requestedIP = netip.AddrFrom4([4]byte(v))
	}
	if typ == dhcpv4.MessageTypeRelease || typ == dhcpv4.MessageTypeDecline {
		// RFC 2131 §4.3.3, §4.3.4 and table 5: option 54 names the server the
		// client releases or declines to. Another server's conflict is
		// not ours to report.
		if v := get(req, dhcpv4.OptionServerIdentifier); v != nil && (len(v) != 4 || netip.AddrFrom4([4]byte(v)) != s.cfg.ServerAddr) {
			return result{drop: DropOtherServer}
		}
	}
	switch typ {
	case dhcpv4.MessageTypeRelease:
		// Reservations outlive releases: nothing to do, nothing to say.
		s.cfg.logger.Debug("dhcp release", "mac", req.ClientHWAddr, "ciaddr", ciaddr)
		return result{drop: DropNoReply}
	case dhcpv4.MessageTypeDecline:
		s.cfg.logger.Warn("dhcp decline: the reserved address is in use by another host",
			"mac", req.ClientHWAddr, "address", requestedIP)
		return result{drop: DropNoReply}
	case dhcpv4.MessageTypeRequest:
		// RFC 2131 §4.3.2: tell the client's state from the request.
		switch v := get(req, dhcpv4.OptionServerIdentifier); {
		case v != nil:
			if len(v) != 4 || netip.AddrFrom4([4]byte(v)) != s.cfg.ServerAddr {
				return result{drop: DropOtherServer}
			}
			state = selecting
		case requestedIP.IsValid() && !nonzero(ciaddr):
			state = initReboot
		case nonzero(ciaddr):
			state = renewing
		default:
			return result{drop: DropNoReply}
		}
	}

	f := s.lookup(ctx, req.ClientHWAddr)
	if f.err != nil {
		if errors.Is(f.err, backend.ErrNotFound) {
			return result{drop: DropNotFound}
		}
		s.cfg.logger.Error("dhcp backend lookup failed", "mac", req.ClientHWAddr, "err", f.err)
		return result{drop: DropBackend}
	}
	d := &f.dhcp
	ip := d.IPAddress.Unmap()
	if !ip.Is4() && typ != dhcpv4.MessageTypeInform {
		s.cfg.logger.Error("dhcp reservation has no IPv4 address", "mac", req.ClientHWAddr)
		return result{drop: DropNoAddress}
	}

	reply := dhcpv4.MessageTypeAck
	switch typ {
	case dhcpv4.MessageTypeDiscover:
		reply = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest:
		switch state {
		case selecting, initReboot:
			if requestedIP.IsValid() && requestedIP != ip {
				reply = dhcpv4.MessageTypeNak
			}
		case renewing:
			if ciaddr != ip {
				reply = dhcpv4.MessageTypeNak
			}
		}
	}

	sc.add(53, prioMandatory, byte(reply))
	sid := s.cfg.ServerAddr.As4()
	sc.add(54, prioMandatory, sid[:]...)
	if cid := get(req, dhcpv4.OptionClientIdentifier); cid != nil {
		sc.add(61, prioMandatory, cid...) // RFC 6842
	}
	if rai := get(req, dhcpv4.OptionRelayAgentInformation); rai != nil {
		sc.add(82, prioMandatory, rai...) // RFC 3046
	}
	sc.flags = req.Flags
	dst := s.destination(req, reply, ip)

	if reply == dhcpv4.MessageTypeNak {
		if nonzero(addr4(req.GatewayIPAddr)) {
			sc.flags |= 0x8000 // RFC 2131 §4.3.2: the relay must broadcast a NAK
		}
		return s.finish(sc, req, reply, dst)
	}

	if typ == dhcpv4.MessageTypeInform {
		sc.ciaddr = ip4As4(req.ClientIPAddr)
	} else {
		sc.yiaddr = ip.As4()
		if typ == dhcpv4.MessageTypeRequest {
			sc.ciaddr = ip4As4(req.ClientIPAddr)
		}
		lease := d.LeaseTime
		if lease == 0 {
			lease = s.cfg.lease
		}
		sc.addUint32(51, prioMandatory, lease)
		sc.addUint32(58, sc.prio(req, 58), lease/2)
		sc.addUint32(59, sc.prio(req, 59), uint32(uint64(lease)*7/8))
	}
	if d.SubnetMask.IsValid() {
		m := d.SubnetMask.As4()
		sc.add(1, sc.prio(req, 1), m[:]...)
	}
	if d.DefaultGateway.IsValid() {
		sc.addAddrs(3, sc.prio(req, 3), d.DefaultGateway)
	}
	sc.addAddrs(6, sc.prio(req, 6), d.NameServers...)
	sc.addString(12, sc.prio(req, 12), d.Hostname)
	sc.addString(15, sc.prio(req, 15), d.DomainName)
	if d.BroadcastAddress.IsValid() {
		sc.addAddrs(28, sc.prio(req, 28), d.BroadcastAddress)
	}
	sc.addAddrs(42, sc.prio(req, 42), d.NTPServers...)
	sc.addSearch(sc.prio(req, 119), d.DomainSearch)
	if typ != dhcpv4.MessageTypeInform {
		s.netboot(sc, req, f)
	}
	return s.finish(sc, req, reply, dst)
}

type requestState uint8

const (
	selecting requestState = iota + 1
	initReboot
	renewing // or rebinding: the server cannot tell, and need not
)

func nonzero(a netip.Addr) bool { return a.IsValid() && !a.IsUnspecified() }

func ip4As4(ip []byte) [4]byte { return [4]byte(ip4(ip)) }

func (s *Server) finish(sc *scratch, req *dhcpv4.DHCPv4, reply dhcpv4.MessageType, dst Destination) result {
	p := sc.marshal(req, sizeLimit(req))
	if p == nil {
		s.cfg.logger.Error("dhcp reply does not fit the size limit", "mac", req.ClientHWAddr, "limit", sizeLimit(req))
		return result{drop: DropTooLarge}
	}
	return result{payload: p, dst: dst, typ: reply}
}

var broadcast = netip.AddrPortFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), 68)

// destination implements RFC 2131 §4.1.
func (s *Server) destination(req *dhcpv4.DHCPv4, reply dhcpv4.MessageType, yiaddr netip.Addr) Destination {
	if gi := addr4(req.GatewayIPAddr); gi.IsValid() && !gi.IsUnspecified() {
		return Destination{Addr: netip.AddrPortFrom(gi, 67), Link: LinkSource}
	}
	if reply == dhcpv4.MessageTypeNak {
		return Destination{Addr: broadcast, Link: LinkBroadcast}
	}
	if ci := addr4(req.ClientIPAddr); ci.IsValid() && !ci.IsUnspecified() {
		return Destination{Addr: netip.AddrPortFrom(ci, 68), Link: LinkSource}
	}
	if req.Flags&0x8000 != 0 || !yiaddr.Is4() || reply == dhcpv4.MessageTypeAck && req.MessageType() == dhcpv4.MessageTypeInform {
		return Destination{Addr: broadcast, Link: LinkBroadcast}
	}
	return Destination{Addr: netip.AddrPortFrom(yiaddr, 68), Link: LinkClient}
}
