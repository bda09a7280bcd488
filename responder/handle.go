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
	msgPanic   = "responder: the backend panicked"
	msgInvalid = "responder: the backend returned an invalid answer: "
	msgTooBig  = "responder: the backend's answer exceeds the event size limit"
)

// handle answers one request. It never panics because of the request or
// the backend.
func (s *Server) handle(msg *nats.Msg) {
	start := time.Now()
	s.stats.inFlight.Add(1)
	defer s.stats.inFlight.Add(-1)

	if msg.Reply == "" {
		s.stats.done(start, "request without a reply subject")
		s.log.Warn("responder: dropping a request without a reply subject", "subject", msg.Subject)
		return
	}
	ev, req, err := wire.DecodeRequest(msg.Data)
	if err != nil {
		s.fail(msg, start, "", nil, backend.CodeBadRequest, err.Error(), slog.LevelWarn)
		return
	}
	tp := req.Traceparent
	if tp == "" {
		tp = ev.Traceparent
	}
	budget, ok := s.budget(msg.Header)
	if !ok {
		s.fail(msg, start, tp, req.MACAddress, backend.CodeBadRequest,
			fmt.Sprintf("responder: invalid %s header %q", backend.HeaderTimeout, msg.Header.Get(backend.HeaderTimeout)), slog.LevelWarn)
		return
	}

	ctx, cancel := context.WithDeadline(s.ctx, start.Add(budget))
	if tp != "" {
		ctx = tracectx.Extract(ctx, tp)
	}
	d, n, err := s.lookup(ctx, req)
	cancel()

	if err != nil {
		if s.closing() && errors.Is(err, context.Canceled) {
			// Close cancelled the call: stay silent, the requester retries.
			s.stats.done(start, "cancelled by Close")
			s.log.Debug("responder: lookup cancelled by Close", "mac", req.MACAddress.String(), "error", err)
			return
		}
		m := backend.StatusOf(err)
		level := slog.LevelError
		switch {
		case errors.Is(err, errPanic):
			// Already logged with its stack.
			m.Code, m.Message, level = backend.CodeInternal, msgPanic, slog.LevelDebug
		case m.Code == backend.CodeNotFound:
			level = slog.LevelDebug
		case m.Code == backend.CodeUnavailable, m.Code == backend.CodeBadRequest:
			level = slog.LevelWarn
		}
		s.fail(msg, start, tp, req.MACAddress, m.Code, m.Message, level)
		return
	}

	m := backend.Message{DHCP: d, Netboot: n}
	if len(m.MACAddress) == 0 {
		m.MACAddress = req.MACAddress
	}
	if err := m.Validate(); err != nil {
		s.fail(msg, start, tp, req.MACAddress, backend.CodeInternal, msgInvalid+err.Error(), slog.LevelError)
		return
	}
	if err := s.replies.send(s.nc, msg.Reply, tp, &m); err != nil {
		if errors.Is(err, backend.ErrTooLarge) {
			s.fail(msg, start, tp, req.MACAddress, backend.CodeInternal, msgTooBig, slog.LevelError)
			return
		}
		s.stats.done(start, err.Error())
		s.log.Error("responder: sending reply", "mac", req.MACAddress.String(), "error", err)
		return
	}
	s.stats.done(start, "")
	if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.Debug("responder: lookup", "mac", req.MACAddress.String(), "ip", d.IPAddress, "duration", time.Since(start))
	}
}

// fail sends an error reply and logs one line at level.
func (s *Server) fail(msg *nats.Msg, start time.Time, tp string, mac []byte, code int, text string, level slog.Level) {
	text = excerpt.Cut(text, maxErrorMessage)
	m := backend.Message{Error: backend.Status{Code: code, Message: text}}
	m.MACAddress = mac
	s.stats.done(start, strconv.Itoa(code)+" "+text)
	err := s.replies.send(s.nc, msg.Reply, tp, &m)
	if s.log.Enabled(context.Background(), level) {
		attrs := []any{"code", code, "error", text}
		if len(mac) > 0 {
			attrs = append(attrs, "mac", m.MACAddress.String())
		}
		if code == backend.CodeBadRequest {
			attrs = append(attrs, "request", excerpt.Quote(msg.Data))
		}
		s.log.Log(context.Background(), level, "responder: lookup failed", attrs...)
	}
	if err != nil {
		s.log.Error("responder: sending error reply", "code", code, "error", err)
	}
}

// errPanic marks a recovered panic of the backend.
var errPanic = errors.New("backend panicked")

// lookup calls the backend and turns a panic into errPanic, logging it with
// its stack.
func (s *Server) lookup(ctx context.Context, req backend.DHCPRequest) (d backend.DHCP, n backend.Netboot, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("responder: backend panicked", "mac", req.MACAddress.String(), "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			d, n, err = backend.DHCP{}, backend.Netboot{}, errPanic
		}
	}()
	return s.backend.Lookup(ctx, req)
}

// budget returns the time the backend may take: the requester's budget
// minus an allowance for the reply's trip back, or the default timeout when
// the request has no budget. ok is false for a malformed header.
func (s *Server) budget(h nats.Header) (time.Duration, bool) {
	v := h.Get(backend.HeaderTimeout)
	if v == "" {
		return s.timeout, true
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms < 0 || ms > int64(time.Duration(1<<63-1)/time.Millisecond) {
		return 0, false
	}
	d := time.Duration(ms) * time.Millisecond
	return d - replyAllowance(d), true
}

// replyAllowance is the part of a requester's budget of d kept for the
// trip of the request and of the reply: 5%, at most 50 ms. The budget
// counts from when the requester sent the request, the backend's deadline
// from when the responder takes it, so without it the backend could still
// be working when the requester gives up.
func replyAllowance(d time.Duration) time.Duration {
	return min(d/20, 50*time.Millisecond)
}

// replier encodes and sends replies, reusing buffers.
type replier struct {
	source string
	ids    wire.IDs
	ok     nats.Header // header of success replies; read-only once built
	bufs   sync.Pool
}

func (r *replier) init(source string) {
	r.source = source
	r.ok = nats.Header{backend.HeaderContentType: {backend.ContentType}}
	r.bufs.New = func() any { b := make([]byte, 0, 1024); return &b }
}

// send publishes a response event carrying m to subject. It returns an
// error matching [backend.ErrTooLarge], without sending, when a success
// reply exceeds [backend.MaxEventSize].
func (r *replier) send(nc *nats.Conn, subject, tp string, m *backend.Message) error {
	bp := r.bufs.Get().(*[]byte)
	a := wire.Attrs{Source: r.source, Type: backend.ResponseEventType, Time: time.Now(), Traceparent: tp}
	data := wire.AppendResponse((*bp)[:0], &a, &r.ids, m)
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
			backend.HeaderServiceError:     {m.Error.Message},
			backend.HeaderServiceErrorCode: {strconv.Itoa(m.Error.Code)},
		}
	}
	return nc.PublishMsg(&nats.Msg{Subject: subject, Header: h, Data: data})
}
