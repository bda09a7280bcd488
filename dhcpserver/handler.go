package dhcpserver

// The RFC 2131 logic: which requests get which reply, with which header
// fields and options, sent where. The bytes are written by encode.go.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"time"

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
	f       *flight // the answer the decision was made on, if any
}

func silent(r DropReason) result { return result{drop: r} }

// handle answers one parsed request, writing the reply into sc.
func (s *Server) handle(ctx context.Context, sc *scratch, req *dhcpv4.DHCPv4) result {
	sc.reset()
	typ, drop := classify(req)
	if drop != "" {
		return silent(drop)
	}
	s.stats.received[typ].Add(1)
	r := s.dispatch(ctx, sc, req, typ)
	if r.payload != nil {
		s.clients.replied([6]byte(req.ClientHWAddr), time.Now())
	}
	if s.cfg.OnDecision != nil {
		s.decide(sc, req, typ, r)
	}
	return r
}

// dispatch hands a request to the handler of its message type.
func (s *Server) dispatch(ctx context.Context, sc *scratch, req *dhcpv4.DHCPv4, typ dhcpv4.MessageType) result {
	if s.cfg.Proxy {
		return s.handleProxy(ctx, sc, req, typ)
	}
	switch typ {
	case dhcpv4.MessageTypeDiscover:
		return s.handleDiscover(ctx, sc, req)
	case dhcpv4.MessageTypeRequest:
		return s.handleRequest(ctx, sc, req)
	case dhcpv4.MessageTypeInform:
		return s.handleInform(ctx, sc, req)
	case dhcpv4.MessageTypeRelease:
		return s.handleRelease(req)
	default: // dhcpv4.MessageTypeDecline, as classify allows no other
		return s.handleDecline(req)
	}
}

// classify checks the fixed header and returns the message type of a
// request the server handles, or why it does not.
func classify(req *dhcpv4.DHCPv4) (dhcpv4.MessageType, DropReason) {
	if req.OpCode != dhcpv4.OpcodeBootRequest {
		return 0, DropNotRequest
	}
	if req.HWType != iana.HWTypeEthernet || len(req.ClientHWAddr) != 6 {
		return 0, DropHardware
	}
	mt := get(req, dhcpv4.OptionDHCPMessageType)
	if len(mt) != 1 {
		return 0, DropMessageType
	}
	switch typ := dhcpv4.MessageType(mt[0]); typ {
	case dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeInform,
		dhcpv4.MessageTypeRelease, dhcpv4.MessageTypeDecline:
		return typ, ""
	}
	return 0, DropMessageType
}

// handleDiscover answers DISCOVER with an OFFER of the reservation.
func (s *Server) handleDiscover(ctx context.Context, sc *scratch, req *dhcpv4.DHCPv4) result {
	f, drop := s.reservation(ctx, sc, req, true, true)
	if drop != "" {
		return result{drop: drop, f: f}
	}
	return s.lease(sc, req, dhcpv4.MessageTypeOffer, f)
}

type requestState uint8

const (
	selecting requestState = iota + 1
	initReboot
	renewing // or rebinding: the server cannot tell, and need not
)

// requestStateOf tells the client's state from a REQUEST (RFC 2131
// §4.3.2), or why the server stays silent.
func (s *Server) requestStateOf(req *dhcpv4.DHCPv4) (requestState, DropReason) {
	switch v := get(req, dhcpv4.OptionServerIdentifier); {
	case v != nil:
		if !s.ours(v) {
			return 0, DropOtherServer
		}
		return selecting, ""
	case requestedIP(req).IsValid() && !nonzero(addr4(req.ClientIPAddr)):
		return initReboot, ""
	case nonzero(addr4(req.ClientIPAddr)):
		return renewing, ""
	}
	return 0, DropNoReply
}

// handleRequest answers REQUEST with an ACK of the reservation, or a NAK
// when the client asks for (or has) another address.
func (s *Server) handleRequest(ctx context.Context, sc *scratch, req *dhcpv4.DHCPv4) result {
	state, drop := s.requestStateOf(req)
	if drop != "" {
		return silent(drop)
	}
	f, drop := s.reservation(ctx, sc, req, true, state == selecting)
	if drop != "" {
		return result{drop: drop, f: f}
	}
	ip := f.dhcp.IPAddress.Unmap()
	wrong := false
	switch state {
	case selecting, initReboot:
		want := requestedIP(req)
		wrong = want.IsValid() && want != ip
	case renewing:
		wrong = addr4(req.ClientIPAddr) != ip
	}
	if wrong {
		r := s.nak(sc, req)
		r.f = f
		return r
	}
	return s.lease(sc, req, dhcpv4.MessageTypeAck, f)
}

// handleInform answers INFORM with an ACK that carries the configuration
// but no address and no lease (RFC 2131 §4.3.5).
func (s *Server) handleInform(ctx context.Context, sc *scratch, req *dhcpv4.DHCPv4) result {
	f, drop := s.reservation(ctx, sc, req, false, false)
	if drop != "" {
		return result{drop: drop, f: f}
	}
	s.header(sc, req, dhcpv4.MessageTypeAck)
	sc.ciaddr = ip4As4(req.ClientIPAddr)
	s.configuration(sc, req, &f.dhcp)
	r := s.finish(sc, req, dhcpv4.MessageTypeAck, s.destination(req, dhcpv4.MessageTypeAck, netip.Addr{}))
	r.f = f
	return r
}

// handleRelease logs a RELEASE: reservations outlive releases, so there is
// nothing to do and nothing to say.
func (s *Server) handleRelease(req *dhcpv4.DHCPv4) result {
	if !s.forUs(req) {
		return silent(DropOtherServer)
	}
	s.cfg.logger.Debug("dhcp release", "mac", macText(req.ClientHWAddr), "ciaddr", addr4(req.ClientIPAddr))
	return silent(DropNoReply)
}

// handleDecline logs a DECLINE: the client found its reserved address in
// use, which an operator must resolve.
func (s *Server) handleDecline(req *dhcpv4.DHCPv4) result {
	if !s.forUs(req) {
		return silent(DropOtherServer)
	}
	s.cfg.logger.Warn("dhcp decline: the reserved address is in use by another host",
		"mac", macText(req.ClientHWAddr), "ip", requestedIP(req))
	return silent(DropNoReply)
}

// forUs reports whether a RELEASE or DECLINE is addressed to this server:
// RFC 2131 §4.3.3, §4.3.4 and table 5 say option 54 names the server the
// client releases or declines to; another server's conflict is not ours
// to report. Without option 54 it is taken as ours.
func (s *Server) forUs(req *dhcpv4.DHCPv4) bool {
	v := get(req, dhcpv4.OptionServerIdentifier)
	return v == nil || s.ours(v)
}

// ours reports whether an option 54 value is this server's identifier.
func (s *Server) ours(sid []byte) bool {
	return len(sid) == 4 && netip.AddrFrom4([4]byte(sid)) == s.cfg.ServerAddr
}

// reservation looks up the client's reservation, and reports why the
// server stays silent when there is none it can use (needIP: the reply
// gives the client an address). A transaction request (DISCOVER, REQUEST
// in SELECTING) may reuse the answer of the lookup its DISCOVER caused;
// see Config.AnswerReuse and the other admission knobs.
func (s *Server) reservation(ctx context.Context, sc *scratch, req *dhcpv4.DHCPv4, needIP, transaction bool) (*flight, DropReason) {
	mac := [6]byte(req.ClientHWAddr)
	now := time.Now()
	f, known := s.clients.cached(mac, req.TransactionID, now, transaction, &s.cfg.Config)
	switch {
	case f != nil:
		s.stats.reused.Add(1)
		sc.reused = true
	case !known && s.notFound != nil && !s.notFound.available(now):
		return nil, DropUnknownLimited
	case !s.clients.admit(mac, now, s.cfg.MinLookupInterval, s.cfg.MACLookupBurst):
		// Over the per-MAC limit: the last answer, if recent enough,
		// rather than silence.
		if f = s.clients.recent(mac, now, s.cfg.AnswerReuse); f == nil {
			return nil, DropMACLimited
		}
		s.stats.reused.Add(1)
		sc.reused = true
	default:
		f = s.lookup(clientTrace(ctx, req), req.ClientHWAddr, req.TransactionID)
	}
	if f.err != nil {
		if errors.Is(f.err, backend.ErrNotFound) {
			return f, DropNotFound
		}
		if errors.Is(f.err, errGaveUp) {
			return f, DropCanceled
		}
		s.cfg.logger.Error("dhcp backend lookup failed", "mac", macText(req.ClientHWAddr), "error", f.err)
		return f, DropBackend
	}
	if f.dhcp.Disabled {
		return f, DropDisabled
	}
	if needIP && !f.dhcp.IPAddress.Unmap().Is4() {
		s.cfg.logger.Error("dhcp reservation has no IPv4 address", "mac", macText(req.ClientHWAddr))
		return f, DropNoAddress
	}
	return f, ""
}

// header starts a reply of type typ: options 53 and 54, the client's
// option 61 (RFC 6842) and 82 (RFC 3046) echoed, its flags.
func (s *Server) header(sc *scratch, req *dhcpv4.DHCPv4, typ dhcpv4.MessageType) {
	sc.add(53, prioMandatory, byte(typ))
	sid := s.cfg.ServerAddr.As4()
	sc.add(54, prioMandatory, sid[:]...)
	if cid := get(req, dhcpv4.OptionClientIdentifier); cid != nil {
		sc.add(61, prioMandatory, cid...)
	}
	if rai := get(req, dhcpv4.OptionRelayAgentInformation); rai != nil {
		sc.add(82, prioMandatory, rai...)
	}
	sc.flags = req.Flags
}

// nak builds a NAK, broadcast (or via the relay, which must broadcast it:
// RFC 2131 §4.3.2).
func (s *Server) nak(sc *scratch, req *dhcpv4.DHCPv4) result {
	s.header(sc, req, dhcpv4.MessageTypeNak)
	if nonzero(addr4(req.GatewayIPAddr)) {
		sc.flags |= 0x8000
	}
	return s.finish(sc, req, dhcpv4.MessageTypeNak, s.destination(req, dhcpv4.MessageTypeNak, netip.Addr{}))
}

// lease builds an OFFER or ACK that gives the client its reserved address:
// yiaddr, the lease and its renewal times, the configuration and the
// netboot options.
func (s *Server) lease(sc *scratch, req *dhcpv4.DHCPv4, typ dhcpv4.MessageType, f *flight) result {
	d := &f.dhcp
	ip := d.IPAddress.Unmap()
	s.header(sc, req, typ)
	sc.yiaddr = ip.As4()
	if typ == dhcpv4.MessageTypeAck {
		sc.ciaddr = ip4As4(req.ClientIPAddr)
	}
	lease := d.LeaseTime
	if lease == 0 {
		lease = s.cfg.lease
	}
	sc.addUint32(51, prioMandatory, lease)
	sc.addUint32(58, sc.prio(req, 58), lease/2)
	sc.addUint32(59, sc.prio(req, 59), uint32(uint64(lease)*7/8))
	s.configuration(sc, req, d)
	s.netboot(sc, req, f)
	r := s.finish(sc, req, typ, s.destination(req, typ, ip))
	r.f = f
	return r
}

// configuration adds the reservation's network configuration options.
func (s *Server) configuration(sc *scratch, req *dhcpv4.DHCPv4, d *backend.DHCP) {
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
	if s.cfg.SyslogServer.IsValid() {
		sc.addAddrs(7, sc.prio(req, 7), s.cfg.SyslogServer)
	}
	if len(d.ClasslessStaticRoutes) != 0 {
		sc.addRoutes(sc.prio(req, 121), d.ClasslessStaticRoutes)
	}
}

// requestedIP returns option 50, or the zero Addr.
func requestedIP(req *dhcpv4.DHCPv4) netip.Addr {
	if v := get(req, dhcpv4.OptionRequestedIPAddress); len(v) == 4 {
		return netip.AddrFrom4([4]byte(v))
	}
	return netip.Addr{}
}

func nonzero(a netip.Addr) bool { return a.IsValid() && !a.IsUnspecified() }

func ip4As4(ip []byte) [4]byte { return [4]byte(ip4(ip)) }

func (s *Server) finish(sc *scratch, req *dhcpv4.DHCPv4, reply dhcpv4.MessageType, dst Destination) result {
	p := sc.marshal(req, sizeLimit(req))
	if p == nil {
		s.cfg.logger.Error("dhcp reply does not fit the size limit", "mac", macText(req.ClientHWAddr), "limit", sizeLimit(req))
		return silent(DropTooLarge)
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
