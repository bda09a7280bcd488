package nats

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/internal/wire"
)

// Wire constants, shared with package responder.
const (
	// DefaultSubject is the subject lookups go to when none is configured.
	DefaultSubject = wire.DefaultSubject

	// HeaderTimeout is the NATS header that carries the requester's
	// remaining time budget in whole milliseconds. Responders give the
	// backend a context with that deadline.
	HeaderTimeout = wire.HeaderTimeout

	// HeaderServiceError and HeaderServiceErrorCode are the NATS micro
	// error headers.
	HeaderServiceError     = wire.HeaderServiceError
	HeaderServiceErrorCode = wire.HeaderServiceErrorCode

	// ContentType is the value of the NATS Content-Type header of requests
	// and replies.
	ContentType = wire.ContentType

	// MaxEventSize is the largest reply accepted, in bytes.
	MaxEventSize = wire.MaxEventSize
)

// Defaults of [Config].
const (
	DefaultSource         = "/tinkerbell/dhcp"
	DefaultTimeout        = time.Second
	DefaultMaxAttempts    = 3
	DefaultInitialBackoff = 20 * time.Millisecond
	DefaultMaxBackoff     = 250 * time.Millisecond
)

// Config configures a [Backend]. Only Conn is required; every other zero
// field takes the default its comment names.
type Config struct {
	// Conn is the NATS connection lookups are sent on. The caller owns it.
	Conn *nats.Conn

	// Subject is where lookups are sent; default [DefaultSubject].
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
	// context deadline bounds the whole lookup.
	Timeout time.Duration

	// Retry says how lookups are retried after a timeout or when no
	// responder is listening. Retries never go past the caller's deadline.
	Retry RetryPolicy

	// Logger receives debug lines for retries; nil discards them.
	Logger *slog.Logger
}

// RetryPolicy configures retries of one lookup. Backoff between attempts
// doubles from InitialBackoff up to MaxBackoff, with jitter.
type RetryPolicy struct {
	// MaxAttempts is the number of attempts in all; default
	// [DefaultMaxAttempts]. 1 disables retries.
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
	conn     *nats.Conn
	subject  string
	source   string
	timeout  time.Duration
	attempts int
	backoff  time.Duration
	maxBack  time.Duration
	log      *slog.Logger
	ids      wire.IDs
	bufs     sync.Pool
}

var _ backend.Backend = (*Backend)(nil)

// New validates cfg and returns a Backend. Errors wrap
// [backend.ErrInvalidConfig].
func New(cfg Config) (*Backend, error) {
	if cfg.Conn == nil {
		return nil, fmt.Errorf("%w: nats: Conn is nil", backend.ErrInvalidConfig)
	}
	b := &Backend{
		conn:     cfg.Conn,
		subject:  wire.Subject(cfg.SubjectPrefix, cfg.Subject),
		source:   cfg.Source,
		timeout:  cfg.Timeout,
		attempts: cfg.Retry.MaxAttempts,
		backoff:  cfg.Retry.InitialBackoff,
		maxBack:  cfg.Retry.MaxBackoff,
		log:      cfg.Logger,
	}
	if !wire.ValidSubject(b.subject) {
		return nil, fmt.Errorf("%w: nats: invalid subject %q", backend.ErrInvalidConfig, b.subject)
	}
	if b.source == "" {
		b.source = DefaultSource
	}
	switch {
	case b.timeout < 0 || b.attempts < 0 || b.backoff < 0 || b.maxBack < 0:
		return nil, fmt.Errorf("%w: nats: negative timeout, attempts or backoff", backend.ErrInvalidConfig)
	}
	if b.timeout == 0 {
		b.timeout = DefaultTimeout
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
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	b.bufs.New = func() any { s := make([]byte, 0, 512); return &s }
	return b, nil
}

// Subject returns the subject lookups are sent to.
func (b *Backend) Subject() string { return b.subject }

// Lookup asks the responders on the subject for req's reservation. It
// retries after timeouts and when no responder listens, within ctx.
//
// Errors: [backend.ErrNotFound] and the other codes a responder sends (see
// the package doc); [backend.ErrNoBackend] when nobody listens;
// [backend.ErrUnavailable] when every attempt timed out; an error matching
// both [backend.ErrUnavailable] and ctx.Err() when ctx ends first; and an
// error matching [backend.ErrInvalidMessage] for a reply that is not a
// valid response event.
func (b *Backend) Lookup(ctx context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
	if len(req.MACAddress) == 0 {
		return backend.DHCP{}, backend.Netboot{}, &backend.FieldError{Field: "MACAddress", Err: backend.ErrMissing}
	}
	if tp := traceparent(ctx); tp != "" {
		req.Traceparent = tp
	}
	bp := b.bufs.Get().(*[]byte)
	attrs := wire.Attrs{Source: b.source, Type: backend.RequestEventType, Time: time.Now(), Traceparent: req.Traceparent}
	data := wire.AppendRequest((*bp)[:0], &attrs, &b.ids, &req)
	defer func() {
		// nats.go copies the payload into its write buffer when it
		// publishes, so the buffer is free again once the lookup returns.
		*bp = data[:0]
		b.bufs.Put(bp)
	}()

	var lastErr error
	wait := b.backoff
	for attempt := 1; ; attempt++ {
		m, err := b.attempt(ctx, data)
		if err == nil {
			if err := m.Err(); err != nil {
				return backend.DHCP{}, backend.Netboot{}, err
			}
			return m.DHCP, m.Netboot, nil
		}
		if ctx.Err() != nil {
			return backend.DHCP{}, backend.Netboot{}, fmt.Errorf("%w: nats: %w", backend.ErrUnavailable, ctx.Err())
		}
		if !retryable(err) {
			return backend.DHCP{}, backend.Netboot{}, err
		}
		lastErr = err
		if attempt >= b.attempts {
			break
		}
		// Jitter in [wait/2, wait), so replicas that lost a responder at the
		// same moment do not retry in lockstep.
		d := wait/2 + rand.N(wait/2+1)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= d {
			break
		}
		b.log.DebugContext(ctx, "nats backend: retrying lookup", "mac", req.MACAddress.String(), "attempt", attempt, "error", err, "backoff", d)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return backend.DHCP{}, backend.Netboot{}, fmt.Errorf("%w: nats: %w", backend.ErrUnavailable, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, b.maxBack)
	}
	if errors.Is(lastErr, nats.ErrNoResponders) {
		return backend.DHCP{}, backend.Netboot{}, fmt.Errorf("%w: nats: no responders on %q", backend.ErrNoBackend, b.subject)
	}
	return backend.DHCP{}, backend.Netboot{}, fmt.Errorf("%w: nats: %w", backend.ErrUnavailable, lastErr)
}

// attempt sends one request and decodes its reply.
func (b *Backend) attempt(ctx context.Context, data []byte) (backend.Message, error) {
	budget := b.timeout
	if dl, ok := ctx.Deadline(); ok {
		budget = min(budget, time.Until(dl))
	}
	if budget <= 0 {
		return backend.Message{}, context.DeadlineExceeded
	}
	actx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	msg := &nats.Msg{
		Subject: b.subject,
		Data:    data,
		Header: nats.Header{
			wire.HeaderContentType: {wire.ContentType},
			wire.HeaderTimeout:     {strconv.FormatInt(budget.Milliseconds(), 10)},
		},
	}
	reply, err := b.conn.RequestMsgWithContext(actx, msg)
	if err != nil {
		return backend.Message{}, err
	}
	return decodeReply(reply)
}

// decodeReply turns a reply into a Message, or into the error it carries.
func decodeReply(reply *nats.Msg) (backend.Message, error) {
	if code := reply.Header.Get(wire.HeaderServiceErrorCode); code != "" && !looksLikeEvent(reply.Data) {
		n, err := strconv.Atoi(code)
		if err != nil {
			n = backend.CodeInternal
		}
		return backend.Message{Error: backend.Error{Code: n, Message: reply.Header.Get(wire.HeaderServiceError)}}, nil
	}
	_, m, err := wire.DecodeResponse(reply.Data)
	if err != nil {
		return backend.Message{}, fmt.Errorf("nats: invalid reply %s: %w", quoteTrunc(reply.Data), err)
	}
	return m, nil
}

func looksLikeEvent(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}

func quoteTrunc(b []byte) string {
	const max = 128
	if len(b) > max {
		return strconv.Quote(string(b[:max])) + fmt.Sprintf("... (%d bytes)", len(b))
	}
	return strconv.Quote(string(b))
}

// retryable reports whether another attempt may succeed.
func retryable(err error) bool {
	var ne net.Error
	return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrConnectionReconnecting) ||
		(errors.As(err, &ne) && ne.Timeout())
}

// tpCarrier receives the traceparent from the propagator without a map.
type tpCarrier struct{ tp string }

func (c *tpCarrier) Get(string) string { return "" }
func (c *tpCarrier) Set(key, value string) {
	if key == "traceparent" {
		c.tp = value
	}
}
func (c *tpCarrier) Keys() []string { return nil }

// traceparent returns the W3C traceparent of the span in ctx, or "".
func traceparent(ctx context.Context) string {
	var c tpCarrier
	propagation.TraceContext{}.Inject(ctx, &c)
	return c.tp
}
