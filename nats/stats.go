package nats

import (
	"sync/atomic"
	"time"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/internal/latency"
)

// Outcome is how a lookup ended, a bounded label for metrics.
type Outcome string

// The outcomes of [Stats.Lookups].
const (
	OutcomeOK           Outcome = "ok"            // a valid answer
	OutcomeNotFound     Outcome = "not_found"     // code 404: no reservation
	OutcomeRemoteError  Outcome = "remote_error"  // another error code from a responder; see [Stats.Codes]
	OutcomeNoBackend    Outcome = "no_backend"    // nobody listened ([backend.ErrNoBackend])
	OutcomeTimeout      Outcome = "timeout"       // no answer within the budget or the caller's deadline
	OutcomeCanceled     Outcome = "canceled"      // the caller's context was canceled
	OutcomeUnavailable  Outcome = "unavailable"   // the connection failed (closed, reconnect buffer full, ...)
	OutcomeInvalidReply Outcome = "invalid_reply" // a reply that is not a valid answer to the question
	OutcomeBadSignature Outcome = "bad_signature" // a reply without a valid signature by a trusted key
	OutcomeBadRequest   Outcome = "bad_request"   // the request was rejected before it was sent
)

var outcomes = [...]Outcome{
	OutcomeOK, OutcomeNotFound, OutcomeRemoteError, OutcomeNoBackend, OutcomeTimeout,
	OutcomeCanceled, OutcomeUnavailable, OutcomeInvalidReply, OutcomeBadSignature, OutcomeBadRequest,
}

func outcomeIndex(o Outcome) int {
	for i, v := range outcomes {
		if v == o {
			return i
		}
	}
	return len(outcomes) - 1
}

// countedCodes are the error codes counted one by one in [Stats.Codes]; others
// count in [Stats.OtherCodes].
var countedCodes = [...]int{backend.CodeBadRequest, backend.CodeNotFound, backend.CodeInternal, backend.CodeUnavailable}

// LatencyBounds are the upper bounds of the buckets of [Stats.Latency].
var LatencyBounds = []time.Duration{
	250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2500 * time.Millisecond, 5 * time.Second,
}

// Stats are counters of a [Backend] since [New]. Everything is counted
// once per lookup except the request counters, which count messages.
type Stats struct {
	// Lookups counts finished lookups by outcome. Every outcome is present.
	Lookups map[Outcome]uint64

	// Codes counts the error codes of the replies that ended lookups
	// (400, 404, 500, 503); OtherCodes counts every other non-zero code.
	Codes      map[int]uint64
	OtherCodes uint64

	// Requests counts request messages published: first requests, retries
	// and hedges.
	Requests uint64

	// Retries counts requests sent again after a timeout, a 503 reply or
	// "no responders" (a new attempt, or a resend while nobody listens).
	Retries uint64

	// NoResponders counts "no responders" notices from the NATS server.
	NoResponders uint64

	// Hedges counts hedged requests: the same request sent again because
	// no reply came within the hedge delay.
	Hedges uint64

	// HedgeWins counts lookups answered by a hedged request rather than by
	// the one it hedged.
	HedgeWins uint64

	// HedgesDenied counts hedges not sent because the hedge budget was
	// spent (see [Config.HedgeDelay]).
	HedgesDenied uint64

	// Rejected counts replies dropped because they were invalid, answered
	// another question or were not signed by a trusted key.
	Rejected uint64

	// Latency is the histogram of lookup durations, successful or not.
	Latency Histogram
}

// Histogram is a latency histogram with fixed buckets.
type Histogram struct {
	// Bounds are the inclusive upper bounds of the buckets
	// ([LatencyBounds]).
	Bounds []time.Duration
	// Counts has one count per bound and a last one for longer durations;
	// the counts are not cumulative.
	Counts []uint64
	// Count and Sum are the number and the total of the observations.
	Count uint64
	Sum   time.Duration
}

// stats are the live counters behind [Stats].
type stats struct {
	lookups      [len(outcomes)]atomic.Uint64
	codes        [len(countedCodes)]atomic.Uint64
	otherCodes   atomic.Uint64
	requests     atomic.Uint64
	retries      atomic.Uint64
	noResponders atomic.Uint64
	hedges       atomic.Uint64
	hedgeWins    atomic.Uint64
	hedgesDenied atomic.Uint64
	rejected     atomic.Uint64
	latency      latency.Recorder
}

func (s *stats) finish(o Outcome, code int, d time.Duration) {
	s.lookups[outcomeIndex(o)].Add(1)
	if code != 0 {
		counted := false
		for i, c := range countedCodes {
			if c == code {
				s.codes[i].Add(1)
				counted = true
			}
		}
		if !counted {
			s.otherCodes.Add(1)
		}
	}
	s.latency.Observe(LatencyBounds, d)
}

// Stats returns a snapshot of the counters.
func (b *Backend) Stats() Stats {
	s := &b.stats
	out := Stats{
		Lookups:      make(map[Outcome]uint64, len(outcomes)),
		Codes:        make(map[int]uint64, len(countedCodes)),
		OtherCodes:   s.otherCodes.Load(),
		Requests:     s.requests.Load(),
		Retries:      s.retries.Load(),
		NoResponders: s.noResponders.Load(),
		Hedges:       s.hedges.Load(),
		HedgeWins:    s.hedgeWins.Load(),
		HedgesDenied: s.hedgesDenied.Load(),
		Rejected:     s.rejected.Load(),
		Latency:      Histogram{Bounds: append([]time.Duration(nil), LatencyBounds...)},
	}
	h := &out.Latency
	h.Counts, h.Count, h.Sum = s.latency.Snapshot(LatencyBounds)
	for i, o := range outcomes {
		out.Lookups[o] = s.lookups[i].Load()
	}
	for i, c := range countedCodes {
		out.Codes[c] = s.codes[i].Load()
	}
	return out
}
