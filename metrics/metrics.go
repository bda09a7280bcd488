package metrics

import (
	"strconv"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/cache"
	"github.com/tinkerbell/backend/dhcpserver"
	"github.com/tinkerbell/backend/events"
	natsbackend "github.com/tinkerbell/backend/nats"
	"github.com/tinkerbell/backend/responder"
)

// Namespace is the first part of every metric name.
const Namespace = "tinkerbell"

func desc(subsystem, name, help string, labels []string, constLabels prometheus.Labels) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(Namespace, subsystem, name), help, labels, constLabels)
}

// seconds converts a duration to the unit of Prometheus.
func seconds(d time.Duration) float64 { return d.Seconds() }

// messageType is the label value of a DHCP message type: "discover",
// "offer", ... (bounded: option 53 is one byte).
func messageType(t dhcpv4.MessageType) string {
	return strings.ToLower(t.String())
}

// The message types and drop reasons exported even when their count is
// zero, so that rate() works from the first scrape.
var (
	requestTypes = []dhcpv4.MessageType{dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest,
		dhcpv4.MessageTypeDecline, dhcpv4.MessageTypeRelease, dhcpv4.MessageTypeInform}
	replyTypes  = []dhcpv4.MessageType{dhcpv4.MessageTypeOffer, dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak}
	dropReasons = []dhcpserver.DropReason{
		dhcpserver.DropMalformed, dhcpserver.DropNotRequest, dhcpserver.DropHardware, dhcpserver.DropOversize,
		dhcpserver.DropMessageType, dhcpserver.DropOtherServer, dhcpserver.DropNotFound, dhcpserver.DropBackend,
		dhcpserver.DropNoAddress, dhcpserver.DropNoReply, dhcpserver.DropTooLarge, dhcpserver.DropQueueFull,
		dhcpserver.DropWrite, dhcpserver.DropCanceled, dhcpserver.DropUnknownQueueFull, dhcpserver.DropUnknownLimited,
		dhcpserver.DropMACLimited,
	}
)

// withZeros returns m's counts by label value, with a zero for each of
// known that m lacks.
func withZeros[K comparable](m map[K]uint64, known []K, label func(K) string) map[string]uint64 {
	out := make(map[string]uint64, len(m)+len(known))
	for _, k := range known {
		out[label(k)] = 0
	}
	for k, n := range m {
		out[label(k)] += n
	}
	return out
}

// histogram returns a Prometheus histogram of non-cumulative counts per
// bound (and one more for longer durations).
func histogram(d *prometheus.Desc, bounds []time.Duration, counts []uint64, count uint64, sum time.Duration, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(bounds))
	var cum uint64
	for i, b := range bounds {
		if i < len(counts) {
			cum += counts[i]
		}
		buckets[seconds(b)] = cum
	}
	return prometheus.MustNewConstHistogram(d, count, seconds(sum), buckets, labels...)
}

// DHCPServerCollector exports the [dhcpserver.Stats] of a DHCP server.
// Create it with [NewDHCPServerCollector].
type DHCPServerCollector struct {
	stats func() dhcpserver.Stats

	received, answered, dropped                  *prometheus.Desc
	lookups, coalesced, reused, notFound, errors *prometheus.Desc
	latency, inFlight, waiting                   *prometheus.Desc
}

var _ prometheus.Collector = (*DHCPServerCollector)(nil)

// NewDHCPServerCollector returns a collector of the statistics of s:
//
//	tinkerbell_dhcp_requests_received_total{type}   well-formed requests by DHCP message type
//	tinkerbell_dhcp_replies_sent_total{type}        replies sent by message type (offer, ack, nak)
//	tinkerbell_dhcp_packets_dropped_total{reason}   packets that got no reply, by [dhcpserver.DropReason]
//	tinkerbell_dhcp_lookups_total                   Backend calls
//	tinkerbell_dhcp_lookups_coalesced_total         requests that shared another's Backend call
//	tinkerbell_dhcp_lookups_reused_total            requests answered from a remembered answer, without a Backend call
//	tinkerbell_dhcp_lookups_not_found_total         lookups without a reservation
//	tinkerbell_dhcp_lookup_errors_total             lookups that failed or timed out
//	tinkerbell_dhcp_lookup_duration_seconds         histogram of Backend call durations
//	tinkerbell_dhcp_lookups_in_flight               Backend calls running now
//	tinkerbell_dhcp_requests_waiting                requests waiting for a Backend call now
func NewDHCPServerCollector(s *dhcpserver.Server) *DHCPServerCollector {
	return newDHCPServerCollector(s.Stats)
}

func newDHCPServerCollector(stats func() dhcpserver.Stats) *DHCPServerCollector {
	const sub = "dhcp"
	return &DHCPServerCollector{
		stats:     stats,
		received:  desc(sub, "requests_received_total", "Well-formed DHCP requests received, by message type.", []string{"type"}, nil),
		answered:  desc(sub, "replies_sent_total", "DHCP replies sent, by message type.", []string{"type"}, nil),
		dropped:   desc(sub, "packets_dropped_total", "Received packets that got no reply, by reason.", []string{"reason"}, nil),
		lookups:   desc(sub, "lookups_total", "Backend lookups made.", nil, nil),
		coalesced: desc(sub, "lookups_coalesced_total", "Requests that shared the Backend lookup of a concurrent request for the same client.", nil, nil),
		reused:    desc(sub, "lookups_reused_total", "Requests answered from a remembered answer, without a Backend lookup.", nil, nil),
		notFound:  desc(sub, "lookups_not_found_total", "Backend lookups that found no reservation.", nil, nil),
		errors:    desc(sub, "lookup_errors_total", "Backend lookups that failed or timed out.", nil, nil),
		latency:   desc(sub, "lookup_duration_seconds", "Duration of Backend lookups.", nil, nil),
		inFlight:  desc(sub, "lookups_in_flight", "Backend lookups running now.", nil, nil),
		waiting:   desc(sub, "requests_waiting", "Requests waiting for a Backend lookup now, their own or a shared one.", nil, nil),
	}
}

// Describe implements [prometheus.Collector].
func (c *DHCPServerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.received, c.answered, c.dropped, c.lookups, c.coalesced, c.reused, c.notFound, c.errors, c.latency, c.inFlight, c.waiting} {
		ch <- d
	}
}

// Collect implements [prometheus.Collector]: it reads one snapshot of the
// server's statistics.
func (c *DHCPServerCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	for v, n := range withZeros(st.Received, requestTypes, messageType) {
		ch <- prometheus.MustNewConstMetric(c.received, prometheus.CounterValue, float64(n), v)
	}
	for v, n := range withZeros(st.Answered, replyTypes, messageType) {
		ch <- prometheus.MustNewConstMetric(c.answered, prometheus.CounterValue, float64(n), v)
	}
	for v, n := range withZeros(st.Dropped, dropReasons, func(r dhcpserver.DropReason) string { return string(r) }) {
		ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(n), v)
	}
	ch <- prometheus.MustNewConstMetric(c.lookups, prometheus.CounterValue, float64(st.Lookups))
	ch <- prometheus.MustNewConstMetric(c.coalesced, prometheus.CounterValue, float64(st.Coalesced))
	ch <- prometheus.MustNewConstMetric(c.reused, prometheus.CounterValue, float64(st.Reused))
	ch <- prometheus.MustNewConstMetric(c.notFound, prometheus.CounterValue, float64(st.NotFound))
	ch <- prometheus.MustNewConstMetric(c.errors, prometheus.CounterValue, float64(st.BackendErrors))
	h := st.LookupLatency
	ch <- histogram(c.latency, h.Bounds, h.Counts, h.Count, h.Sum)
	ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(st.InFlight))
	ch <- prometheus.MustNewConstMetric(c.waiting, prometheus.GaugeValue, float64(st.Waiting))
}

// ResponderCollector exports the [responder.Stats] of a responder. Create
// it with [NewResponderCollector].
type ResponderCollector struct {
	stats func() responder.Stats

	requests, errors, processing, inFlight, pending, dropped *prometheus.Desc
	outcomes, replies, backendLatency, queueWait, queued     *prometheus.Desc
	abandoned, abandonedTotal                                *prometheus.Desc
}

var _ prometheus.Collector = (*ResponderCollector)(nil)

// NewResponderCollector returns a collector of the statistics of s, each
// with the constant label subject (the subject s serves):
//
//	tinkerbell_responder_requests_total            requests handled
//	tinkerbell_responder_errors_total              requests answered with an error code, or not answered
//	tinkerbell_responder_processing_seconds_total  time spent handling requests
//	tinkerbell_responder_in_flight                 requests being handled now
//	tinkerbell_responder_pending                   requests waiting in NATS' pending buffer (queue depth)
//	tinkerbell_responder_dropped_total             requests NATS dropped because its pending buffer overflowed
//	tinkerbell_responder_outcomes_total{outcome}   requests by how they ended (ok, not_found, bad_request, backend_error,
//	                                               unavailable, timeout, shed, expired, no_reply, cancelled)
//	tinkerbell_responder_replies_total{code}       replies sent by wire code ("0", "400", "404", "500", "503", "other")
//	tinkerbell_responder_backend_duration_seconds  histogram of backend call durations
//	tinkerbell_responder_queue_wait_seconds        histogram of the time requests waited for a worker
//	tinkerbell_responder_queued                    requests waiting in the responder's queue (queue depth)
//	tinkerbell_responder_abandoned                 backend calls that overran their deadline and still run
//	tinkerbell_responder_abandoned_total           backend calls that overran their deadline
func NewResponderCollector(s *responder.Server) *ResponderCollector {
	return newResponderCollector(s.Stats, s.Subject())
}

func newResponderCollector(stats func() responder.Stats, subject string) *ResponderCollector {
	const sub = "responder"
	l := prometheus.Labels{"subject": subject}
	return &ResponderCollector{
		stats:      stats,
		requests:   desc(sub, "requests_total", "Lookup requests handled, successful or not.", nil, l),
		errors:     desc(sub, "errors_total", "Lookup requests answered with an error code (404 included) or not answered.", nil, l),
		processing: desc(sub, "processing_seconds_total", "Time spent handling requests, from taking one to sending its reply.", nil, l),
		inFlight:   desc(sub, "in_flight", "Requests being handled now.", nil, l),
		pending:    desc(sub, "pending", "Requests waiting in the NATS pending buffer of the subscription.", nil, l),
		dropped:    desc(sub, "dropped_total", "Requests NATS dropped because the pending buffer was full.", nil, l),

		outcomes:       desc(sub, "outcomes_total", "Requests by how they ended.", []string{"outcome"}, l),
		replies:        desc(sub, "replies_total", "Replies sent, by wire code.", []string{"code"}, l),
		backendLatency: desc(sub, "backend_duration_seconds", "Duration of backend calls.", nil, l),
		queueWait:      desc(sub, "queue_wait_seconds", "Time requests waited in the responder's queue for a worker.", nil, l),
		queued:         desc(sub, "queued", "Requests waiting in the responder's queue.", nil, l),
		abandoned:      desc(sub, "abandoned", "Backend calls that overran their deadline and still run.", nil, l),
		abandonedTotal: desc(sub, "abandoned_total", "Backend calls that overran their deadline.", nil, l),
	}
}

// Describe implements [prometheus.Collector].
func (c *ResponderCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.requests, c.errors, c.processing, c.inFlight, c.pending, c.dropped,
		c.outcomes, c.replies, c.backendLatency, c.queueWait, c.queued, c.abandoned, c.abandonedTotal} {
		ch <- d
	}
}

// Collect implements [prometheus.Collector]: it reads one snapshot of the
// responder's statistics.
func (c *ResponderCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	ch <- prometheus.MustNewConstMetric(c.requests, prometheus.CounterValue, float64(st.Requests))
	ch <- prometheus.MustNewConstMetric(c.errors, prometheus.CounterValue, float64(st.Errors))
	ch <- prometheus.MustNewConstMetric(c.processing, prometheus.CounterValue, seconds(st.ProcessingTime))
	ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(st.InFlight))
	ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(st.Pending))
	ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(st.Dropped))
	o := st.Outcomes
	for _, v := range []struct {
		label string
		n     uint64
	}{{"ok", o.OK}, {"not_found", o.NotFound}, {"bad_request", o.BadRequest}, {"backend_error", o.BackendError},
		{"unavailable", o.Unavailable}, {"timeout", o.Timeout}, {"shed", o.Shed}, {"expired", o.Expired},
		{"no_reply", o.NoReply}, {"cancelled", o.Cancelled}} {
		ch <- prometheus.MustNewConstMetric(c.outcomes, prometheus.CounterValue, float64(v.n), v.label)
	}
	r := st.Replies
	for _, v := range []struct {
		label string
		n     uint64
	}{{"0", r.OK}, {"400", r.BadRequest}, {"404", r.NotFound}, {"500", r.Internal}, {"503", r.Unavailable}, {"other", r.Other}} {
		ch <- prometheus.MustNewConstMetric(c.replies, prometheus.CounterValue, float64(v.n), v.label)
	}
	ch <- cumulativeHistogram(c.backendLatency, st.BackendLatency.Bounds, st.BackendLatency.Counts, st.BackendLatency.Count, st.BackendLatency.Sum)
	ch <- cumulativeHistogram(c.queueWait, st.QueueWait.Bounds, st.QueueWait.Counts, st.QueueWait.Count, st.QueueWait.Sum)
	ch <- prometheus.MustNewConstMetric(c.queued, prometheus.GaugeValue, float64(st.Queued))
	ch <- prometheus.MustNewConstMetric(c.abandoned, prometheus.GaugeValue, float64(st.Abandoned))
	ch <- prometheus.MustNewConstMetric(c.abandonedTotal, prometheus.CounterValue, float64(st.AbandonedTotal))
}

// cumulativeHistogram returns a Prometheus histogram of cumulative counts
// per bound.
func cumulativeHistogram(d *prometheus.Desc, bounds []time.Duration, counts []uint64, count uint64, sum time.Duration) prometheus.Metric {
	buckets := make(map[float64]uint64, len(bounds))
	for i, b := range bounds {
		if i < len(counts) {
			buckets[seconds(b)] = counts[i]
		}
	}
	return prometheus.MustNewConstHistogram(d, count, seconds(sum), buckets)
}

// RequesterCollector exports the [natsbackend.Stats] of a requester.
// Create it with [NewRequesterCollector].
type RequesterCollector struct {
	stats func() natsbackend.Stats

	lookups, codes, requests, retries, noResponders    *prometheus.Desc
	hedges, hedgeWins, hedgesDenied, rejected, latency *prometheus.Desc
}

var _ prometheus.Collector = (*RequesterCollector)(nil)

// requesterOutcomes are exported even when their count is zero.
var requesterOutcomes = []natsbackend.Outcome{
	natsbackend.OutcomeOK, natsbackend.OutcomeNotFound, natsbackend.OutcomeRemoteError, natsbackend.OutcomeNoBackend,
	natsbackend.OutcomeTimeout, natsbackend.OutcomeCanceled, natsbackend.OutcomeUnavailable,
	natsbackend.OutcomeInvalidReply, natsbackend.OutcomeBadSignature, natsbackend.OutcomeBadRequest,
}

var requesterCodes = []int{backend.CodeBadRequest, backend.CodeNotFound, backend.CodeInternal, backend.CodeUnavailable}

// NewRequesterCollector returns a collector of the statistics of the
// requester b (package [github.com/tinkerbell/backend/nats]), each with the
// constant label subject (the subject b asks on):
//
//	tinkerbell_requester_lookups_total{outcome}        finished lookups by [natsbackend.Outcome]
//	tinkerbell_requester_error_codes_total{code}       error codes of the replies that ended lookups ("400", "404", "500", "503", "other")
//	tinkerbell_requester_requests_total                request messages published (first tries, retries, hedges)
//	tinkerbell_requester_retries_total                 requests sent again after a timeout, a 503 or "no responders"
//	tinkerbell_requester_no_responders_total           "no responders" notices from NATS
//	tinkerbell_requester_hedges_total                  hedged requests sent
//	tinkerbell_requester_hedge_wins_total              lookups answered by a hedged request
//	tinkerbell_requester_hedges_denied_total           hedges not sent because the hedge budget was spent
//	tinkerbell_requester_replies_rejected_total        invalid, mismatched or unsigned replies dropped
//	tinkerbell_requester_lookup_duration_seconds       histogram of lookup durations
func NewRequesterCollector(b *natsbackend.Backend) *RequesterCollector {
	return newRequesterCollector(b.Stats, b.Subject())
}

func newRequesterCollector(stats func() natsbackend.Stats, subject string) *RequesterCollector {
	const sub = "requester"
	l := prometheus.Labels{"subject": subject}
	return &RequesterCollector{
		stats:        stats,
		lookups:      desc(sub, "lookups_total", "Finished lookups, by outcome.", []string{"outcome"}, l),
		codes:        desc(sub, "error_codes_total", "Error codes of the replies that ended lookups.", []string{"code"}, l),
		requests:     desc(sub, "requests_total", "Request messages published: first tries, retries and hedges.", nil, l),
		retries:      desc(sub, "retries_total", "Requests sent again after a timeout, a 503 reply or no responders.", nil, l),
		noResponders: desc(sub, "no_responders_total", "No-responders notices from the NATS server.", nil, l),
		hedges:       desc(sub, "hedges_total", "Hedged requests sent.", nil, l),
		hedgeWins:    desc(sub, "hedge_wins_total", "Lookups answered by a hedged request rather than the one it hedged.", nil, l),
		hedgesDenied: desc(sub, "hedges_denied_total", "Hedges not sent because the hedge budget was spent.", nil, l),
		rejected:     desc(sub, "replies_rejected_total", "Replies dropped as invalid, answering another question, or not signed by a trusted key.", nil, l),
		latency:      desc(sub, "lookup_duration_seconds", "Duration of lookups, successful or not.", nil, l),
	}
}

// Describe implements [prometheus.Collector].
func (c *RequesterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.lookups, c.codes, c.requests, c.retries, c.noResponders,
		c.hedges, c.hedgeWins, c.hedgesDenied, c.rejected, c.latency} {
		ch <- d
	}
}

// Collect implements [prometheus.Collector]: it reads one snapshot of the
// requester's statistics.
func (c *RequesterCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	for v, n := range withZeros(st.Lookups, requesterOutcomes, func(o natsbackend.Outcome) string { return string(o) }) {
		ch <- prometheus.MustNewConstMetric(c.lookups, prometheus.CounterValue, float64(n), v)
	}
	for v, n := range withZeros(st.Codes, requesterCodes, strconv.Itoa) {
		ch <- prometheus.MustNewConstMetric(c.codes, prometheus.CounterValue, float64(n), v)
	}
	ch <- prometheus.MustNewConstMetric(c.codes, prometheus.CounterValue, float64(st.OtherCodes), "other")
	for _, m := range []struct {
		d *prometheus.Desc
		n uint64
	}{{c.requests, st.Requests}, {c.retries, st.Retries}, {c.noResponders, st.NoResponders}, {c.hedges, st.Hedges},
		{c.hedgeWins, st.HedgeWins}, {c.hedgesDenied, st.HedgesDenied}, {c.rejected, st.Rejected}} {
		ch <- prometheus.MustNewConstMetric(m.d, prometheus.CounterValue, float64(m.n))
	}
	h := st.Latency
	ch <- histogram(c.latency, h.Bounds, h.Counts, h.Count, h.Sum)
}

// CacheCollector exports the [cache.Stats] of a caching backend. Create it
// with [NewCacheCollector].
type CacheCollector struct {
	stats func() cache.Stats

	lookups, fresh, notFound, negativeHits, staleServes, staleMisses, errors, evictions, entries *prometheus.Desc
}

var _ prometheus.Collector = (*CacheCollector)(nil)

// NewCacheCollector returns a collector of the statistics of the caching
// backend b (package [github.com/tinkerbell/backend/cache]):
//
//	tinkerbell_cache_lookups_total         lookups
//	tinkerbell_cache_fresh_total           answers from the wrapped backend (remembered)
//	tinkerbell_cache_not_found_total       not-found answers from the wrapped backend (remembered)
//	tinkerbell_cache_negative_hits_total   not-found answered from the negative cache
//	tinkerbell_cache_stale_serves_total    last-known-good answers served while the backend was unavailable (netboot off)
//	tinkerbell_cache_stale_misses_total    backend unavailable and no answer young enough held
//	tinkerbell_cache_errors_total          other failures passed through (stale misses included)
//	tinkerbell_cache_evictions_total       entries dropped to stay within the size limit
//	tinkerbell_cache_entries               MAC addresses remembered now
func NewCacheCollector(b *cache.Backend) *CacheCollector {
	return newCacheCollector(b.Stats)
}

func newCacheCollector(stats func() cache.Stats) *CacheCollector {
	const sub = "cache"
	return &CacheCollector{
		stats:        stats,
		lookups:      desc(sub, "lookups_total", "Lookups through the cache.", nil, nil),
		fresh:        desc(sub, "fresh_total", "Answers from the wrapped backend, remembered.", nil, nil),
		notFound:     desc(sub, "not_found_total", "Not-found answers from the wrapped backend, remembered for the negative TTL.", nil, nil),
		negativeHits: desc(sub, "negative_hits_total", "Not-found answered from the negative cache without asking the backend.", nil, nil),
		staleServes:  desc(sub, "stale_serves_total", "Last-known-good answers served because the backend was unavailable.", nil, nil),
		staleMisses:  desc(sub, "stale_misses_total", "Lookups while the backend was unavailable without an answer young enough.", nil, nil),
		errors:       desc(sub, "errors_total", "Other failures passed through, stale misses included.", nil, nil),
		evictions:    desc(sub, "evictions_total", "Entries dropped to stay within the size limit.", nil, nil),
		entries:      desc(sub, "entries", "MAC addresses remembered now.", nil, nil),
	}
}

// Describe implements [prometheus.Collector].
func (c *CacheCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.lookups, c.fresh, c.notFound, c.negativeHits, c.staleServes, c.staleMisses, c.errors, c.evictions, c.entries} {
		ch <- d
	}
}

// Collect implements [prometheus.Collector]: it reads one snapshot of the
// cache's statistics.
func (c *CacheCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	for _, m := range []struct {
		d *prometheus.Desc
		n uint64
	}{{c.lookups, st.Lookups}, {c.fresh, st.Fresh}, {c.notFound, st.NotFound}, {c.negativeHits, st.NegativeHits},
		{c.staleServes, st.StaleServes}, {c.staleMisses, st.StaleMisses}, {c.errors, st.Errors}, {c.evictions, st.Evictions}} {
		ch <- prometheus.MustNewConstMetric(m.d, prometheus.CounterValue, float64(m.n))
	}
	ch <- prometheus.MustNewConstMetric(c.entries, prometheus.GaugeValue, float64(st.Entries))
}

// EventsCollector exports the [events.Stats] of a decision event
// publisher. Create it with [NewEventsCollector].
type EventsCollector struct {
	stats func() events.Stats

	published, dropped, failed, pending *prometheus.Desc
}

var _ prometheus.Collector = (*EventsCollector)(nil)

// NewEventsCollector returns a collector of the statistics of the decision
// event publisher p (package [github.com/tinkerbell/backend/events]):
//
//	tinkerbell_events_published_total   events handed to NATS
//	tinkerbell_events_dropped_total     events dropped because the buffer was full
//	tinkerbell_events_failed_total      events NATS refused
//	tinkerbell_events_pending           events waiting in the buffer
func NewEventsCollector(p *events.Publisher) *EventsCollector {
	const sub = "events"
	return &EventsCollector{
		stats:     p.Stats,
		published: desc(sub, "published_total", "Decision events handed to the NATS connection.", nil, nil),
		dropped:   desc(sub, "dropped_total", "Decision events dropped because the buffer was full or the publisher stopped.", nil, nil),
		failed:    desc(sub, "failed_total", "Decision events the NATS connection refused.", nil, nil),
		pending:   desc(sub, "pending", "Decision events waiting in the buffer.", nil, nil),
	}
}

// Describe implements [prometheus.Collector].
func (c *EventsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.published, c.dropped, c.failed, c.pending} {
		ch <- d
	}
}

// Collect implements [prometheus.Collector].
func (c *EventsCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	ch <- prometheus.MustNewConstMetric(c.published, prometheus.CounterValue, float64(st.Published))
	ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(st.Dropped))
	ch <- prometheus.MustNewConstMetric(c.failed, prometheus.CounterValue, float64(st.Failed))
	ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(st.Pending))
}
