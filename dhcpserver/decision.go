package dhcpserver

import (
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"go.opentelemetry.io/otel/trace"
)

// DecisionKind says what the server decided about one request. Its
// values are ready for use in event subjects and metric labels.
type DecisionKind string

// The kinds of [Decision].
const (
	DecisionOffer        DecisionKind = "offer"         // an OFFER was sent
	DecisionAck          DecisionKind = "ack"           // an ACK to a REQUEST was sent
	DecisionNak          DecisionKind = "nak"           // a NAK was sent
	DecisionDecline      DecisionKind = "decline"       // the client declined its address (a conflict); no reply
	DecisionRelease      DecisionKind = "release"       // the client released its address; no reply
	DecisionInform       DecisionKind = "inform"        // an ACK to an INFORM was sent
	DecisionNotFound     DecisionKind = "not-found"     // no reservation: the server stays silent
	DecisionBackendError DecisionKind = "backend-error" // the lookup failed: the server stays silent
	// DecisionStaleAnswer is for a reply made from an answer that the
	// Backend served stale: a last-known-good answer given while the
	// source of truth was unavailable, reported by the Backend with
	// [backend.ReportStale] (package cache does). It comes in addition to
	// the decision about the reply (offer, ack, inform or nak), right
	// after it and with the same fields, so that a consumer of offers and
	// acks misses none; its Reason names the reply and the answer's age.
	// Every reply built from a stale answer gets one: each request that
	// shared the stale lookup, and each that reused its answer.
	DecisionStaleAnswer DecisionKind = "stale-answer"
)

// Decision is what the server decided about one request, passed to
// [Config].OnDecision: a value that the callee may keep (nothing in it is
// reused by the server).
type Decision struct {
	Kind DecisionKind

	// MessageType is the type of the request (DISCOVER, REQUEST, ...).
	MessageType dhcpv4.MessageType

	// MAC is the client's hardware address (chaddr).
	MAC net.HardwareAddr

	// IP is the address concerned: the one offered or acknowledged
	// (yiaddr), the one a NAK refused (option 50, or ciaddr), the one
	// declined (option 50) or released (ciaddr), the INFORM's ciaddr;
	// unset otherwise.
	IP netip.Addr

	// XID is the transaction id of the request.
	XID dhcpv4.TransactionID

	// ServerID is this server's identifier (option 54).
	ServerID netip.Addr

	// Trace is the span context of the lookup the decision was made on
	// (invalid when the lookup was not traced, or there was none).
	Trace trace.SpanContext

	// Reason says why, in a few words: for a NAK, the backend error's
	// text, "answer reused" for an answer that served a transaction
	// before, and so on. Empty when nothing needs saying.
	Reason string
}

// decide builds the Decision about req from r and hands it to
// Config.OnDecision. It is called only when OnDecision is set.
func (s *Server) decide(sc *scratch, req *dhcpv4.DHCPv4, typ dhcpv4.MessageType, r result) {
	d := Decision{
		MessageType: typ,
		MAC:         net.HardwareAddr(append([]byte(nil), req.ClientHWAddr...)),
		XID:         req.TransactionID,
		ServerID:    s.cfg.ServerAddr,
	}
	if r.f != nil {
		d.Trace = r.f.span
	}
	ok := false
	if r.payload != nil {
		ok = replied(&d, sc, req, r)
	} else {
		ok = stayedSilent(&d, req, r)
	}
	if !ok {
		return // not a decision about the client: a drop counted in Stats
	}
	if sc.reused {
		switch d.Kind {
		case DecisionNotFound:
			d.Reason = "no reservation (remembered)"
		case DecisionOffer, DecisionAck, DecisionInform:
			d.Reason = "answer reused"
		}
	}
	s.cfg.OnDecision(d)
	if r.f != nil && r.f.stale && r.payload != nil {
		d.Reason = string(d.Kind) + " from a last-known-good answer " + r.f.staleAge.Round(time.Millisecond).String() + " old"
		d.Kind = DecisionStaleAnswer
		s.cfg.OnDecision(d)
	}
}

// replied fills in d for a reply.
func replied(d *Decision, sc *scratch, req *dhcpv4.DHCPv4, r result) bool {
	switch r.typ {
	case dhcpv4.MessageTypeOffer:
		d.Kind, d.IP = DecisionOffer, netip.AddrFrom4(sc.yiaddr)
	case dhcpv4.MessageTypeAck:
		d.Kind, d.IP = DecisionAck, netip.AddrFrom4(sc.yiaddr)
		if d.MessageType == dhcpv4.MessageTypeInform {
			d.Kind, d.IP = DecisionInform, addr4(req.ClientIPAddr)
		}
	case dhcpv4.MessageTypeNak:
		d.Kind, d.IP = DecisionNak, requestedIP(req)
		if !d.IP.IsValid() {
			d.IP = addr4(req.ClientIPAddr)
		}
		if r.f != nil {
			d.Reason = "the reservation is " + r.f.dhcp.IPAddress.Unmap().String()
		}
	default:
		return false
	}
	return true
}

// stayedSilent fills in d for a request that got no reply, when that was
// a decision about the client.
func stayedSilent(d *Decision, req *dhcpv4.DHCPv4, r result) bool {
	switch {
	case r.drop == DropNotFound:
		d.Kind, d.Reason = DecisionNotFound, "no reservation"
	case r.drop == DropBackend:
		d.Kind = DecisionBackendError
		if r.f != nil && r.f.err != nil {
			d.Reason = r.f.err.Error()
		}
	case r.drop == DropNoAddress:
		d.Kind, d.Reason = DecisionBackendError, "the reservation has no IPv4 address"
	case r.drop == DropNoReply && d.MessageType == dhcpv4.MessageTypeRelease:
		d.Kind, d.IP = DecisionRelease, addr4(req.ClientIPAddr)
	case r.drop == DropNoReply && d.MessageType == dhcpv4.MessageTypeDecline:
		d.Kind, d.IP, d.Reason = DecisionDecline, requestedIP(req), "address in use by another host"
	default:
		return false
	}
	return true
}
