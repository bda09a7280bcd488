package responder

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/internal/wire"
)

// Wire constants, the same as package [github.com/tinkerbell/backend/nats]
// Defaults of [Config].
const (
	// DefaultMaxConcurrent is the number of backend calls that may run at
	// once.
	DefaultMaxConcurrent = 64

	// DefaultMaxPending is the number of requests that may wait in NATS'
	// pending buffer while all backend calls are busy.
	DefaultMaxPending = 4096

	// DefaultTimeout bounds a backend call when the request carries no
	// [backend.HeaderTimeout]. It matches the requester's default timeout.
	DefaultTimeout = time.Second

	// DefaultSource is the CloudEvents source attribute of replies.
	DefaultSource = "/tinkerbell/dhcp/backend"

	// DefaultName and DefaultVersion identify the service in the NATS
	// micro discovery protocol.
	DefaultName    = "tinkerbell-dhcp-backend"
	DefaultVersion = "0.0.0"
)

// maxPendingBytes bounds the bytes waiting in NATS' pending buffer; with
// events under 2 KiB the message limit is the one that matters.
const maxPendingBytes = 64 << 20

// ErrServerClosed is returned by [Server.Serve] after [Server.Shutdown] or
// [Server.Close], and by Serve when called on a closed server.
var ErrServerClosed = errors.New("responder: server closed")

// Config configures a [Server]. Conn and Backend are required; every other
// zero field takes the default its comment names.
type Config struct {
	// Conn is the NATS connection to serve on. The caller owns it: the
	// Server never closes or drains it and never replaces its handlers.
	Conn *nats.Conn

	// Backend answers the lookups. It is called from up to MaxConcurrent
	// goroutines at once.
	Backend backend.Backend

	// Subject is the subject served; default [backend.DefaultSubject].
	Subject string

	// SubjectPrefix, when set, is prepended to Subject with a dot, as the
	// requester's option of the same name does ("site-a" →
	// "site-a.tinkerbell.dhcp.backend").
	SubjectPrefix string

	// Queue is the queue group joined; default [backend.DefaultQueue]. All
	// replicas serving one subject should use the same queue group.
	Queue string

	// NoQueue subscribes without a queue group, so that every responder
	// receives every request (and the first reply wins). Queue must then
	// be empty.
	NoQueue bool

	// MaxConcurrent bounds the backend calls running at once; default
	// [DefaultMaxConcurrent].
	MaxConcurrent int

	// MaxPending bounds the requests waiting in NATS' pending buffer while
	// all backend calls are busy; default [DefaultMaxPending]. Requests
	// beyond it are dropped by NATS and reported as a slow consumer.
	MaxPending int

	// DefaultTimeout bounds a backend call when the request carries no
	// [backend.HeaderTimeout]; default [DefaultTimeout].
	DefaultTimeout time.Duration

	// Source is the CloudEvents source attribute of replies; default
	// [DefaultSource].
	Source string

	// Name, Version and Metadata identify the service in the NATS micro
	// discovery protocol. Name defaults to [DefaultName] and may hold
	// letters, digits, '-' and '_'; Version defaults to [DefaultVersion]
	// and must be a semantic version. Metadata is copied.
	Name     string
	Version  string
	Metadata map[string]string

	// Logger receives one line per error and a debug line per request;
	// nil discards them.
	Logger *slog.Logger
}

// Server serves a [backend.Backend] on a NATS subject. Create it with
// [New]; its methods are safe for concurrent use.
type Server struct {
	nc         *nats.Conn
	backend    backend.Backend
	subject    string
	queue      string
	maxConc    int
	maxPending int
	timeout    time.Duration
	source     string
	name       string
	version    string
	id         string
	metadata   map[string]string
	log        *slog.Logger

	// ctx is the parent of every backend call's context; Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc

	sub       *nats.Subscription
	discovery []*nats.Subscription

	mu        sync.Mutex
	serving   bool          // Serve was called
	closed    bool          // Shutdown or Close was called
	stopOnce  sync.Once     // stops discovery
	serveDone chan struct{} // closed when Serve's goroutines have returned

	replies replier
	stats   counters
	started time.Time
}

// New validates cfg, subscribes to the subject and to the discovery
// subjects, and returns a Server that [Server.Serve] runs. Configuration
// errors wrap [backend.ErrInvalidConfig]; a failed subscription is returned
// as is.
//
// Requests sent after New returns wait in NATS' pending buffer until Serve
// takes them. Call [Server.Shutdown] or [Server.Close] to release the
// subscriptions, even if Serve never ran.
func New(cfg Config) (*Server, error) {
	s, err := newServer(cfg)
	if err != nil {
		return nil, err
	}
	if err := s.subscribe(); err != nil {
		s.cancel()
		return nil, err
	}
	return s, nil
}

var (
	nameRegexp = regexp.MustCompile(`^[A-Za-z0-9\-_]+$`)
	// semVerRegexp is the regular expression suggested by semver.org, as
	// nats.go's micro package uses.
	semVerRegexp = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)
)

func newServer(cfg Config) (*Server, error) {
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("%w: responder: "+format, append([]any{backend.ErrInvalidConfig}, args...)...)
	}
	if cfg.Conn == nil {
		return nil, invalid("Conn is nil")
	}
	if cfg.Backend == nil {
		return nil, invalid("Backend is nil")
	}
	s := &Server{
		nc:         cfg.Conn,
		backend:    cfg.Backend,
		subject:    backend.Subject(cfg.SubjectPrefix, cfg.Subject),
		queue:      cfg.Queue,
		maxConc:    cfg.MaxConcurrent,
		maxPending: cfg.MaxPending,
		timeout:    cfg.DefaultTimeout,
		source:     cfg.Source,
		name:       cfg.Name,
		version:    cfg.Version,
		id:         rand.Text(),
		metadata:   maps.Clone(cfg.Metadata),
		log:        cfg.Logger,
		serveDone:  make(chan struct{}),
	}
	if !wire.ValidSubject(s.subject) {
		return nil, invalid("invalid subject %q", s.subject)
	}
	switch {
	case cfg.NoQueue && s.queue != "":
		return nil, invalid("both Queue %q and NoQueue are set", s.queue)
	case cfg.NoQueue:
	case s.queue == "":
		s.queue = backend.DefaultQueue
	case strings.ContainsAny(s.queue, " \t\r\n*>"):
		return nil, invalid("invalid queue group %q", s.queue)
	}
	if s.maxConc < 0 || s.maxPending < 0 || s.timeout < 0 {
		return nil, invalid("negative MaxConcurrent, MaxPending or DefaultTimeout")
	}
	if s.maxConc == 0 {
		s.maxConc = DefaultMaxConcurrent
	}
	if s.maxPending == 0 {
		s.maxPending = DefaultMaxPending
	}
	if s.timeout == 0 {
		s.timeout = DefaultTimeout
	}
	if s.source == "" {
		s.source = DefaultSource
	}
	if !wire.ValidSource(s.source) {
		return nil, invalid("Source %q is not a URI reference", s.source)
	}
	if s.name == "" {
		s.name = DefaultName
	}
	if !nameRegexp.MatchString(s.name) {
		return nil, invalid("invalid service name %q: use letters, digits, '-' and '_'", s.name)
	}
	if s.version == "" {
		s.version = DefaultVersion
	}
	if !semVerRegexp.MatchString(s.version) {
		return nil, invalid("version %q is not a semantic version", s.version)
	}
	if s.metadata == nil {
		s.metadata = map[string]string{}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.replies.init(s.source)
	return s, nil
}

// subscribe subscribes to the subject and the discovery subjects, and
// flushes so that the NATS server knows them before New returns.
func (s *Server) subscribe() error {
	var err error
	s.started = time.Now().UTC()
	if s.queue == "" {
		s.sub, err = s.nc.SubscribeSync(s.subject)
	} else {
		s.sub, err = s.nc.QueueSubscribeSync(s.subject, s.queue)
	}
	if err != nil {
		return fmt.Errorf("responder: subscribing to %q: %w", s.subject, err)
	}
	if err := s.sub.SetPendingLimits(s.maxPending, maxPendingBytes); err != nil {
		_ = s.sub.Unsubscribe()
		return fmt.Errorf("responder: setting pending limits: %w", err)
	}
	if err := s.subscribeDiscovery(); err != nil {
		_ = s.sub.Unsubscribe()
		s.stopDiscovery()
		return err
	}
	// Make sure the NATS server has seen the subscriptions. While the
	// connection is reconnecting this fails, and nats.go sends them once
	// it is back: no reason to fail.
	if err := s.nc.FlushTimeout(time.Second); errors.Is(err, nats.ErrConnectionClosed) {
		_ = s.sub.Unsubscribe()
		s.stopDiscovery()
		return fmt.Errorf("responder: %w", err)
	}
	return nil
}

// Subject returns the subject served.
func (s *Server) Subject() string { return s.subject }

// Serve runs the backend calls until [Server.Shutdown] or [Server.Close]
// and returns [ErrServerClosed]. It returns another error when the
// subscription ends for another reason, such as the connection being
// closed, and an error when called twice.
//
// Serve returns only once every goroutine it started has returned.
func (s *Server) Serve() error {
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return ErrServerClosed
	case s.serving:
		s.mu.Unlock()
		return errors.New("responder: Serve called twice")
	}
	s.serving = true
	s.mu.Unlock()

	s.log.Debug("responder: serving", "subject", s.subject, "queue", s.queue, "max_concurrent", s.maxConc)
	var p pool
	s.grow(&p)
	stopWatch := make(chan struct{})
	var watch sync.WaitGroup
	watch.Go(func() { s.watchSlowConsumer(stopWatch) })

	p.wg.Wait()
	close(stopWatch)
	watch.Wait()
	s.cancel()
	s.stopDiscovery()
	close(s.serveDone)

	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return ErrServerClosed
	}
	err := nats.ErrBadSubscription
	if e := p.exitErr.Load(); e != nil {
		err = *e
	}
	if errors.Is(err, nats.ErrBadSubscription) {
		// Someone else ended the subscription: say who if we can.
		switch {
		case s.nc.IsClosed():
			err = nats.ErrConnectionClosed
		case s.nc.IsDraining():
			err = nats.ErrConnectionDraining
		}
	}
	s.log.Error("responder: subscription ended", "subject", s.subject, "error", err)
	return fmt.Errorf("responder: subscription to %q ended: %w", s.subject, err)
}

// pool is the set of goroutines that take requests and call the backend.
// It grows on demand up to maxConc: a worker that takes a request and
// leaves nobody waiting for the next one starts another worker. A worker
// that finishes while more than maxIdle others wait returns. So a backend
// that blocks gets up to maxConc concurrent calls, while a fast one is
// served by a few busy goroutines that seldom park: each parked worker
// costs a wake-up per request.
type pool struct {
	wg      sync.WaitGroup
	running atomic.Int64 // workers started and not returned
	idle    atomic.Int64 // workers waiting for a request
	exitErr atomic.Pointer[error]
}

// maxIdle is the number of idle workers beyond which a worker returns.
const maxIdle = 4

// grow starts a worker unless maxConc are running.
func (s *Server) grow(p *pool) {
	for {
		n := p.running.Load()
		if n >= int64(s.maxConc) {
			return
		}
		if p.running.CompareAndSwap(n, n+1) {
			p.wg.Go(func() {
				defer p.running.Add(-1)
				s.work(p)
			})
			return
		}
	}
}

// work takes requests from the subscription and answers them until the
// subscription ends, the server is closed or enough other workers are
// idle.
func (s *Server) work(p *pool) {
	for {
		p.idle.Add(1)
		msg, err := s.sub.NextMsgWithContext(s.ctx)
		idle := p.idle.Add(-1)
		switch {
		case err == nil:
		case errors.Is(err, nats.ErrSlowConsumer):
			continue // reported by watchSlowConsumer
		case errors.Is(err, nats.ErrNoResponders):
			// nats.go consumed a message with an empty body and the
			// header Status: 503, which any client can publish. It is
			// not a request we could answer, and the subscription is
			// fine: taking it for the end would stop the responder.
			continue
		default:
			e := err // only this copy escapes
			p.exitErr.CompareAndSwap(nil, &e)
			return
		}
		if idle == 0 {
			s.grow(p)
		}
		s.handle(msg)
		// The idle workers are waiting in NextMsg: one of them takes the
		// next request, and one that takes it starts another if needed.
		if p.idle.Load() > maxIdle {
			return
		}
	}
}

// watchSlowConsumer logs each time NATS starts dropping requests because
// the pending buffer is full.
func (s *Server) watchSlowConsumer(stop <-chan struct{}) {
	ch := s.sub.StatusChanged(nats.SubscriptionSlowConsumer)
	for {
		select {
		case <-stop:
			return
		case _, ok := <-ch:
			if !ok {
				return
			}
			dropped, _ := s.sub.Dropped()
			pending, _, _ := s.sub.Pending()
			s.log.Error("responder: slow consumer: NATS is dropping requests because the backend cannot keep up",
				"subject", s.subject, "dropped_total", dropped, "pending", pending,
				"max_pending", s.maxPending, "max_concurrent", s.maxConc)
		}
	}
}

// Shutdown stops taking new requests, lets the requests already received
// (running or waiting in NATS' pending buffer) finish, delivers their
// replies to the NATS server and returns. If ctx ends first, Shutdown
// returns ctx.Err() and the requests keep running; call [Server.Close] to
// stop them. [Server.Serve] returns [ErrServerClosed].
//
// When Serve never ran, Shutdown just unsubscribes.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	first := !s.closed
	s.closed = true
	serving := s.serving
	s.mu.Unlock()
	if !serving {
		if first {
			s.release()
		}
		return nil
	}
	if first {
		s.stopDiscovery()
		// Drain unsubscribes, lets the workers take what is pending and then
		// closes the subscription, which ends the workers once idle.
		if err := s.sub.Drain(); err != nil && !errors.Is(err, nats.ErrBadSubscription) && !errors.Is(err, nats.ErrConnectionClosed) {
			// Without a drain the workers would wait forever: unsubscribe,
			// which drops what is pending but lets running calls finish.
			s.log.Error("responder: draining subscription failed, unsubscribing", "subject", s.subject, "error", err)
			_ = s.sub.Unsubscribe()
		}
	}
	select {
	case <-s.serveDone:
	case <-ctx.Done():
		return ctx.Err()
	}
	var err error
	if _, ok := ctx.Deadline(); ok {
		err = s.nc.FlushWithContext(ctx)
	} else {
		err = s.nc.Flush()
	}
	if err != nil {
		return fmt.Errorf("responder: flushing replies: %w", err)
	}
	return nil
}

// Close stops now: it unsubscribes (requests waiting in NATS' pending
// buffer are dropped) and cancels the contexts of running backend calls.
// No reply is sent for those, so that their requesters retry elsewhere
// instead of taking a cancellation for an answer. Close does not wait for
// the backend calls to return; [Server.Serve] returns [ErrServerClosed]
// once they have.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.release()
	return nil
}

// release cancels backend calls and drops every subscription.
func (s *Server) release() {
	s.cancel()
	s.stopDiscovery()
	if err := s.sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrBadSubscription) &&
		!errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrConnectionDraining) {
		s.log.Error("responder: unsubscribing", "subject", s.subject, "error", err)
	}
}

// closing reports whether Close cancelled the backend calls.
func (s *Server) closing() bool { return s.ctx.Err() != nil }
