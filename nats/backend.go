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
	// context deadline bounds the whole lookup. It must be at least a
	// millisecond, the unit of [backend.HeaderTimeout].
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
	conn      *nats.Conn
	subject   string
	source    string
	timeout   time.Duration
	attempts  int
	backoff   time.Duration
	maxBack   time.Duration
	log       *slog.Logger
	timeoutMS string // b.timeout in the form of the HeaderTimeout header
	ids       wire.IDs
	reqs      sync.Pool // of *request
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
		subject:  backend.Subject(cfg.SubjectPrefix, cfg.Subject),
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
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	b.timeoutMS = strconv.FormatInt(b.timeout.Milliseconds(), 10)
	b.reqs.New = b.newRequest
	return b, nil
}

// Subject returns the subject lookups are sent to.
func (b *Backend) Subject() string { return b.subject }

// Lookup asks the responders on the subject for req's reservation. It
// retries after per-attempt timeouts and when no responder listens, within
// ctx; it never retries a reply, whatever it says.
//
// Errors: [backend.ErrNotFound] and the other codes a responder sends, as a
// [*backend.RemoteError] (see the package doc); [backend.ErrNoBackend] when
// nobody listens; [backend.ErrUnavailable] when every attempt timed out or
// the connection failed; an error matching both [backend.ErrUnavailable]
// and ctx.Err() ([context.Canceled] or [context.DeadlineExceeded]) when
// ctx ends first; and an error matching [backend.ErrInvalidMessage] (a
// [*backend.FieldError] or [*backend.SyntaxError], possibly
// [backend.ErrTooLarge]) for a reply that is not a valid response event
// or that answers for another MAC address.
func (b *Backend) Lookup(ctx context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
	if len(req.MACAddress) == 0 {
		return backend.DHCP{}, backend.Netboot{}, &backend.FieldError{Field: "MACAddress", Err: backend.ErrMissing}
	}
	if tp := tracectx.Traceparent(ctx); tp != "" {
		req.Traceparent = tp
	}
	r := b.reqs.Get().(*request)
	defer func() {
		// nats.go copies the message when it publishes. Keep only buffers
		// of the usual size (an absurd traceparent could grow one).
		if cap(r.buf) <= 4<<10 {
			b.reqs.Put(r)
		}
	}()
	attrs := wire.Attrs{Source: b.source, Type: backend.RequestEventType, Time: time.Now(), Traceparent: req.Traceparent}
	r.buf = wire.AppendRequest(r.buf[:0], &attrs, &b.ids, &req)

	var lastErr error
	wait := min(b.backoff, b.maxBack)
	attempt := 1
	for ; ; attempt++ {
		m, err := b.attempt(ctx, r)
		if err == nil {
			if err := m.Error.Err(); err != nil {
				return backend.DHCP{}, backend.Netboot{}, err
			}
			if len(m.MACAddress) != 0 && !bytes.Equal(m.MACAddress, req.MACAddress) {
				return backend.DHCP{}, backend.Netboot{}, fmt.Errorf("nats: reply from %q is for another client: %w", b.subject,
					&backend.FieldError{Field: "data.MACAddress", Value: m.MACAddress.String(), Err: backend.ErrUnexpected})
			}
			return m.DHCP, m.Netboot, nil
		}
		if errors.Is(err, backend.ErrInvalidMessage) {
			return backend.DHCP{}, backend.Netboot{}, err
		}
		if ctx.Err() != nil {
			return backend.DHCP{}, backend.Netboot{}, b.ctxError(ctx)
		}
		if !retryable(err) {
			return backend.DHCP{}, backend.Netboot{}, fmt.Errorf("%w: nats: lookup on %q: %w", backend.ErrUnavailable, b.subject, err)
		}
		lastErr = err
		if attempt >= b.attempts {
			break
		}
		// Jitter in [wait/2, wait], so replicas that lost a responder at the
		// same moment do not retry in lockstep.
		d := wait/2 + rand.N(wait/2+1)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= d {
			break
		}
		b.log.DebugContext(ctx, "nats backend: retrying lookup", "subject", b.subject, "mac", req.MACAddress.String(), "attempt", attempt, "error", err, "backoff", d)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return backend.DHCP{}, backend.Netboot{}, b.ctxError(ctx)
		case <-t.C:
		}
		wait = min(2*wait, b.maxBack)
	}
	if errors.Is(lastErr, nats.ErrNoResponders) {
		return backend.DHCP{}, backend.Netboot{}, fmt.Errorf("%w: nats: no responders on %q after %d attempts", backend.ErrNoBackend, b.subject, attempt)
	}
	return backend.DHCP{}, backend.Netboot{}, fmt.Errorf("%w: nats: lookup on %q failed after %d attempts: %w", backend.ErrUnavailable, b.subject, attempt, lastErr)
}

// ctxError is the error of a lookup whose context ended: it matches
// [backend.ErrUnavailable], ctx.Err() and the context's cause.
func (b *Backend) ctxError(ctx context.Context) error {
	err, cause := ctx.Err(), context.Cause(ctx)
	if cause != nil && cause != err {
		return fmt.Errorf("%w: nats: lookup on %q: %w: %w", backend.ErrUnavailable, b.subject, err, cause)
	}
	return fmt.Errorf("%w: nats: lookup on %q: %w", backend.ErrUnavailable, b.subject, err)
}

// request is the reusable state of one lookup: the encoded event and the
// NATS message with its headers. Pooled, so that a lookup allocates no
// header map.
type request struct {
	buf []byte
	msg nats.Msg
	tmo []string // value of the HeaderTimeout header
}

func (b *Backend) newRequest() any {
	r := &request{buf: make([]byte, 0, 512), tmo: make([]string, 1)}
	r.msg.Subject = b.subject
	r.msg.Header = nats.Header{
		backend.HeaderContentType: {backend.ContentType},
		backend.HeaderTimeout:     r.tmo,
	}
	return r
}

// attempt sends one request and decodes its reply. A reply that carries an
// error code is not an error here: see [backend.Message.Err].
func (b *Backend) attempt(ctx context.Context, r *request) (backend.Message, error) {
	budget, tmo := b.timeout, b.timeoutMS
	callerFirst := false // the caller's deadline comes before our timeout
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl); left <= budget {
			if left < time.Millisecond {
				return backend.Message{}, context.DeadlineExceeded
			}
			budget, tmo, callerFirst = left, strconv.FormatInt(left.Milliseconds(), 10), true
		}
	}
	r.tmo[0] = tmo
	r.msg.Data = r.buf
	var (
		reply *nats.Msg
		err   error
	)
	switch {
	case ctx.Done() == nil:
		// A context that never ends (context.Background): nats.go's pooled
		// timer is cheaper than a context of our own.
		reply, err = b.conn.RequestMsg(&r.msg, budget)
	case callerFirst:
		reply, err = b.conn.RequestMsgWithContext(ctx, &r.msg)
	default:
		actx, cancel := context.WithTimeout(ctx, budget)
		reply, err = b.conn.RequestMsgWithContext(actx, &r.msg)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			// Our per-attempt timeout, not the caller's deadline.
			err = fmt.Errorf("%w: no reply within %v", nats.ErrTimeout, budget)
		}
	}
	r.msg.Data = nil
	if err != nil {
		return backend.Message{}, err
	}
	return decodeReply(reply)
}

// decodeReply turns a reply into a Message, which may carry an error code.
// A reply without an event body but with NATS micro error headers is the
// error those headers describe.
func decodeReply(reply *nats.Msg) (backend.Message, error) {
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

func looksLikeEvent(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}

// retryable reports whether another attempt may succeed after err.
func retryable(err error) bool {
	var ne net.Error
	return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrConnectionReconnecting) ||
		(errors.As(err, &ne) && ne.Timeout())
}
