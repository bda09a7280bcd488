package responder

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"sync"
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

// maxErrorMessage bounds the error text sent on the wire, so that a backend
// returning a huge error still gets a reply under [backend.MaxEventSize].
const maxErrorMessage = 1024

// Texts of the errors the responder itself reports.
const (
	msgPanic        = "responder: the backend panicked"
	msgInvalid      = "responder: the backend returned an invalid answer: "
	msgTooBig       = "responder: the backend's answer exceeds the event size limit"
	msgTimeout      = "responder: the backend did not answer within the time budget"
	msgShedQueue    = "responder: overloaded: the queue's expected wait exceeds the time budget"
	msgShedFull     = "responder: overloaded: the queue is full"
	msgShedStuck    = "responder: backend unavailable: too many calls overran their deadline and still run"
	msgShedDegraded = "responder: backend unavailable: its calls run into their deadlines"
	msgShedShort    = "responder: overloaded: the time budget left is shorter than the backend's usual call"
	msgExpired      = "responder: dropped: the time budget was spent before a backend call could start"
	msgNoReply      = "responder: dropped a request without a reply subject"
)

// item is a request in the responder's queue.
type item struct {
	msg    *nats.Msg
	recv   time.Time     // when the subscription's callback received it
	budget time.Duration // the time the backend may take, counted from recv
	ok     bool          // the budget header was well formed
}

// receive is the subscription's callback. It never blocks: it queues the
// request for a worker, or sheds it with a 503 reply at once when it could
// not be served within its budget.
func (s *Server) receive(msg *nats.Msg) {
	recv := time.Now()
	if s.closing() {
		s.stats.finish(outCancelled, noCode, recv, nil)
		return // Close: no reply, the requester retries elsewhere
	}
	if msg.Reply == "" {
		s.stats.finish(outNoReply, noCode, recv, nil)
		if ok, suppressed := s.logs.input.allow(); ok {
			s.log.Warn(msgNoReply, "subject", msg.Subject, "request", excerpt.Quote(msg.Data), "suppressed", suppressed)
		}
		return
	}
	budget, ok := s.budget(msg.Header)
	it := item{msg: msg, recv: recv, budget: budget, ok: ok}
	if ok && s.overloaded(budget) {
		s.shed(it, msgShedQueue)
		s.pause()
		return
	}
	select {
	case s.requests <- it:
	default:
		s.shed(it, msgShedFull)
		s.pause()
	}
}

// overloaded reports whether a request with this budget, queued now, would
// wait so long for a worker that the backend's usual call time no longer
// fits in its budget. The usual call time is an exponentially weighted
// average; calls cut short by their deadline may raise it, never lower it.
func (s *Server) overloaded(budget time.Duration) bool {
	svc := s.service.get()
	if svc <= 0 {
		return false
	}
	// Workers that could take a request now: idle ones and those not yet
	// started.
	free := s.pool.idle.Load() + int64(s.maxConc) - s.pool.running.Load()
	ahead := int64(len(s.requests)) - free
	if ahead < 0 {
		return false
	}
	wait := time.Duration(ahead+1) * (svc / time.Duration(s.maxConc))
	// A tenth of the budget is kept as a margin: the estimate knows
	// neither how far the running calls are nor how much the budget
	// shrank on the way.
	return wait+svc > budget-budget/10
}

// shed answers a request 503 at once, from the callback.
func (s *Server) shed(it item, text string) {
	r := s.begin(it)
	switch {
	case r.err != nil:
		s.badRequest(r, r.err.Error())
	case !it.ok:
		s.badBudget(r)
	default:
		s.fail(r, outShed, backend.CodeUnavailable, text)
	}
}

// request is a request being answered.
type request struct {
	msg  *nats.Msg
	recv time.Time
	id   string // the request event's id ("" when it did not decode)
	tp   string // its W3C traceparent
	req  backend.DHCPRequest
	err  error           // why it did not decode
	ctx  context.Context // carries the trace context
	span trace.Span      // nil without a TracerProvider
}

// begin decodes a request and starts its span.
func (s *Server) begin(it item) *request {
	r := &request{msg: it.msg, recv: it.recv, ctx: s.ctx}
	var ev wire.Event
	ev, r.req, r.err = wire.DecodeRequest(it.msg.Data)
	r.id = ev.ID
	r.tp = r.req.Traceparent
	if r.tp == "" {
		r.tp = ev.Traceparent
	}
	if r.tp != "" {
		r.ctx = tracectx.Extract(r.ctx, r.tp)
	}
	if s.tracer != nil {
		r.ctx, r.span = s.tracer.Start(r.ctx, "process "+s.subject,
			trace.WithSpanKind(trace.SpanKindServer),
			trace.WithTimestamp(it.recv),
			trace.WithAttributes(
				attribute.String("messaging.system", "nats"),
				attribute.String("messaging.operation.type", "process"),
				attribute.String("messaging.destination.name", s.subject),
				attribute.String("messaging.message.id", excerpt.Short(r.id)),
			))
		if len(r.req.MACAddress) > 0 {
			r.span.SetAttributes(attribute.String("tinkerbell.dhcp.mac", r.req.MACAddress.String()))
		}
	}
	return r
}

// end ends the span of r, if any.
func (r *request) end(o outcome, code int) {
	if r.span == nil {
		return
	}
	r.span.SetAttributes(attribute.String("tinkerbell.dhcp.outcome", o.String()))
	if code != noCode {
		r.span.SetAttributes(attribute.Int("tinkerbell.dhcp.code", code))
	}
	if o.failed() {
		r.span.SetStatus(codes.Error, o.String())
	}
	r.span.End()
}

// handle answers one request taken from the queue. It never panics because
// of the request or the backend. It reports whether the calling worker was
// left behind with a backend call that overran its deadline (and replaced).
func (s *Server) handle(it item) (leftBehind bool) {
	s.stats.inFlight.Add(1)
	defer func() {
		if !leftBehind { // else overrun took it out of InFlight
			s.stats.inFlight.Add(-1)
		}
	}()
	if s.closing() {
		s.stats.finish(outCancelled, noCode, it.recv, nil)
		return false
	}
	s.stats.queueWait.observe(time.Since(it.recv))
	r := s.begin(it)
	if r.err != nil {
		s.badRequest(r, r.err.Error())
		return false
	}
	if !it.ok {
		s.badBudget(r)
		return false
	}
	deadline := it.recv.Add(it.budget)
	left := time.Until(deadline)
	if left < time.Millisecond {
		// The requester has given up, or will before a backend call could
		// do anything: no reply, no call.
		s.drop(r, outExpired, msgExpired)
		return false
	}
	if s.abandoned.Load() >= int64(s.maxAbandoned) {
		s.fail(r, outShed, backend.CodeUnavailable, msgShedStuck)
		return false
	}
	// While the backend's calls run into their deadlines, and when what
	// is left of the budget is shorter than the backend's usual call, a
	// worker waiting for the call would only answer 503 later, with the
	// requester's time spent: answer now, while the requester can retry
	// elsewhere. A probe now and then finds out when the backend is back
	// and keeps the usual call time current.
	degraded, short := s.health.Load() < 0, left < s.service.get()
	if (degraded || short) && !s.probe.Allow() {
		if degraded {
			s.fail(r, outShed, backend.CodeUnavailable, msgShedDegraded)
		} else {
			s.fail(r, outShed, backend.CodeUnavailable, msgShedShort)
		}
		return false
	}
	return s.call(r, deadline, left, grace(it.budget))
}

// call is the state a worker and its watchdog share during one backend
// call: whoever comes first answers the request.
type call struct {
	mu      sync.Mutex
	started time.Time
	seq     int64 // the number of the call, in the order calls started
	ample   bool  // it had at least twice the usual call time
	done    bool  // the backend returned before the watchdog fired
	overran bool  // the watchdog fired first and answered
}

// call calls the backend for r with a deadline, and answers. A watchdog
// fires grace after the deadline: if the backend has not returned by then
// (it ignores its context), the watchdog answers 503 and replaces this
// worker, which is left behind until the backend returns.
func (s *Server) call(r *request, deadline time.Time, left, grace time.Duration) (leftBehind bool) {
	ctx, cancel := context.WithDeadline(r.ctx, deadline)
	if ctx.Err() != nil {
		// The goroutine was held up since the budget was checked.
		cancel()
		s.drop(r, outExpired, msgExpired)
		return false
	}
	// A call that runs into its deadline says the backend is timing out
	// only if it had ample time by the backend's usual standard, not when
	// its requester left it little.
	c := &call{started: time.Now(), seq: s.calls.Add(1), ample: left >= 2*s.service.get()}
	watchdog := time.AfterFunc(left+grace, func() { s.overrun(r, c) })
	d, n, err := s.lookup(ctx, r.req)
	timedOut := errors.Is(ctx.Err(), context.DeadlineExceeded)
	cancel()
	if !watchdog.Stop() {
		c.mu.Lock()
		if c.overran {
			c.mu.Unlock()
			s.abandoned.Add(-1)
			return true
		}
		c.done = true
		c.mu.Unlock()
	}
	took := time.Since(c.started)
	if timedOut {
		s.service.atLeast(took)
	} else {
		s.service.observe(took)
	}
	s.stats.backend.observe(took)
	if !timedOut || c.ample {
		s.settle(c.seq, !timedOut)
	}

	if err != nil {
		if s.closing() && errors.Is(err, context.Canceled) {
			// Close cancelled the call: stay silent, the requester retries.
			s.stats.finish(outCancelled, noCode, r.recv, nil)
			r.end(outCancelled, noCode)
			s.log.Debug("responder: lookup cancelled by Close", "mac", r.req.MACAddress.String(), "error", err)
			return false
		}
		m := backend.StatusOf(err)
		o := outError
		switch {
		case errors.Is(err, errPanic):
			// Already logged with its stack.
			m.Code, m.Message = backend.CodeInternal, msgPanic
		case m.Code == backend.CodeNotFound:
			o = outNotFound
		case m.Code == backend.CodeBadRequest:
			o = outBadRequest
		case m.Code == backend.CodeUnavailable && timedOut && errors.Is(err, context.DeadlineExceeded):
			o = outTimeout
		case m.Code == backend.CodeUnavailable:
			o = outUnavailable
		}
		s.fail(r, o, m.Code, m.Message)
		return false
	}

	m := backend.Message{DHCP: d, Netboot: n}
	if len(m.MACAddress) == 0 {
		m.MACAddress = r.req.MACAddress
	}
	if err := m.Validate(); err != nil {
		s.fail(r, outError, backend.CodeInternal, msgInvalid+err.Error())
		return false
	}
	if err := s.replies.send(s.nc, r, &m); err != nil {
		if errors.Is(err, backend.ErrTooLarge) {
			s.fail(r, outError, backend.CodeInternal, msgTooBig)
			return false
		}
		s.stats.finish(outNoReply, noCode, r.recv, err)
		r.end(outNoReply, noCode)
		if ok, suppressed := s.logs.failure.allow(); ok {
			s.log.Error("responder: sending reply", "mac", r.req.MACAddress.String(), "error", err, "suppressed", suppressed)
		}
		return false
	}
	s.stats.finish(outOK, backend.CodeOK, r.recv, nil)
	r.end(outOK, backend.CodeOK)
	if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.Debug("responder: lookup", "mac", r.req.MACAddress.String(), "ip", d.IPAddress, "duration", time.Since(r.recv))
	}
	return false
}

// overrun is the watchdog of a backend call: it answers 503 and replaces
// the worker, unless the backend returned in the meantime.
func (s *Server) overrun(r *request, c *call) {
	c.mu.Lock()
	if c.done {
		c.mu.Unlock()
		return
	}
	c.overran = true
	c.mu.Unlock()
	if c.ample {
		s.settle(c.seq, false)
	}
	s.stats.inFlight.Add(-1)
	s.abandoned.Add(1)
	s.stats.abandoned.Add(1)
	took := time.Since(c.started)
	s.service.atLeast(took)
	s.stats.backend.observe(took)
	// The worker stays with the call: another one takes its place.
	s.pool.running.Add(-1)
	s.grow()
	if s.closing() {
		s.stats.finish(outCancelled, noCode, r.recv, nil)
		r.end(outCancelled, noCode)
		return
	}
	s.fail(r, outTimeout, backend.CodeUnavailable, msgTimeout)
}

// settle records how call number seq ended: in time (ok) or at its
// deadline. The most recently started call that ended decides whether the
// backend is timing out: a call that started before the backend recovered
// and ends at its deadline afterwards says nothing about the backend now.
func (s *Server) settle(seq int64, ok bool) {
	v := seq
	if !ok {
		v = -seq
	}
	for {
		old := s.health.Load()
		if old >= seq || -old >= seq {
			return // a later call has settled it
		}
		if s.health.CompareAndSwap(old, v) {
			return
		}
	}
}

// grace is how long after its deadline a backend call is given to return
// before the watchdog answers for it: half the allowance kept for the
// reply's trip (see [replyAllowance]), so that the 503 still reaches the
// requester in time.
func grace(budget time.Duration) time.Duration {
	return min(budget/40, 25*time.Millisecond)
}

// badBudget answers 400 to a request with a malformed budget header.
func (s *Server) badBudget(r *request) {
	s.badRequest(r, fmt.Sprintf("responder: invalid %s header %q: want whole milliseconds as a decimal integer",
		backend.HeaderTimeout, excerpt.Short(r.msg.Header.Get(backend.HeaderTimeout))))
}

// badRequest answers 400 and logs a rate-limited warning with a short,
// escaped excerpt of the request.
func (s *Server) badRequest(r *request, text string) {
	text = excerpt.Cut(text, maxErrorMessage)
	s.stats.finish(outBadRequest, backend.CodeBadRequest, r.recv, errText(backend.CodeBadRequest, text))
	err := s.reply(r, backend.CodeBadRequest, text)
	r.end(outBadRequest, backend.CodeBadRequest)
	if ok, suppressed := s.logs.input.allow(); ok {
		attrs := []any{"code", backend.CodeBadRequest, "error", text, "request", excerpt.Quote(r.msg.Data), "suppressed", suppressed}
		if len(r.req.MACAddress) > 0 {
			attrs = append(attrs, "mac", r.req.MACAddress.String())
		}
		s.log.Warn("responder: bad request", attrs...)
	}
	if err != nil {
		s.sendFailed(backend.CodeBadRequest, err)
	}
}

// fail sends an error reply with outcome o and logs it: not found at debug
// level, everything else as a rate-limited warning or error.
func (s *Server) fail(r *request, o outcome, code int, text string) {
	text = excerpt.Cut(text, maxErrorMessage)
	s.stats.finish(o, code, r.recv, errText(code, text))
	err := s.reply(r, code, text)
	r.end(o, code)
	s.logFailure(r, o, code, text)
	if err != nil {
		s.sendFailed(code, err)
	}
}

// drop gives up on a request without a reply.
func (s *Server) drop(r *request, o outcome, text string) {
	s.stats.finish(o, noCode, r.recv, errors.New(text))
	r.end(o, noCode)
	s.logFailure(r, o, noCode, text)
}

func (s *Server) logFailure(r *request, o outcome, code int, text string) {
	level := slog.LevelWarn
	switch o {
	case outNotFound:
		level = slog.LevelDebug
	case outError:
		level = slog.LevelError
	}
	if !s.log.Enabled(r.ctx, level) {
		return
	}
	attrs := []any{"outcome", o.String(), "error", text}
	if code != noCode {
		attrs = append(attrs, "code", code)
	}
	if len(r.req.MACAddress) > 0 {
		attrs = append(attrs, "mac", r.req.MACAddress.String())
	}
	if level != slog.LevelDebug {
		ok, suppressed := s.logs.failure.allow()
		if !ok {
			return
		}
		attrs = append(attrs, "suppressed", suppressed)
	}
	s.log.Log(r.ctx, level, "responder: lookup failed", attrs...)
}

func (s *Server) sendFailed(code int, err error) {
	if ok, suppressed := s.logs.failure.allow(); ok {
		s.log.Error("responder: sending error reply", "code", code, "error", err, "suppressed", suppressed)
	}
}

// reply sends an error reply for r.
func (s *Server) reply(r *request, code int, text string) error {
	m := backend.Message{Error: backend.Status{Code: code, Message: text}}
	m.MACAddress = r.req.MACAddress
	return s.replies.send(s.nc, r, &m)
}

// errText is the LastError of a failure.
func errText(code int, text string) error {
	return errors.New(strconv.Itoa(code) + " " + text)
}

// errPanic marks a recovered panic of the backend.
var errPanic = errors.New("backend panicked")

// lookup calls the backend and turns a panic into errPanic, logging it with
// its stack (rate-limited).
func (s *Server) lookup(ctx context.Context, req backend.DHCPRequest) (d backend.DHCP, n backend.Netboot, err error) {
	defer func() {
		if r := recover(); r != nil {
			if ok, suppressed := s.logs.panic.allow(); ok {
				s.log.Error("responder: backend panicked", "mac", req.MACAddress.String(), "panic", excerpt.Cut(fmt.Sprint(r), maxErrorMessage),
					"stack", string(debug.Stack()), "suppressed", suppressed)
			}
			d, n, err = backend.DHCP{}, backend.Netboot{}, errPanic
		}
	}()
	return s.backend.Lookup(ctx, req)
}

// budget returns the time the backend may take, counted from when the
// request was received: the requester's budget (capped at MaxTimeout)
// minus an allowance for the reply's trip back, or the default timeout
// when the request has no budget. ok is false for a malformed header:
// anything but decimal digits.
func (s *Server) budget(h nats.Header) (d time.Duration, ok bool) {
	v := h.Get(backend.HeaderTimeout)
	if v == "" {
		return s.timeout, true
	}
	maxMS := s.maxTimeout.Milliseconds()
	var ms int64
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		if ms <= maxMS { // beyond, it is clamped: no overflow
			ms = ms*10 + int64(c-'0')
		}
	}
	if ms > maxMS {
		ms = maxMS
		s.stats.clamped.Add(1)
	}
	d = time.Duration(ms) * time.Millisecond
	return d - replyAllowance(d), true
}

// replyAllowance is the part of a requester's budget of d kept for the
// trip of the request and of the reply: 5%, at most 50 ms. The budget
// counts from when the requester sent the request, the backend's deadline
// from when the responder received it, so without it the backend could
// still be working when the requester gives up.
func replyAllowance(d time.Duration) time.Duration {
	return min(d/20, 50*time.Millisecond)
}

// replier encodes and sends replies, reusing buffers.
type replier struct {
	source string
	signer *wire.Signer // nil: unsigned replies
	ids    wire.IDs
	ok     nats.Header // header of success replies; read-only once built
	bufs   sync.Pool
}

func (r *replier) init(source string, signer *wire.Signer) {
	r.source = source
	r.signer = signer
	r.ok = nats.Header{backend.HeaderContentType: {backend.ContentType}}
	r.bufs.New = func() any { b := make([]byte, 0, 1024); return &b }
}

// send publishes a response event carrying m to the reply subject of req,
// signed when the replier has a signer. It returns an error matching
// [backend.ErrTooLarge], without sending, when a success reply exceeds
// [backend.MaxEventSize].
func (r *replier) send(nc *nats.Conn, req *request, m *backend.Message) error {
	bp := r.bufs.Get().(*[]byte)
	a := wire.Attrs{Source: r.source, Type: backend.ResponseEventType, Time: time.Now(), Traceparent: req.tp}
	var data []byte
	if r.signer == nil {
		data = wire.AppendResponse((*bp)[:0], &a, &r.ids, m)
	} else {
		var err error
		if data, err = wire.AppendSignedResponse((*bp)[:0], &a, &r.ids, m, req.id, r.signer); err != nil {
			return err
		}
	}
	defer func() {
		// nats.go copies the payload into its write buffer when publishing.
		if cap(data) <= 64<<10 {
			*bp = data[:0]
			r.bufs.Put(bp)
		}
	}()
	if len(data) > backend.MaxEventSize && m.Error.Code == backend.CodeOK {
		return fmt.Errorf("%w: reply of %d bytes", backend.ErrTooLarge, len(data))
	}
	h := r.ok
	if m.Error.Code != backend.CodeOK {
		h = nats.Header{
			backend.HeaderContentType:      {backend.ContentType},
			backend.HeaderServiceError:     {headerText(m.Error.Message)},
			backend.HeaderServiceErrorCode: {strconv.Itoa(m.Error.Code)},
		}
	}
	return nc.PublishMsg(&nats.Msg{Subject: req.msg.Reply, Header: h, Data: data})
}

// headerText makes s safe as the value of a NATS header: a backend's error
// text may hold line breaks or other control bytes, which would end the
// header line (or inject another header); they become spaces. The event
// carries the text unchanged.
func headerText(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c == 0x7f {
			b[i] = ' '
		}
	}
	return string(b)
}
