package dhcpserver

// proxyDHCP mode: boot information for PXE and UEFI HTTP boot clients on
// networks where another server assigns the addresses.

import (
	"context"
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// handleProxy answers a request in proxy mode ([Config].Proxy): a PXE or
// UEFI HTTP boot client's DISCOVER gets an OFFER and its REQUEST an ACK
// that carry boot information only (no yiaddr, no address configuration,
// no lease); every other request gets nothing.
func (s *Server) handleProxy(ctx context.Context, sc *scratch, req *dhcpv4.DHCPv4, typ dhcpv4.MessageType) result {
	var reply dhcpv4.MessageType
	switch typ {
	case dhcpv4.MessageTypeDiscover:
		reply = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest:
		reply = dhcpv4.MessageTypeAck
	default:
		return silent(DropNoReply)
	}
	kind := netbootKind(req)
	if kind == notNetboot {
		return silent(DropNotPXE)
	}
	f, drop := s.reservation(ctx, sc, req, false, typ == dhcpv4.MessageTypeDiscover)
	if drop != "" {
		return result{drop: drop, f: f}
	}
	var file string
	if f.netboot.AllowNetboot {
		var ok bool
		if file, _, ok = s.bootFileFor(req, f, kind); !ok || file == "" {
			return result{drop: DropNotPXE, f: f} // nothing to boot: another proxy may have it
		}
	} else {
		file = "/" + formatMAC(MACColon, req.ClientHWAddr) + notAllowedFile // smee: always colons
	}
	s.header(sc, req, reply)
	if kind == httpClient {
		sc.addString(60, prioMandatory, "HTTPClient")
	} else {
		sc.addString(60, prioMandatory, "PXEClient")
	}
	if uuid := get(req, optClientUUID); uuid != nil {
		sc.add(optClientUUID, prioMandatory, uuid...) // the client matches offers by it (PXE spec)
	}
	s.bootFile(sc, file)
	sc.siaddr = s.cfg.nextServer.As4()
	sc.sname = s.cfg.nextServer.String()
	s.option43(sc, req, f)
	r := s.finish(sc, req, reply, s.destination(req, reply, netip.Addr{}))
	r.f = f
	return r
}
