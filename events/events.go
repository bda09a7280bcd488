package events

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/dhcpserver"
	"github.com/tinkerbell/backend/internal/jsonx"
	"github.com/tinkerbell/backend/internal/wire"
)

// Defaults of [Config].
const (
	// DefaultBufferSize is the number of events that may wait to be
	// published.
	DefaultBufferSize = 1024

	// DefaultSource is the CloudEvents source attribute of the events.
	DefaultSource = "/tinkerbell/dhcp"
)

// The kinds of decision events, the last token of their subject.
const (
	KindOffer        = "offer"
	KindAck          = "ack"
	KindNak          = "nak"
	KindDecline      = "decline"
	KindRelease      = "release"
	KindInform       = "inform"
	KindNotFound     = "not-found"
	KindBackendError = "backend-error"
	KindStaleAnswer  = "stale-answer"
)

// ErrClosed is returned by [Publisher.Shutdown] and [Publisher.Close]
// when the Publisher was already stopped.
var ErrClosed = errors.New("events: publisher closed")

// Event is one decision of a DHCP server.
type Event struct {
	// Kind is the decision, one of the Kind constants (or another valid
	// NATS subject token): the last token of the subject and of the type.
	Kind string

	MAC         net.HardwareAddr // the client's hardware address (chaddr)
	IP          netip.Addr       // the address offered, acknowledged, refused, declined or released; unset if none
	XID         uint32           // the transaction id of the request
	MessageType string           // the DHCP message type of the request, e.g. "DISCOVER"; "" if unknown
	ServerID    netip.Addr       // the server's identifier (option 54)
	Traceparent string           // W3C trace context of the lookup; "" if none
	Reason      string           // why, in a few words; "" when nothing needs saying
	Time        time.Time        // when it was decided; zero means when Publish was called
}

// Config configures a [Publisher]. Conn is required; every other zero field
// takes the default its comment names.
type Config struct {
	// Conn is the NATS connection to publish on. The caller owns it.
	Conn *nats.Conn

	// SubjectPrefix, when set, is prepended to the subjects with a dot,
	// as for lookups ("site-a" → "site-a.tinkerbell.dhcp.events.offer").
	SubjectPrefix string

	// Source is the CloudEvents source attribute; default [DefaultSource].
	Source string

	// BufferSize bounds the events waiting to be published; default
	// [DefaultBufferSize]. Events beyond it are dropped and counted.
	BufferSize int

	// Logger receives a line when events start being dropped or fail to
	// publish (at most one per second); nil discards them.
	Logger *slog.Logger
}

// Stats are the counters of a [Publisher].
type Stats struct {
	Published uint64 // events handed to the NATS connection
	Dropped   uint64 // events dropped because the buffer was full or the Publisher stopped
	Failed    uint64 // events the NATS connection refused (closed, reconnect buffer full), or of an invalid kind
	Pending   int    // events waiting in the buffer now
}

// Publisher publishes decision events. Create it with [New]; its methods
// are safe for concurrent use.
type Publisher struct {
	nc     *nats.Conn
	prefix string // "<prefix>.tinkerbell.dhcp.events."
	source string
	log    *slog.Logger

	queue chan Event
	mu    sync.RWMutex // held for reading by Publish, for writing to close queue
	stop  bool
	done  chan struct{}
	ids   wire.IDs

	published, dropped, failed atomic.Uint64
	lastWarn                   atomic.Int64
}

// New validates cfg and starts the Publisher's goroutine. Errors wrap
// [backend.ErrInvalidConfig]. Stop it with [Publisher.Shutdown] or
// [Publisher.Close].
func New(cfg Config) (*Publisher, error) {
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("%w: events: "+format, append([]any{backend.ErrInvalidConfig}, args...)...)
	}
	if cfg.Conn == nil {
		return nil, invalid("Conn is nil")
	}
	if cfg.BufferSize < 0 {
		return nil, invalid("negative BufferSize %d", cfg.BufferSize)
	}
	root := backend.Subject(cfg.SubjectPrefix, backend.EventSubject)
	if !wire.ValidSubject(root) {
		return nil, invalid("invalid subject prefix %q", cfg.SubjectPrefix)
	}
	p := &Publisher{
		nc:     cfg.Conn,
		prefix: root + ".",
		source: cfg.Source,
		log:    cfg.Logger,
		queue:  make(chan Event, cmpOr(cfg.BufferSize, DefaultBufferSize)),
		done:   make(chan struct{}),
	}
	if p.source == "" {
		p.source = DefaultSource
	}
	if !wire.ValidSource(p.source) {
		return nil, invalid("Source %q is not a URI reference", p.source)
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	go p.run()
	return p, nil
}

func cmpOr(a, b int) int {
	if a != 0 {
		return a
	}
	return b
}

// Subject returns the subject events of kind are published on.
func (p *Publisher) Subject(kind string) string { return p.prefix + kind }

// Publish queues e for publishing and returns at once. It reports false
// when e was dropped: the buffer is full, or the Publisher stopped. It
// never blocks. The Publisher keeps e: the caller must not modify e.MAC
// afterwards.
func (p *Publisher) Publish(e Event) bool {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.stop {
		p.dropped.Add(1)
		return false
	}
	select {
	case p.queue <- e:
		return true
	default:
		p.dropped.Add(1)
		p.warn("events: buffer full, dropping decision events")
		return false
	}
}

// warn logs msg at most once per second.
func (p *Publisher) warn(msg string, args ...any) {
	now := time.Now().UnixNano()
	last := p.lastWarn.Load()
	if now-last < int64(time.Second) || !p.lastWarn.CompareAndSwap(last, now) {
		return
	}
	p.log.Warn(msg, append(args, "dropped", p.dropped.Load(), "failed", p.failed.Load())...)
}

// run publishes queued events until the queue is closed and empty.
func (p *Publisher) run() {
	defer close(p.done)
	buf := make([]byte, 0, 512)
	for e := range p.queue {
		if !validKind(e.Kind) {
			p.failed.Add(1)
			p.warn("events: invalid kind", "kind", strconv.Quote(e.Kind))
			continue
		}
		a := wire.Attrs{Source: p.source, Type: backend.EventTypePrefix + e.Kind, Time: e.Time, Traceparent: e.Traceparent}
		buf = wire.AppendEvent(buf[:0], &a, &p.ids, e.appendJSON)
		msg := nats.Msg{Subject: p.prefix + e.Kind, Header: header, Data: buf}
		if err := p.nc.PublishMsg(&msg); err != nil {
			p.failed.Add(1)
			p.warn("events: publishing failed", "error", err)
			continue
		}
		p.published.Add(1)
	}
}

// header is the NATS header of every event; read-only.
var header = nats.Header{backend.HeaderContentType: {backend.ContentType}}

func validKind(k string) bool {
	return k != "" && !strings.ContainsAny(k, ". \t\r\n*>")
}

// appendJSON appends the data object of e.
func (e *Event) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"MACAddress":`...)
	if len(e.MAC) == 0 {
		dst = append(dst, "null"...)
	} else {
		dst = jsonx.AppendString(dst, e.MAC.String())
	}
	dst = append(dst, `,"IPAddress":`...)
	dst = appendAddr(dst, e.IP)
	dst = append(dst, `,"TransactionID":"0x`...)
	dst = appendHex32(dst, e.XID)
	dst = append(dst, `","MessageType":`...)
	dst = jsonx.AppendString(dst, e.MessageType)
	dst = append(dst, `,"ServerID":`...)
	dst = appendAddr(dst, e.ServerID)
	dst = append(dst, `,"Reason":`...)
	dst = jsonx.AppendString(dst, e.Reason)
	dst = append(dst, `,"Traceparent":`...)
	dst = jsonx.AppendString(dst, e.Traceparent)
	return append(dst, '}')
}

func appendAddr(dst []byte, a netip.Addr) []byte {
	if !a.IsValid() {
		return append(dst, "null"...)
	}
	dst = append(dst, '"')
	dst = a.AppendTo(dst)
	return append(dst, '"')
}

func appendHex32(dst []byte, v uint32) []byte {
	const digits = "0123456789abcdef"
	for shift := 28; shift >= 0; shift -= 4 {
		dst = append(dst, digits[(v>>uint(shift))&0xf])
	}
	return dst
}

// Stats returns the current counters.
func (p *Publisher) Stats() Stats {
	return Stats{
		Published: p.published.Load(),
		Dropped:   p.dropped.Load(),
		Failed:    p.failed.Load(),
		Pending:   len(p.queue),
	}
}

// closeQueue stops Publish from queueing; it reports false if it was
// already stopped.
func (p *Publisher) closeQueue() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stop {
		return false
	}
	p.stop = true
	close(p.queue)
	return true
}

// Shutdown stops taking events, publishes those in the buffer and flushes
// the connection, or returns ctx's error when ctx ends first (the rest are
// then dropped and counted).
func (p *Publisher) Shutdown(ctx context.Context) error {
	if !p.closeQueue() {
		return ErrClosed
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		p.drain()
		return ctx.Err()
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	if err := p.nc.FlushWithContext(ctx); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		return err
	}
	return nil
}

// Close stops taking events and drops those in the buffer.
func (p *Publisher) Close() error {
	if !p.closeQueue() {
		return ErrClosed
	}
	p.drain()
	return nil
}

// drain empties the queue, counting the events as dropped, and waits for
// the goroutine.
func (p *Publisher) drain() {
	for range p.queue {
		p.dropped.Add(1)
	}
	<-p.done
}

// FromDecision returns the event of a decision of package dhcpserver.
func FromDecision(d dhcpserver.Decision) Event {
	e := Event{
		Kind:     string(d.Kind),
		MAC:      d.MAC,
		IP:       d.IP,
		XID:      binary.BigEndian.Uint32(d.XID[:]),
		ServerID: d.ServerID,
		Reason:   d.Reason,
	}
	if d.MessageType != 0 {
		e.MessageType = d.MessageType.String()
	}
	if d.Trace.IsValid() {
		e.Traceparent = "00-" + d.Trace.TraceID().String() + "-" + d.Trace.SpanID().String() + "-" + hex.EncodeToString([]byte{byte(d.Trace.TraceFlags())})
	}
	return e
}

// OnDecision publishes d without blocking: set it as the DHCP server's
// Config.OnDecision.
//
//	cfg.OnDecision = publisher.OnDecision
func (p *Publisher) OnDecision(d dhcpserver.Decision) { p.Publish(FromDecision(d)) }
