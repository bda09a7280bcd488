package dhcpserver

import (
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/tinkerbell/backend/internal/latency"
)

// DropReason says why a received packet got no reply. It is a label value
// ready for metrics.
type DropReason string

// The reasons in [Stats.Dropped].
const (
	DropMalformed   DropReason = "malformed"     // not a parseable DHCP packet (truncated, bad cookie, bad options, bad IP/UDP headers)
	DropNotRequest  DropReason = "not-request"   // a BOOTREPLY (op 2)
	DropHardware    DropReason = "hardware-type" // not Ethernet (htype 1, hlen 6)
	DropOversize    DropReason = "oversize"      // larger than any DHCP packet may be
	DropMessageType DropReason = "message-type"  // option 53 missing or not one a server handles
	DropOtherServer DropReason = "other-server"  // a REQUEST, RELEASE or DECLINE for another server (option 54)
	DropNotFound    DropReason = "not-found"     // the Backend has no reservation
	DropBackend     DropReason = "backend-error" // the Backend failed or timed out
	DropNoAddress   DropReason = "no-address"    // the reservation has no IPv4 address
	DropNoReply     DropReason = "no-reply"      // RELEASE and DECLINE, which get none; REQUEST in no known state
	DropTooLarge    DropReason = "reply-too-large"
	DropQueueFull   DropReason = "queue-full" // every worker busy and the queue full
	DropWrite       DropReason = "write-error"
	DropCanceled    DropReason = "canceled" // the request's context ended before its lookup did (Close, or the ctx of Handle)

	DropUnknownQueueFull DropReason = "unknown-queue-full" // from a client not answered recently, and its queue full
	DropUnknownLimited   DropReason = "unknown-rate-limit" // from a client not answered recently, the not-found budget spent (Config.NotFoundRate)
	DropMACLimited       DropReason = "mac-rate-limit"     // over the per-MAC lookup limit (Config.MinLookupInterval, MACLookupBurst)

	DropDisabled DropReason = "disabled" // the reservation says Disabled: the server stays silent
	DropNotPXE   DropReason = "not-pxe"  // proxy mode: not a PXE or UEFI HTTP boot client, or nothing for it to boot
)

var dropReasons = [...]DropReason{
	DropMalformed, DropNotRequest, DropHardware, DropOversize, DropMessageType, DropOtherServer,
	DropNotFound, DropBackend, DropNoAddress, DropNoReply, DropTooLarge, DropQueueFull, DropWrite, DropCanceled,
	DropUnknownQueueFull, DropUnknownLimited, DropMACLimited, DropDisabled, DropNotPXE,
}

// DropReasons returns every [DropReason], for metrics that want to
// report zero counts too.
func DropReasons() []DropReason { return append([]DropReason(nil), dropReasons[:]...) }

func dropIndex(r DropReason) int {
	for i, x := range dropReasons {
		if x == r {
			return i
		}
	}
	return 0
}

// latencyBounds are the upper bounds of the buckets of [Stats].LookupLatency.
var latencyBounds = [...]time.Duration{
	100 * time.Microsecond, 500 * time.Microsecond, time.Millisecond, 5 * time.Millisecond,
	10 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2 * time.Second,
}

// Stats is a snapshot of a server's counters, from [Server.Stats]: all a
// metrics collector needs (counters, two gauges, a histogram). The maps
// hold only non-zero counts; [DropReasons] lists every key Dropped can
// have.
type Stats struct {
	// Received counts well-formed requests per DHCP message type.
	Received map[dhcpv4.MessageType]uint64

	// Answered counts replies sent per message type (OFFER, ACK, NAK).
	Answered map[dhcpv4.MessageType]uint64

	// Dropped counts packets that got no reply, by reason.
	Dropped map[DropReason]uint64

	Lookups       uint64 // Backend calls made
	Coalesced     uint64 // requests that shared another request's Backend call
	Reused        uint64 // requests answered from a remembered answer, without a Backend call (Config.AnswerReuse, NegativeTTL)
	NotFound      uint64 // lookups that found no reservation
	BackendErrors uint64 // lookups that failed or timed out

	InFlight int64 // Backend calls running now (a gauge)
	Waiting  int64 // requests waiting for a Backend call now, their own or a shared one (a gauge)

	// LookupLatency is the distribution of Backend call durations.
	LookupLatency Histogram
}

// Histogram is a cumulative-ready latency distribution: Counts[i] counts
// observations ≤ Bounds[i] (and > Bounds[i-1]); the last element of Counts
// counts those above every bound.
type Histogram struct {
	Bounds []time.Duration
	Counts []uint64
	Count  uint64
	Sum    time.Duration
}

type counters struct {
	received [256]atomic.Uint64
	answered [256]atomic.Uint64
	dropped  [len(dropReasons)]atomic.Uint64

	lookups, coalesced, notFound, backendErrors, reused atomic.Uint64
	inflight, waiting                                   atomic.Int64 // lookups running; requests waiting for one

	latency latency.Recorder
}

func (c *counters) observe(d time.Duration) { c.latency.Observe(latencyBounds[:], d) }

func (c *counters) snapshot() Stats {
	s := Stats{
		Received:      map[dhcpv4.MessageType]uint64{},
		Answered:      map[dhcpv4.MessageType]uint64{},
		Dropped:       map[DropReason]uint64{},
		Lookups:       c.lookups.Load(),
		Coalesced:     c.coalesced.Load(),
		Reused:        c.reused.Load(),
		NotFound:      c.notFound.Load(),
		BackendErrors: c.backendErrors.Load(),
		InFlight:      c.inflight.Load(),
		Waiting:       c.waiting.Load(),
		LookupLatency: Histogram{Bounds: append([]time.Duration(nil), latencyBounds[:]...)},
	}
	h := &s.LookupLatency
	h.Counts, h.Count, h.Sum = c.latency.Snapshot(latencyBounds[:])
	for i := range c.received {
		if n := c.received[i].Load(); n != 0 {
			s.Received[dhcpv4.MessageType(i)] = n
		}
		if n := c.answered[i].Load(); n != 0 {
			s.Answered[dhcpv4.MessageType(i)] = n
		}
	}
	for i, r := range dropReasons {
		if n := c.dropped[i].Load(); n != 0 {
			s.Dropped[r] = n
		}
	}
	return s
}
