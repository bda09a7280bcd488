package responder

import (
	"maps"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/internal/latency"
)

// Stats are the statistics of a [Server], as [Server.Stats] returns them
// and $SRV.STATS reports them. Counters only grow; InFlight, Queued,
// Pending and Abandoned are current values. Everything a metrics collector
// needs is here: label values are the fixed field names, never request
// data.
type Stats struct {
	Name     string            // service name, [Config.Name]
	ID       string            // unique id of this Server
	Version  string            // [Config.Version]
	Metadata map[string]string // a copy of [Config.Metadata]

	Subject    string    // the subject served
	QueueGroup string    // the queue group, "" when [Config.NoQueue] is set
	Started    time.Time // when the Server subscribed, in UTC

	// Requests counts the requests received, whatever became of them:
	// the sum of Outcomes, plus Dropped. Errors counts those that did not
	// end in an answer with data: every outcome but OK (404 included, as
	// the NATS micro protocol counts errors), plus Dropped. A backend
	// that fails or hangs shows as Errors rising with Requests. LastError
	// is the latest, as "code message".
	Requests  uint64
	Errors    uint64
	LastError string

	// Outcomes counts the requests by how they ended.
	Outcomes Outcomes

	// Replies counts the replies sent, by wire code.
	Replies Codes

	// ProcessingTime is the total time spent on requests, from their
	// receipt to their reply (or drop), time queued included.
	ProcessingTime        time.Duration
	AverageProcessingTime time.Duration

	// BackendLatency is the distribution of backend call durations; a call
	// that overran its deadline counts until its watchdog answered.
	BackendLatency Histogram

	// QueueWait is the distribution of the time requests waited in the
	// responder's queue before a worker took them.
	QueueWait Histogram

	InFlight      int // requests being handled by workers now
	Queued        int // requests waiting in the responder's queue
	MaxPending    int // capacity of the queue, [Config.MaxPending]
	MaxConcurrent int // [Config.MaxConcurrent]

	// Pending is the number of requests in NATS' pending buffer, not yet
	// seen by the responder; Dropped counts those NATS dropped when that
	// buffer overflowed (a slow consumer).
	Pending int
	Dropped int

	// Abandoned is the number of backend calls that overran their
	// deadline and still run, at most about MaxAbandoned
	// ([Config.MaxAbandoned]); AbandonedTotal counts every such call
	// (each is also an Outcomes.Timeout).
	Abandoned      int
	MaxAbandoned   int
	AbandonedTotal uint64

	// Pauses counts the times the responder stepped out of its queue
	// group because it was shedding, so that NATS sent the requests to
	// other replicas until its queue was empty.
	Pauses uint64

	// BudgetsClamped counts requests whose [backend.HeaderTimeout] asked
	// for more than [Config.MaxTimeout].
	BudgetsClamped uint64
}

// Outcomes counts requests by how they ended. Each request has exactly one
// outcome.
type Outcomes struct {
	OK           uint64 // answered with data (code 0)
	NotFound     uint64 // 404: no reservation
	BadRequest   uint64 // 400: a malformed request or budget header, or the backend said so
	BackendError uint64 // 500 or another code: the backend failed, panicked or answered invalid data
	Unavailable  uint64 // 503 from the backend ([backend.ErrUnavailable])
	Timeout      uint64 // 503: the backend call reached its deadline (see AbandonedTotal)
	Shed         uint64 // 503 at once, without a backend call: queue full, its expected wait too long, or too many calls abandoned
	Expired      uint64 // dropped without a reply or a backend call: the budget was spent while queued
	NoReply      uint64 // dropped: no reply subject, or the reply could not be sent
	Cancelled    uint64 // dropped by [Server.Close]
}

// Codes counts replies by wire code.
type Codes struct {
	OK          uint64 // [backend.CodeOK]
	BadRequest  uint64 // [backend.CodeBadRequest]
	NotFound    uint64 // [backend.CodeNotFound]
	Internal    uint64 // [backend.CodeInternal]
	Unavailable uint64 // [backend.CodeUnavailable]
	Other       uint64 // any other code a backend passed on
}

// Histogram is a distribution of durations, in the form Prometheus
// histograms take: Counts[i] is the number of observations at most
// Bounds[i] (cumulative), Count the number of all observations (the +Inf
// bucket) and Sum their total.
type Histogram struct {
	Bounds []time.Duration
	Counts []uint64
	Count  uint64
	Sum    time.Duration
}

// Stats returns the current statistics.
func (s *Server) Stats() Stats {
	st := Stats{
		Name:           s.name,
		ID:             s.id,
		Version:        s.version,
		Metadata:       maps.Clone(s.metadata),
		Subject:        s.subject,
		QueueGroup:     s.queue,
		Started:        s.started,
		InFlight:       int(s.stats.inFlight.Load()),
		Queued:         len(s.requests),
		MaxPending:     s.maxPending,
		MaxConcurrent:  s.maxConc,
		Abandoned:      int(s.abandoned.Load()),
		MaxAbandoned:   s.maxAbandoned,
		AbandonedTotal: s.stats.abandoned.Load(),
		BudgetsClamped: s.stats.clamped.Load(),
		ProcessingTime: time.Duration(s.stats.total.Load()),
		BackendLatency: s.stats.backend.snapshot(),
		QueueWait:      s.stats.queueWait.snapshot(),
	}
	c := &s.stats
	o := func(x outcome) uint64 { return c.outcomes[x].Load() }
	st.Outcomes = Outcomes{
		OK: o(outOK), NotFound: o(outNotFound), BadRequest: o(outBadRequest), BackendError: o(outError),
		Unavailable: o(outUnavailable), Timeout: o(outTimeout), Shed: o(outShed), Expired: o(outExpired),
		NoReply: o(outNoReply), Cancelled: o(outCancelled),
	}
	st.Replies = Codes{
		OK: c.codes[0].Load(), BadRequest: c.codes[1].Load(), NotFound: c.codes[2].Load(),
		Internal: c.codes[3].Load(), Unavailable: c.codes[4].Load(), Other: c.codes[5].Load(),
	}
	if p := c.lastError.Load(); p != nil {
		st.LastError = *p
	}
	st.Pending, st.Dropped = s.natsQueue()
	st.Pauses = c.pauses.Load()
	oc := st.Outcomes
	st.Requests = oc.OK + oc.NotFound + oc.BadRequest + oc.BackendError + oc.Unavailable + oc.Timeout + oc.Shed + oc.Expired + oc.NoReply + oc.Cancelled
	st.Errors = st.Requests - oc.OK + uint64(st.Dropped)
	st.Requests += uint64(st.Dropped)
	if n := st.Requests - uint64(st.Dropped); n > 0 {
		st.AverageProcessingTime = st.ProcessingTime / time.Duration(n)
	}
	return st
}

// outcome is how a request ended.
type outcome uint8

const (
	outOK outcome = iota
	outNotFound
	outBadRequest
	outError
	outUnavailable
	outTimeout
	outShed
	outExpired
	outNoReply
	outCancelled
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"ok", "not_found", "bad_request", "error", "unavailable", "timeout", "shed", "expired", "no_reply", "cancelled"}

func (o outcome) String() string { return outcomeNames[o] }

// failed reports whether o is a failure of the service (not a successful
// answer, and not a 404, which is an answer).
func (o outcome) failed() bool { return o != outOK && o != outNotFound }

// noCode is the code of an outcome without a reply.
const noCode = -1

// counters hold the request statistics, updated without locks.
type counters struct {
	inFlight  atomic.Int64
	outcomes  [numOutcomes]atomic.Uint64
	codes     [6]atomic.Uint64 // see codeIndex
	total     atomic.Int64     // nanoseconds from receipt to the end
	abandoned atomic.Uint64
	clamped   atomic.Uint64
	pauses    atomic.Uint64
	lastError atomic.Pointer[string]
	backend   histogram
	queueWait histogram
}

func codeIndex(code int) int {
	switch code {
	case backend.CodeOK:
		return 0
	case backend.CodeBadRequest:
		return 1
	case backend.CodeNotFound:
		return 2
	case backend.CodeInternal:
		return 3
	case backend.CodeUnavailable:
		return 4
	}
	return 5
}

// finish counts a request received at recv that ended with outcome o,
// having sent a reply with code (noCode: none). err, when not nil, becomes
// LastError.
func (c *counters) finish(o outcome, code int, recv time.Time, err error) {
	c.outcomes[o].Add(1)
	if code != noCode {
		c.codes[codeIndex(code)].Add(1)
	}
	c.total.Add(int64(time.Since(recv)))
	if err != nil {
		e := err.Error()
		c.lastError.Store(&e)
	}
}

// latencyBounds are the bucket bounds of the histograms: from 1 ms (a
// backend in memory) to 30 s ([DefaultMaxTimeout]).
var latencyBounds = [...]time.Duration{
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond, 10 * time.Millisecond,
	25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond,
	500 * time.Millisecond, time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second, 30 * time.Second,
}

// histogram records durations against latencyBounds.
type histogram struct{ r latency.Recorder }

func (h *histogram) observe(d time.Duration) { h.r.Observe(latencyBounds[:], d) }

// snapshot returns the cumulative form of [Histogram].
func (h *histogram) snapshot() Histogram {
	counts, n, sum := h.r.Snapshot(latencyBounds[:])
	return Histogram{
		Bounds: append([]time.Duration(nil), latencyBounds[:]...),
		Counts: latency.Cumulative(counts),
		Count:  n,
		Sum:    sum,
	}
}

// ewma is an exponentially weighted moving average of durations, updated
// without locks; zero until the first observation.
type ewma struct{ v atomic.Int64 }

func (e *ewma) observe(d time.Duration) {
	for {
		old := e.v.Load()
		nv := int64(d)
		if old != 0 {
			nv = old + (int64(d)-old)/8
		}
		if nv == 0 {
			nv = 1
		}
		if e.v.CompareAndSwap(old, nv) {
			return
		}
	}
}

// atLeast records a censored observation: a call cut short at d, whose
// full duration is unknown but at least d. It may raise the average, never
// lower it: calls cut short by small budgets say nothing about fast calls.
func (e *ewma) atLeast(d time.Duration) {
	if d > e.get() {
		e.observe(d)
	}
}

func (e *ewma) get() time.Duration { return time.Duration(e.v.Load()) }

// Log rate limits: a burst of logBurst lines, then one every logEvery, per
// class of lines.
const (
	logBurst = 5
	logEvery = time.Second
)

// limiters rate-limit the log lines that senders of requests can cause.
type limiters struct {
	input   limited // bad requests
	failure limited // failed lookups, sheds, timeouts, drops
	panic   limited // backend panics, logged with their stack
}

func (l *limiters) init() {
	l.input.lim = rate.NewLimiter(rate.Every(logEvery), logBurst)
	l.failure.lim = rate.NewLimiter(rate.Every(logEvery), logBurst)
	l.panic.lim = rate.NewLimiter(rate.Every(logEvery), logBurst)
}

// limited is a rate limit on a class of log lines that counts the lines it
// suppressed.
type limited struct {
	lim        *rate.Limiter
	suppressed atomic.Int64
}

// allow reports whether a line may be logged now and, if so, how many were
// suppressed since the previous one.
func (l *limited) allow() (ok bool, suppressed int64) {
	if l.lim.Allow() {
		return true, l.suppressed.Swap(0)
	}
	l.suppressed.Add(1)
	return false, 0
}
