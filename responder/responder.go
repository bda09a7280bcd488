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
	"github.com/nats-io/nkeys"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/internal/wire"
)

// Defaults of [Config].
const (
	// DefaultMaxConcurrent is the number of backend calls that may run at
	// once.
	DefaultMaxConcurrent = 64

	// DefaultMaxPending is the number of requests that may wait in the
	// responder's queue while all backend calls are busy.
	DefaultMaxPending = 4096

	// DefaultTimeout bounds a backend call when the request carries no
	// [backend.HeaderTimeout]. It matches the requester's default timeout.
	DefaultTimeout = time.Second

	// DefaultMaxTimeout caps the time budget a request may ask for in
	// [backend.HeaderTimeout].
	DefaultMaxTimeout = 30 * time.Second

	// DefaultSource is the CloudEvents source attribute of replies.
	DefaultSource = "/tinkerbell/dhcp/backend"

	// DefaultName and DefaultVersion identify the service in the NATS
	// micro discovery protocol.
	DefaultName    = "tinkerbell-dhcp-backend"
	DefaultVersion = "0.0.0"
)

// NATS' own pending buffer of the subscription sits in front of the
// responder's queue. The callback that empties it never blocks (it queues
// or sheds a request in microseconds), so the buffer only absorbs bursts;
// its limits bound the memory a flood can take before the callback sees it.
const (
	natsPendingMsgs  = 64 << 10
	natsPendingBytes = 64 << 20
)

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
	// goroutines at once, plus up to MaxAbandoned calls that overran
	// their deadline.
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

	// MaxPending bounds the requests waiting in the responder's queue
	// while all backend calls are busy; default [DefaultMaxPending]. A
	// request that finds the queue full, or that the queue's expected wait
	// would keep from being served within its time budget, is answered
	// 503 at once (shed), so that its requester retries elsewhere.
	MaxPending int

	// MaxAbandoned bounds the backend calls that overran their deadline
	// (a backend that ignores its context) and still run: the responder
	// answers such a request 503 at the deadline and leaves the call
	// behind. While MaxAbandoned calls are left behind, requests are
	// answered 503 without calling the backend. Default: four times
	// MaxConcurrent.
	MaxAbandoned int

	// DefaultTimeout bounds a backend call when the request carries no
	// [backend.HeaderTimeout]; default [DefaultTimeout]. It may not exceed
	// MaxTimeout.
	DefaultTimeout time.Duration

	// MaxTimeout caps the time budget a request may ask for; larger
	// budgets are cut to it. Default [DefaultMaxTimeout].
	MaxTimeout time.Duration

	// SigningKey, when set, signs every response event (see
	// [backend.SignatureExtension]): a key pair made from an nkeys seed,
	// conventionally a user key (nkeys.FromSeed). Requesters that trust
	// its public key then reject answers from anyone else. Nil (the
	// default) sends unsigned replies.
	SigningKey nkeys.KeyPair

	// TracerProvider, when set, makes one span of server kind per request,
	// continued from the request's W3C trace context; the backend's
	// context carries it. Nil (the default) makes no spans and allocates
	// nothing for them.
	TracerProvider trace.TracerProvider

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

	// Logger receives the responder's log lines; nil discards them.
	// Warnings about bad requests and per-request errors are rate-limited
	// (a few per second, each saying how many were suppressed since the
	// last one): [Server.Stats] counts every one. Debug lines, one per
	// request, are not limited.
	Logger *slog.Logger
}

// Server serves a [backend.Backend] on a NATS subject. Create it with
// [New]; its methods are safe for concurrent use.
type Server struct {
	nc           *nats.Conn
	backend      backend.Backend
	subject      string
	queue        string
	maxConc      int
	maxPending   int
	maxAbandoned int
	timeout      time.Duration
	maxTimeout   time.Duration
	source       string
	name         string
	version      string
	id           string
	metadata     map[string]string
	log          *slog.Logger
	tracer       trace.Tracer // nil without a TracerProvider

	// ctx is the parent of every backend call's context; Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc

	discovery []*nats.Subscription

	// The subscription to the subject: replaced when the responder steps
	// out of its queue group and back (see sub.go).
	subMu         sync.Mutex
	sub           *subscription // the latest
	openSubs      int           // subscriptions whose closed handler has not run
	stopped       bool          // no new subscription: Shutdown, Close or a lost connection
	inputClosed   bool          // subClosed is closed
	droppedBefore int           // NATS drops on earlier subscriptions
	paused        atomic.Bool   // the latest subscription is drained to step aside

	// requests is the responder's queue, filled by the subscription's
	// callback and emptied by the workers. subClosed is closed once the
	// subscription has ended and its callback will not run again.
	requests  chan item
	subClosed chan struct{}
	pool      pool
	abandoned atomic.Int64 // backend calls left behind that still run
	service   ewma         // backend call time, for the expected queue wait

	// health is the number of the latest call that ended (see settle),
	// negative when it ran into its deadline: the backend is timing out.
	// New calls are then paced by probe, the other requests answered 503
	// at once, until a call returns in time.
	calls  atomic.Int64 // numbers calls in the order they start
	health atomic.Int64
	probe  *rate.Limiter

	mu        sync.Mutex
	serving   bool          // Serve was called
	closed    bool          // Shutdown or Close was called
	stopOnce  sync.Once     // stops discovery
	serveDone chan struct{} // closed when Serve's goroutines have returned

	replies replier
	stats   counters
	logs    limiters
	started time.Time
}

// New validates cfg, subscribes to the subject and to the discovery
// subjects, and returns a Server that [Server.Serve] runs. Configuration
// errors wrap [backend.ErrInvalidConfig]; a failed subscription is returned
// as is.
//
// Requests sent after New returns wait in the responder's queue until Serve
// takes them; their time budgets run meanwhile. Call [Server.Shutdown] or
// [Server.Close] to release the subscriptions, even if Serve never ran.
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
		nc:           cfg.Conn,
		backend:      cfg.Backend,
		subject:      backend.Subject(cfg.SubjectPrefix, cfg.Subject),
		queue:        cfg.Queue,
		maxConc:      cfg.MaxConcurrent,
		maxPending:   cfg.MaxPending,
		maxAbandoned: cfg.MaxAbandoned,
		timeout:      cfg.DefaultTimeout,
		maxTimeout:   cfg.MaxTimeout,
		source:       cfg.Source,
		name:         cfg.Name,
		version:      cfg.Version,
		id:           rand.Text(),
		metadata:     maps.Clone(cfg.Metadata),
		log:          cfg.Logger,
		serveDone:    make(chan struct{}),
		subClosed:    make(chan struct{}),
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
	if s.maxConc < 0 || s.maxPending < 0 || s.maxAbandoned < 0 || s.timeout < 0 || s.maxTimeout < 0 {
		return nil, invalid("negative MaxConcurrent, MaxPending, MaxAbandoned, DefaultTimeout or MaxTimeout")
	}
	if s.maxConc == 0 {
		s.maxConc = DefaultMaxConcurrent
	}
	if s.maxPending == 0 {
		s.maxPending = DefaultMaxPending
	}
	if s.maxAbandoned == 0 {
		s.maxAbandoned = 4 * s.maxConc
	}
	if s.maxTimeout == 0 {
		s.maxTimeout = DefaultMaxTimeout
	}
	if s.maxTimeout < time.Millisecond {
		return nil, invalid("MaxTimeout %v is under a millisecond, the unit of %s", s.maxTimeout, backend.HeaderTimeout)
	}
	if s.timeout == 0 {
		s.timeout = min(DefaultTimeout, s.maxTimeout)
	}
	if s.timeout > s.maxTimeout {
		return nil, invalid("DefaultTimeout %v exceeds MaxTimeout %v", s.timeout, s.maxTimeout)
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
	var signer *wire.Signer
	if cfg.SigningKey != nil {
		var err error
		if signer, err = wire.NewSigner(cfg.SigningKey); err != nil {
			return nil, fmt.Errorf("responder: SigningKey: %w", err)
		}
	}
	if cfg.TracerProvider != nil {
		s.tracer = cfg.TracerProvider.Tracer(tracerName)
	}
	s.requests = make(chan item, s.maxPending)
	s.probe = rate.NewLimiter(rate.Every(probeEvery), 1)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.replies.init(s.source, signer)
	s.logs.init()
	return s, nil
}

// probeEvery is the pace of backend calls while the backend times out.
const probeEvery = 100 * time.Millisecond

// tracerName is the instrumentation scope of the responder's spans.
const tracerName = "github.com/tinkerbell/backend/responder"

// subscribe subscribes to the subject and the discovery subjects, and
// flushes so that the NATS server knows them before New returns.
func (s *Server) subscribe() error {
	s.started = time.Now().UTC()
	var err error
	if s.sub, err = s.subscribeRequests(); err != nil {
		return err
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
// Serve returns only once every goroutine it started has returned,
// including backend calls left behind at their deadline.
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
	s.grow()
	stopWatch := make(chan struct{})
	var watch sync.WaitGroup
	watch.Go(func() { s.watchSlowConsumer(stopWatch) })

	s.pool.wg.Wait()
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
	// Someone else ended the subscription: say who if we can.
	err := nats.ErrBadSubscription
	switch {
	case s.nc.IsClosed():
		err = nats.ErrConnectionClosed
	case s.nc.IsDraining():
		err = nats.ErrConnectionDraining
	}
	s.log.Error("responder: subscription ended", "subject", s.subject, "error", err)
	return fmt.Errorf("responder: subscription to %q ended: %w", s.subject, err)
}

// pool is the set of goroutines that take requests from the queue and call
// the backend. It grows on demand up to maxConc: a worker that takes a
// request and leaves nobody waiting for the next one starts another
// worker. A worker that finishes while more than maxIdle others wait
// returns. So a backend that blocks gets up to maxConc concurrent calls,
// while a fast one is served by a few busy goroutines that seldom park:
// each parked worker costs a wake-up per request. A worker whose backend
// call overran its deadline is left behind with the call (it returns when
// the call does) and replaced.
type pool struct {
	wg      sync.WaitGroup
	running atomic.Int64 // workers started, not returned and not left behind
	idle    atomic.Int64 // workers waiting for a request
}

// maxIdle is the number of idle workers beyond which a worker returns.
const maxIdle = 4

// grow starts a worker unless maxConc are running.
func (s *Server) grow() {
	p := &s.pool
	for {
		n := p.running.Load()
		if n >= int64(s.maxConc) {
			return
		}
		if p.running.CompareAndSwap(n, n+1) {
			p.wg.Go(func() {
				if !s.work() {
					p.running.Add(-1)
				}
			})
			return
		}
	}
}

// work takes requests from the queue and answers them until the
// subscription has ended and the queue is empty, the server is closed or
// enough other workers are idle. It reports whether it was left behind
// with a backend call that overran its deadline, and replaced.
func (s *Server) work() (leftBehind bool) {
	p := &s.pool
	for {
		var it item
		s.resume()
		p.idle.Add(1)
		select {
		case it = <-s.requests:
		case <-s.subClosed:
			// Nothing more arrives: finish what is queued.
			select {
			case it = <-s.requests:
			default:
				p.idle.Add(-1)
				return false
			}
		case <-s.ctx.Done():
			p.idle.Add(-1)
			return false
		}
		if p.idle.Add(-1) == 0 {
			s.grow()
		}
		if s.handle(it) {
			return true
		}
		s.resume() // before this worker may return
		// The idle workers are waiting on the queue: one of them takes the
		// next request, and one that takes it starts another if needed.
		if p.idle.Load() > maxIdle {
			return false
		}
	}
}

// Shutdown stops taking new requests, lets the requests already received
// (running, queued or in NATS' pending buffer) finish, delivers their
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
		// Drain unsubscribes, lets the callback queue what is pending and
		// then closes the subscription; the workers finish the queue and
		// return.
		if err := s.stop(true); err != nil {
			s.log.Error("responder: draining subscription failed, unsubscribed", "subject", s.subject, "error", err)
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

// Close stops now: it unsubscribes (queued requests are dropped) and
// cancels the contexts of running backend calls. No reply is sent for
// those, so that their requesters retry elsewhere instead of taking a
// cancellation for an answer. Close does not wait for the backend calls to
// return; [Server.Serve] returns [ErrServerClosed] once they have.
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
	if err := s.stop(false); err != nil {
		s.log.Error("responder: unsubscribing", "subject", s.subject, "error", err)
	}
}

// closing reports whether Close cancelled the backend calls.
func (s *Server) closing() bool { return s.ctx.Err() != nil }
