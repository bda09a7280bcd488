package nats

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/internal/excerpt"
	"github.com/tinkerbell/backend/internal/tracectx"
	"github.com/tinkerbell/backend/internal/wire"
)

// Defaults of [Config] and [RetryPolicy].
const (
	// DefaultSource is the default [Config.Source].
	DefaultSource = "/tinkerbell/dhcp"

	// DefaultTimeout is the default [Config.Timeout] of one attempt.
	DefaultTimeout = time.Second

	// DefaultMaxAttempts is the default [RetryPolicy.MaxAttempts].
	DefaultMaxAttempts = 3

	// DefaultInitialBackoff is the default [RetryPolicy.InitialBackoff].
	DefaultInitialBackoff = 20 * time.Millisecond

	// DefaultMaxBackoff is the default [RetryPolicy.MaxBackoff].
	DefaultMaxBackoff = 250 * time.Millisecond

	// DefaultHedgeDelay is the default [Config.HedgeDelay]: far above the
	// usual sub-millisecond lookup, far below the DHCP server's deadline
	// and the ~4 s after which DHCP clients retransmit.
	DefaultHedgeDelay = 50 * time.Millisecond

	// DefaultInboxPrefix is the default [Config.InboxPrefix], nats.go's.
	DefaultInboxPrefix = "_INBOX"
)

// Config configures a [Backend]. Only Conn is required; every other zero
// field takes the default its comment names.
type Config struct {
	// Conn is the NATS connection lookups are sent on. The caller owns it.
	Conn *nats.Conn

	// Subject is where lookups are sent; default [backend.DefaultSubject].
	Subject string

	// SubjectPrefix, when set, is prepended to Subject with a dot, so that
	// tenants sharing a NATS account stay apart ("site-a" →
	// "site-a.tinkerbell.dhcp.backend").
	SubjectPrefix string

	// Source is the CloudEvents source attribute of requests; default
	// [DefaultSource].
	Source string

	// Timeout bounds each attempt; default [DefaultTimeout], well under
	// the ~4 s a DHCP client waits before retransmitting. The caller's
	// context deadline bounds the whole lookup and is shared among the
	// attempts: each attempt gets at most the time left divided by the
	// attempts left, so that all of them fit. Without a deadline a lookup
	// lasts at most MaxAttempts × Timeout. It must be at least a
	// millisecond, the unit of [backend.HeaderTimeout].
	Timeout time.Duration

	// Retry says how lookups are retried after a timeout, a 503 reply or
	// when no responder is listening. Retries never go past the caller's
	// deadline.
	Retry RetryPolicy

	// HedgeDelay is how long an attempt waits for a reply before it sends
	// the same request again (a hedged request: the queue group usually
	// gives it to another responder), and again after each further
	// HedgeDelay, until the attempt ends; the first valid reply to any of
	// them answers the lookup. Default [DefaultHedgeDelay]; negative
	// disables hedging. Hedges are also off when MaxAttempts is 1. They
	// are budgeted: at most one hedge per lookup on average, in bursts of
	// at most 100, so that a backend that is slow for everybody does not
	// get more than twice its load.
	HedgeDelay time.Duration

	// InboxPrefix is the prefix of the subjects replies come back on:
	// each Backend subscribes to <InboxPrefix>.<unique id>.> and nothing
	// else. Give each DHCP server its own prefix (and subscribe permission
	// on it only; see the README's security section) so that no DHCP
	// server can read another's replies. Default: the connection's
	// nats.CustomInboxPrefix, or [DefaultInboxPrefix].
	InboxPrefix string

	// TrustedKeys, when set, are the nkeys public keys ("U…") whose
	// signatures the Backend accepts: a reply that is unsigned, signed by
	// another key or whose signature does not match the request and the
	// data is rejected with an error matching [backend.ErrBadSignature]
	// (and counted as [OutcomeBadSignature]) and the request is sent
	// again after a backoff while the lookup's time lasts, since another
	// responder may be the real one. Responders sign with the seed of one of these keys (package
	// responder). This protects the boot decision even when NATS
	// permissions are wrong. Off by default.
	TrustedKeys []string

	// TracerProvider, when set, makes each lookup an OpenTelemetry span of
	// kind client, with its requests as span events; the responder's span
	// becomes its child. Nil means no tracing, at no cost.
	TracerProvider trace.TracerProvider

	// Logger receives debug lines for retries; nil discards them.
	Logger *slog.Logger
}

// RetryPolicy configures retries of one lookup. Backoff between attempts
// doubles from InitialBackoff up to MaxBackoff, with jitter.
type RetryPolicy struct {
	// MaxAttempts is the number of attempts in all; default
	// [DefaultMaxAttempts]. An attempt ends when its share of the time is
	// up or when its replies say 503 (unavailable); the next one starts
	// then. "No responders" does not use up attempts: the request is sent
	// again after a backoff for as long as the lookup's time lasts. 1
	// disables retries and hedges: then exactly one request is sent,
	// again only after "no responders".
	MaxAttempts int

	// InitialBackoff is the wait before the second attempt; default
	// [DefaultInitialBackoff].
	InitialBackoff time.Duration

	// MaxBackoff caps the wait between attempts; default
	// [DefaultMaxBackoff].
	MaxBackoff time.Duration
}

// Backend is a [backend.Backend] that asks over NATS. It is safe for
// concurrent use; create it with [New].
type Backend struct {
	subject  string
	source   string
	timeout  time.Duration
	attempts int
	backoff  time.Duration
	maxBack  time.Duration
	hedge    time.Duration // 0: no hedging
	log      *slog.Logger
	tracer   trace.Tracer // nil: no tracing
	ids      wire.IDs
	mux      *mux
	stats    stats
	tokens   atomic.Int64             // hedge budget, in thousandths of a hedge
	p90      atomic.Int64             // estimated 90th percentile of the reply time, in ns
	trusted  func(signer string) bool // nil: replies need no signature
	warned   atomic.Int64             // when the last rate-limited warning was logged, in Unix ns
}

// warnNow reports whether a rate-limited warning may be logged at now: at
// most one a second, so that whoever sends bad replies cannot flood the
// log; [Stats] counts them all.
func (b *Backend) warnNow(now time.Time) bool {
	last := b.warned.Load()
	return now.UnixNano()-last >= int64(time.Second) && b.warned.CompareAndSwap(last, now.UnixNano())
}

var _ backend.Backend = (*Backend)(nil)

// The hedge budget: each lookup adds hedgeDeposit, each hedge takes
// hedgeCost, up to hedgeBurst.
const (
	hedgeCost    = 1000
	hedgeDeposit = 1000
	hedgeBurst   = 500 * hedgeCost
)

// The reply-time estimate that hedges wait for: hedges wait at least
// hedgeFactor times the estimated 90th percentile of the time a reply
// takes, so that a system that is slow for everybody (an overloaded
// machine, a slow backend) is not asked twice.
const (
	hedgeFactor = 3
	minP90      = int64(100 * time.Microsecond)
	// maxAdaptiveHedge caps what the estimate adds, so that hedges still
	// route around a frozen replica when everything is slow (the budget
	// bounds the extra load).
	maxAdaptiveHedge = 250 * time.Millisecond
)

// New validates cfg, subscribes to the Backend's reply subjects on
// cfg.Conn and returns the Backend. Errors wrap [backend.ErrInvalidConfig],
// or are the connection's when it cannot subscribe.
//
// When the connection is not TLS and its server is not on a loopback
// address, New logs a warning: anyone on the path can then read lookups
// and forge answers.
func New(cfg Config) (*Backend, error) {
	if cfg.Conn == nil {
		return nil, fmt.Errorf("%w: nats: Conn is nil", backend.ErrInvalidConfig)
	}
	b := &Backend{
		subject:  backend.Subject(cfg.SubjectPrefix, cfg.Subject),
		source:   cfg.Source,
		timeout:  cfg.Timeout,
		attempts: cfg.Retry.MaxAttempts,
		backoff:  cfg.Retry.InitialBackoff,
		maxBack:  cfg.Retry.MaxBackoff,
		hedge:    cfg.HedgeDelay,
		log:      cfg.Logger,
	}
	if !wire.ValidSubject(b.subject) {
		return nil, fmt.Errorf("%w: nats: invalid subject %q", backend.ErrInvalidConfig, b.subject)
	}
	if b.source == "" {
		b.source = DefaultSource
	}
	if !wire.ValidSource(b.source) {
		return nil, fmt.Errorf("%w: nats: Source %q is not a URI reference", backend.ErrInvalidConfig, b.source)
	}
	switch {
	case b.timeout < 0 || b.attempts < 0 || b.backoff < 0 || b.maxBack < 0:
		return nil, fmt.Errorf("%w: nats: negative timeout, attempts or backoff", backend.ErrInvalidConfig)
	}
	if b.timeout == 0 {
		b.timeout = DefaultTimeout
	}
	if b.timeout < time.Millisecond {
		// The responder learns the budget in whole milliseconds.
		return nil, fmt.Errorf("%w: nats: Timeout %v is under a millisecond", backend.ErrInvalidConfig, b.timeout)
	}
	if b.attempts == 0 {
		b.attempts = DefaultMaxAttempts
	}
	if b.backoff == 0 {
		b.backoff = DefaultInitialBackoff
	}
	if b.maxBack == 0 {
		b.maxBack = DefaultMaxBackoff
	}
	switch {
	case b.hedge == 0:
		b.hedge = DefaultHedgeDelay
	case b.hedge < 0:
		b.hedge = 0
	}
	if b.attempts == 1 {
		b.hedge = 0
	}
	prefix := cfg.InboxPrefix
	if prefix == "" {
		prefix = strings.TrimSuffix(cfg.Conn.Opts.InboxPrefix, ".")
	}
	if prefix == "" {
		prefix = DefaultInboxPrefix
	}
	if !wire.ValidSubject(prefix) {
		return nil, fmt.Errorf("%w: nats: invalid InboxPrefix %q", backend.ErrInvalidConfig, prefix)
	}
	if len(cfg.TrustedKeys) > 0 {
		trusted, err := wire.TrustedKeys(cfg.TrustedKeys...)
		if err != nil {
			return nil, fmt.Errorf("nats: TrustedKeys: %w", err)
		}
		b.trusted = trusted
	}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	if cfg.TracerProvider != nil {
		b.tracer = cfg.TracerProvider.Tracer("github.com/tinkerbell/backend/nats")
	}
	b.tokens.Store(hedgeBurst)
	b.p90.Store(minP90)
	// nats.NewInbox is "_INBOX.<nuid>": borrow its unique part.
	unique := strings.TrimPrefix(nats.NewInbox(), nats.InboxPrefix)
	m, err := newMux(cfg.Conn, b.subject, prefix+"."+unique)
	if err != nil {
		return nil, fmt.Errorf("nats: subscribing to replies: %w", err)
	}
	b.mux = m
	if warn := insecure(cfg.Conn); warn != "" {
		b.log.Warn("nats backend: lookups and their answers cross the network in clear text: anyone on the path can read them and forge answers that decide what machines boot; use TLS",
			"server", warn, "subject", b.subject)
	}
	return b, nil
}

// insecure returns the server's address when nc is connected to a server
// that is not on a loopback address without TLS, and "" otherwise.
func insecure(nc *nats.Conn) string {
	if nc.Opts.InProcessServer != nil {
		return ""
	}
	_, err := nc.TLSConnectionState()
	return insecureURL(nc.ConnectedUrlRedacted(), err == nil)
}

// insecureURL returns u when a connection to it without TLS crosses a
// network, and "" otherwise.
func insecureURL(u string, tls bool) string {
	if tls || u == "" {
		return ""
	}
	pu, err := url.Parse(u)
	if err != nil {
		return u
	}
	if pu.Scheme == "tls" {
		return ""
	}
	host := pu.Hostname()
	if host == "localhost" {
		return ""
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsLoopback() {
		return ""
	}
	return u
}

// Subject returns the subject lookups are sent to.
func (b *Backend) Subject() string { return b.subject }

// Inbox returns the subject prefix the Backend receives replies under:
// <InboxPrefix>.<unique id>.
func (b *Backend) Inbox() string { return b.mux.inbox }

// Close unsubscribes from the reply subjects. Lookups in flight and later
// fail with an error matching [backend.ErrUnavailable]. It does not touch
// the connection. Close is needed only when Backends come and go on a
// connection that stays.
func (b *Backend) Close() error { return b.mux.close() }

// Lookup asks the responders on the subject for req's reservation, within
// the deadline of ctx (or MaxAttempts × Timeout without one), and returns
// by then whatever the connection does. See the package doc for retries
// and hedged requests.
//
// Errors: [backend.ErrNotFound] and the other codes a responder sends, as a
// [*backend.RemoteError] (see the package doc); [backend.ErrNoBackend] when
// nobody listens (matching ctx.Err() too when ctx ended while a retry
// after NATS' "no responders" was on its way); [backend.ErrUnavailable]
// when no reply came in time, the
// responders said 503 on every attempt or the connection failed; an error
// matching both [backend.ErrUnavailable] and ctx.Err() ([context.Canceled]
// or [context.DeadlineExceeded]) when ctx ends first; and an error
// matching [backend.ErrInvalidMessage] (a [*backend.FieldError] or
// [*backend.SyntaxError], possibly [backend.ErrTooLarge]) when the only
// replies were not valid response events or answered for another client.
func (b *Backend) Lookup(ctx context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
	start := time.Now()
	var span trace.Span
	if b.tracer != nil {
		ctx, span = b.tracer.Start(ctx, "lookup "+b.subject, trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(
				attribute.String("messaging.system", "nats"),
				attribute.String("messaging.destination.name", b.subject),
				attribute.String("messaging.operation.type", "send"),
				clientAttr(&req),
			))
	}
	r := b.lookup(ctx, &req, start, span)
	b.stats.finish(r.outcome, r.code, time.Since(start))
	if span != nil {
		span.SetAttributes(attribute.String("outcome", string(r.outcome)))
		if r.code != 0 {
			span.SetAttributes(attribute.Int("code", r.code))
		}
		if r.err != nil && r.outcome != OutcomeNotFound {
			span.SetStatus(codes.Error, r.err.Error())
		}
		span.End()
	}
	return r.msg.DHCP, r.msg.Netboot, r.err
}

// clientKey and clientValue are the log key and value of the client a
// lookup asks about: "mac" or "ip".
func clientKey(req *backend.DHCPRequest) string {
	if req.ByIP() {
		return "ip"
	}
	return "mac"
}

func clientValue(req *backend.DHCPRequest) string {
	if req.ByIP() {
		return req.IPAddress.String()
	}
	return req.MACAddress.String()
}

func clientAttr(req *backend.DHCPRequest) attribute.KeyValue {
	return attribute.String(clientKey(req), clientValue(req))
}

// outcome is the result of one lookup with what [Stats] counts.
type outcome struct {
	msg     backend.Message
	err     error
	outcome Outcome
	code    int // the error code of the reply that ended the lookup
}

// lookupState is the bookkeeping of one lookup's requests.
type lookupState struct {
	b          *Backend
	ctx        context.Context
	c          *call
	span       trace.Span
	end        time.Time // the lookup's end: the caller's deadline or MaxAttempts × Timeout
	ctxEnd     bool      // end is the caller's deadline
	attempt    int       // attempts started
	attemptEnd time.Time
	tries      int          // requests queued
	sent       [8]time.Time // when the first requests were queued
	hedged     uint64       // bit n: request n was a hedge
	pending    int          // requests queued and not yet answered
	nextHedge  time.Time
	retryAt    time.Time // zero: no retry scheduled
	retryNew   bool      // the scheduled retry starts a new attempt
	wait       time.Duration
	lastErr    error // why the last request failed
	lastOut    Outcome
	lastCode   int
}

func (b *Backend) lookup(ctx context.Context, req *backend.DHCPRequest, start time.Time, span trace.Span) outcome {
	if err := req.Validate(); err != nil {
		return outcome{err: err, outcome: OutcomeBadRequest}
	}
	if tp := tracectx.Traceparent(ctx); tp != "" {
		req.Traceparent = tp
	}
	if ctx.Err() != nil {
		return b.ctxOutcome(ctx)
	}
	c, err := b.mux.get()
	if err != nil {
		return outcome{err: fmt.Errorf("%w: %w", backend.ErrUnavailable, err), outcome: OutcomeUnavailable}
	}
	defer b.mux.finish(c)
	attrs := wire.Attrs{Source: b.source, Type: backend.RequestEventType, Time: start, Traceparent: req.Traceparent}
	c.buf = wire.AppendRequest(c.buf[:0], &attrs, &b.ids, req)
	b.deposit()

	s := lookupState{b: b, ctx: ctx, c: c, span: span, wait: min(b.backoff, b.maxBack)}
	s.end = start.Add(time.Duration(b.attempts) * b.timeout)
	if dl, ok := ctx.Deadline(); ok && !dl.After(s.end) {
		s.end, s.ctxEnd = dl, true
	}
	if o, done := s.startAttempt(start); done {
		return o
	}
	for {
		wake := s.attemptEnd
		if !s.retryAt.IsZero() && s.retryAt.Before(wake) {
			wake = s.retryAt
		}
		if !s.nextHedge.IsZero() && s.nextHedge.Before(wake) {
			wake = s.nextHedge
		}
		c.timer.Reset(time.Until(wake))
		select {
		case <-ctx.Done():
			return s.ctxEnded()
		case d := <-c.ch:
			if o, done := s.handle(d, req); done {
				return o
			}
		case <-c.timer.C:
		}
		if o, done := s.timers(time.Now()); done {
			return o
		}
	}
}

// startAttempt starts the next attempt with a request.
func (s *lookupState) startAttempt(now time.Time) (outcome, bool) {
	b := s.b
	s.attempt++
	share := s.end.Sub(now) / time.Duration(b.attempts-s.attempt+1)
	s.attemptEnd = now.Add(min(b.timeout, share))
	s.retryAt = time.Time{}
	if s.attemptEnd.Sub(now) < time.Millisecond {
		// No time left for a request the responder could serve.
		return s.expired(), true
	}
	if s.attempt > 1 {
		b.stats.retries.Add(1)
	}
	return s.send(now, "attempt")
}

// send queues a request and schedules the next hedge.
func (s *lookupState) send(now time.Time, kind string) (outcome, bool) {
	b := s.b
	try := s.tries
	if err := b.mux.send(s.c, try, s.attemptEnd); err != nil {
		s.lastErr, s.lastOut, s.lastCode = err, OutcomeUnavailable, 0
	} else {
		if try < len(s.sent) {
			s.sent[try] = now
		}
		s.tries++
		s.pending++
		b.stats.requests.Add(1)
		if kind == "hedge" && try < 64 {
			s.hedged |= 1 << try
		}
	}
	if s.span != nil {
		s.span.AddEvent(kind, trace.WithAttributes(attribute.Int("request", try), attribute.Int("attempt", s.attempt)))
	}
	s.scheduleHedge(now)
	return outcome{}, false
}

// scheduleHedge sets the time of the next hedge, if one fits in the
// attempt.
func (s *lookupState) scheduleHedge(now time.Time) {
	s.nextHedge = time.Time{}
	if d := s.b.hedgeDelay(); d > 0 && now.Add(d).Before(s.attemptEnd) {
		s.nextHedge = now.Add(d)
	}
}

// hedgeDelay is the configured delay, or longer when replies are slow for
// everybody.
func (b *Backend) hedgeDelay() time.Duration {
	if b.hedge == 0 {
		return 0
	}
	return max(b.hedge, min(hedgeFactor*time.Duration(b.p90.Load()), maxAdaptiveHedge))
}

// observe feeds the time a reply took into the estimate of its 90th
// percentile: a frugal streaming estimate that moves up by 9 steps when a
// reply is slower and down by one when it is faster, each step 1/64 of the
// estimate. Concurrent updates may be lost, which only slows it down.
func (b *Backend) observe(d time.Duration) {
	q := b.p90.Load()
	step := max(q/64, 1)
	if int64(d) > q {
		q += 9 * step
	} else {
		q = max(q-step, minP90)
	}
	b.p90.Store(q)
}

// timers acts on what is due at now: the end of the attempt, a retry, a
// hedge.
func (s *lookupState) timers(now time.Time) (outcome, bool) {
	b := s.b
	if !now.Before(s.attemptEnd) {
		if s.attempt < b.attempts && now.Before(s.end) {
			if s.lastOut == "" || s.lastOut == OutcomeTimeout {
				s.lastErr, s.lastOut = nats.ErrTimeout, OutcomeTimeout
			}
			return s.startAttempt(now)
		}
		return s.giveUp(), true
	}
	if !s.retryAt.IsZero() && !now.Before(s.retryAt) {
		s.retryAt = time.Time{}
		if s.retryNew {
			return s.startAttempt(now)
		}
		b.stats.retries.Add(1)
		return s.send(now, "retry")
	}
	if !s.nextHedge.IsZero() && !now.Before(s.nextHedge) {
		s.nextHedge = time.Time{}
		if s.pending == 0 || !s.retryAt.IsZero() {
			return outcome{}, false
		}
		if !b.takeHedge() {
			b.stats.hedgesDenied.Add(1)
			s.scheduleHedge(now)
			return outcome{}, false
		}
		b.stats.hedges.Add(1)
		return s.send(now, "hedge")
	}
	return outcome{}, false
}

// handle acts on a reply or a failed publication.
func (s *lookupState) handle(d delivery, req *backend.DHCPRequest) (outcome, bool) {
	b := s.b
	s.pending = max(0, s.pending-1)
	now := time.Now()
	switch {
	case d.err != nil:
		if !errors.Is(d.err, nats.ErrReconnectBufExceeded) {
			return outcome{err: fmt.Errorf("%w: nats: lookup on %q: %w", backend.ErrUnavailable, b.subject, d.err), outcome: OutcomeUnavailable}, true
		}
		s.lastErr, s.lastOut, s.lastCode = d.err, OutcomeUnavailable, 0
		return outcome{}, false
	case noResponders(d.msg):
		b.stats.noResponders.Add(1)
		s.lastErr, s.lastOut, s.lastCode = nats.ErrNoResponders, OutcomeNoBackend, 0
		if s.pending > 0 || !s.retryAt.IsZero() {
			return outcome{}, false
		}
		return s.retryAfterBackoff(now, false)
	}
	if d.try < len(s.sent) && !s.sent[d.try].IsZero() {
		b.observe(now.Sub(s.sent[d.try]))
	}
	m, err := b.decodeReply(d.msg, s.c.buf)
	if errors.Is(err, backend.ErrBadSignature) {
		b.stats.rejected.Add(1)
		if b.warnNow(now) {
			b.log.WarnContext(s.ctx, "nats backend: rejected a reply not signed by a trusted key: someone else is answering lookups",
				"subject", b.subject, clientKey(req), clientValue(req), "error", err, "rejected", b.stats.rejected.Load())
		}
		s.lastErr, s.lastOut, s.lastCode = fmt.Errorf("nats: reply from %q: %w", b.subject, err), OutcomeBadSignature, 0
		if s.pending > 0 || !s.retryAt.IsZero() {
			return outcome{}, false
		}
		// Another responder may be the real one: ask again while time
		// lasts, as after "no responders".
		return s.retryAfterBackoff(now, false)
	}
	var merr error
	if err == nil && m.Error.Code == backend.CodeOK {
		merr = mismatch(req, &m.DHCP)
	}
	if merr != nil {
		// An answer to another question: a confused responder, or someone
		// who sent a lookup with our reply subject. Ask again while time
		// lasts; the real answer may still come.
		b.stats.rejected.Add(1)
		s.lastErr, s.lastOut, s.lastCode = fmt.Errorf("nats: reply from %q is for another client: %w", b.subject, merr), OutcomeInvalidReply, 0
		if s.pending > 0 || !s.retryAt.IsZero() {
			return outcome{}, false
		}
		return s.retryAfterBackoff(now, false)
	}
	if err != nil {
		b.stats.rejected.Add(1)
		b.log.DebugContext(s.ctx, "nats backend: rejected a reply", "subject", b.subject, clientKey(req), clientValue(req), "error", err)
		s.lastErr, s.lastOut, s.lastCode = err, OutcomeInvalidReply, 0
		if s.pending > 0 {
			return outcome{}, false // another request may still get a valid reply
		}
		return outcome{err: err, outcome: OutcomeInvalidReply}, true
	}
	switch code := m.Error.Code; code {
	case backend.CodeOK:
		if d.try < 64 && s.hedged&(1<<d.try) != 0 {
			b.stats.hedgeWins.Add(1)
		}
		return outcome{msg: m, outcome: OutcomeOK}, true
	case backend.CodeUnavailable:
		// This replica cannot serve now; another one may.
		s.lastErr, s.lastOut, s.lastCode = m.Error.Err(), OutcomeRemoteError, code
		if s.pending > 0 || !s.retryAt.IsZero() {
			return outcome{}, false
		}
		if s.attempt >= b.attempts {
			return s.giveUp(), true
		}
		return s.retryAfterBackoff(now, true)
	case backend.CodeNotFound:
		return outcome{err: m.Error.Err(), outcome: OutcomeNotFound, code: code}, true
	default:
		return outcome{err: m.Error.Err(), outcome: OutcomeRemoteError, code: code}, true
	}
}

// retryAfterBackoff schedules the next request after a jittered backoff, or
// gives up when it would not fit in the lookup's time.
func (s *lookupState) retryAfterBackoff(now time.Time, newAttempt bool) (outcome, bool) {
	// Jitter in [wait/2, wait], so that requesters that lost a responder
	// at the same moment do not retry in lockstep.
	d := s.wait/2 + rand.N(s.wait/2+1)
	s.wait = min(2*s.wait, s.b.maxBack)
	if !now.Add(d).Before(s.end) {
		return s.giveUp(), true
	}
	s.b.log.DebugContext(s.ctx, "nats backend: retrying lookup", "subject", s.b.subject, "attempt", s.attempt, "error", s.lastErr, "backoff", d)
	s.retryAt, s.retryNew = now.Add(d), newAttempt
	s.nextHedge = time.Time{}
	return outcome{}, false
}

// giveUp ends a lookup that got no answer: the error says why the last
// request failed.
func (s *lookupState) giveUp() outcome {
	switch s.lastOut {
	case OutcomeNoBackend:
		return s.noBackend()
	case OutcomeRemoteError:
		return outcome{err: s.lastErr, outcome: OutcomeRemoteError, code: s.lastCode}
	case OutcomeInvalidReply, OutcomeBadSignature:
		return outcome{err: s.lastErr, outcome: s.lastOut}
	case OutcomeUnavailable:
		return outcome{err: fmt.Errorf("%w: nats: lookup on %q: %w", backend.ErrUnavailable, s.b.subject, s.lastErr), outcome: OutcomeUnavailable}
	}
	return s.expired()
}

func (s *lookupState) noBackend() outcome {
	return outcome{err: fmt.Errorf("%w: nats: no responders on %q after %d requests", backend.ErrNoBackend, s.b.subject, s.tries), outcome: OutcomeNoBackend}
}

// expired is the error of a lookup whose time ran out without a reply.
func (s *lookupState) expired() outcome {
	if s.ctxEnd {
		if s.ctx.Err() != nil {
			return s.ctxEnded()
		}
		// Our timer fired a hair before the context's.
		return outcome{err: fmt.Errorf("%w: nats: lookup on %q: %w", backend.ErrUnavailable, s.b.subject, context.DeadlineExceeded), outcome: OutcomeTimeout}
	}
	return outcome{err: fmt.Errorf("%w: nats: lookup on %q failed after %d attempts: %w: no reply within %v",
		backend.ErrUnavailable, s.b.subject, s.attempt, nats.ErrTimeout, s.b.timeout), outcome: OutcomeTimeout}
}

// ctxEnded is the result of a lookup whose context ended. When the last
// reply was rejected for its signature, that is what the caller hears
// about (wrapped with the context's error): a forged answer must not look
// like a slow backend, whether our timer or the context's fired first.
func (s *lookupState) ctxEnded() outcome {
	switch {
	case s.lastOut == OutcomeNoBackend && s.pending == 0:
		return s.noBackend()
	case s.lastOut == OutcomeNoBackend:
		// The time ran out while a retry was on its way: NATS said "no
		// responders" to the one before, and no one answered since.
		o := s.noBackend()
		o.err = fmt.Errorf("%w: %w", o.err, s.ctx.Err())
		return o
	case s.lastOut == OutcomeBadSignature:
		return outcome{err: fmt.Errorf("%w: %w", s.lastErr, s.ctx.Err()), outcome: OutcomeBadSignature}
	}
	return s.b.ctxOutcome(s.ctx)
}

// ctxOutcome is the result of a lookup whose context ended: its error
// matches [backend.ErrUnavailable], ctx.Err() and the context's cause.
func (b *Backend) ctxOutcome(ctx context.Context) outcome {
	err, cause := ctx.Err(), context.Cause(ctx)
	o := OutcomeTimeout
	if errors.Is(err, context.Canceled) {
		o = OutcomeCanceled
	}
	if cause != nil && cause != err {
		return outcome{err: fmt.Errorf("%w: nats: lookup on %q: %w: %w", backend.ErrUnavailable, b.subject, err, cause), outcome: o}
	}
	return outcome{err: fmt.Errorf("%w: nats: lookup on %q: %w", backend.ErrUnavailable, b.subject, err), outcome: o}
}

// deposit adds a lookup's share to the hedge budget.
func (b *Backend) deposit() {
	if b.hedge == 0 || b.tokens.Load() >= hedgeBurst {
		return
	}
	if b.tokens.Add(hedgeDeposit) > hedgeBurst {
		b.tokens.Store(hedgeBurst) // a race here only rounds the budget
	}
}

// takeHedge takes a hedge from the budget.
func (b *Backend) takeHedge() bool {
	for {
		n := b.tokens.Load()
		if n < hedgeCost {
			return false
		}
		if b.tokens.CompareAndSwap(n, n-hedgeCost) {
			return true
		}
	}
}

// decodeReply turns a reply into a Message, which may carry an error code.
// A reply without an event body but with NATS micro error headers is the
// error those headers describe. With trusted keys, the reply must be an
// event signed by one of them for the request event in req.
func (b *Backend) decodeReply(reply *nats.Msg, req []byte) (backend.Message, error) {
	if b.trusted != nil {
		ev, m, err := wire.DecodeResponse(reply.Data)
		if err != nil {
			if !looksLikeEvent(reply.Data) {
				// Micro error headers alone carry no signature.
				return backend.Message{}, wire.ErrUnsigned
			}
			return backend.Message{}, fmt.Errorf("nats: invalid reply %s: %w", excerpt.Quote(reply.Data), err)
		}
		if err := wire.VerifyEvent(b.trusted, requestID(req), &ev); err != nil {
			return backend.Message{}, err
		}
		return m, nil
	}
	if looksLikeEvent(reply.Data) {
		return decodeEvent(reply.Data)
	}
	code, text := reply.Header.Get(backend.HeaderServiceErrorCode), reply.Header.Get(backend.HeaderServiceError)
	if code != "" || text != "" {
		n, err := strconv.Atoi(code)
		if err != nil || n <= 0 {
			// A micro error without a usable code is still an error.
			n = backend.CodeInternal
		}
		return backend.Message{Error: backend.Status{Code: n, Message: text}}, nil
	}
	return decodeEvent(reply.Data)
}

// decodeEvent decodes a response event.
func decodeEvent(data []byte) (backend.Message, error) {
	_, m, err := wire.DecodeResponse(data)
	if err != nil {
		return backend.Message{}, fmt.Errorf("nats: invalid reply %s: %w", excerpt.Quote(data), err)
	}
	return m, nil
}

// mismatch reports an answer that does not answer req (see
// [backend.DHCPRequest.Match]), naming the field as it is in the event.
func mismatch(req *backend.DHCPRequest, h *backend.DHCP) error {
	err := req.Match(h)
	var fe *backend.FieldError
	if errors.As(err, &fe) {
		return &backend.FieldError{Field: "data." + fe.Field, Value: fe.Value, Err: fe.Err}
	}
	return err
}

// requestID returns the id attribute of the request event req, which
// [wire.AppendRequest] writes first, unescaped.
func requestID(req []byte) string {
	const head = `{"specversion":"1.0","id":"`
	if !bytes.HasPrefix(req, []byte(head)) {
		return ""
	}
	rest := req[len(head):]
	if i := bytes.IndexByte(rest, '"'); i >= 0 {
		return string(rest[:i])
	}
	return ""
}

func looksLikeEvent(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}
