package cache

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tinkerbell/backend"
)

// Defaults for the zero fields of [Config].
const (
	// DefaultMaxAge is how old a last-known-good answer may be: a day, so
	// that a backend outage overnight does not take addresses away from
	// machines that renew.
	DefaultMaxAge = 24 * time.Hour

	// DefaultNegativeTTL is how long a not-found answer is remembered:
	// short, so that a new reservation is seen within one client
	// retransmission or two, long enough to absorb a flood.
	DefaultNegativeTTL = 5 * time.Second

	// DefaultMaxEntries bounds the MAC addresses remembered; an entry
	// takes a few hundred bytes.
	DefaultMaxEntries = 100_000

	// DefaultReserve is how much of the caller's time is kept for
	// answering from the cache after the wrapped backend timed out.
	DefaultReserve = 50 * time.Millisecond
)

// Config configures a [Backend]. Only Backend is required; every other
// zero field takes the documented default.
type Config struct {
	// Backend is the wrapped backend every lookup goes to. Required.
	Backend backend.Backend

	// MaxAge is how old a last-known-good answer may be and still be
	// served while the backend is unavailable. Zero means
	// [DefaultMaxAge]; negative disables stale answers.
	MaxAge time.Duration

	// NegativeTTL is how long a not-found answer is remembered. Zero means
	// [DefaultNegativeTTL]; negative disables the negative cache.
	NegativeTTL time.Duration

	// MaxEntries bounds the MAC addresses remembered. Zero means
	// [DefaultMaxEntries]; negative is invalid.
	MaxEntries int

	// Reserve is how much earlier than the caller's deadline the wrapped
	// lookup must end when a stale answer could be served, capped at a
	// quarter of the time left. Zero means [DefaultReserve]; negative is
	// invalid.
	Reserve time.Duration

	// Logger receives stale serves (a warning at most once a second, each
	// at debug level). Nil discards.
	Logger *slog.Logger
}

// Stats counts what a [Backend] did; see [Backend.Stats].
type Stats struct {
	Lookups      uint64 // calls of Lookup
	Fresh        uint64 // answered by the wrapped backend (and remembered)
	NotFound     uint64 // not-found answers from the wrapped backend (remembered for NegativeTTL)
	Hits         uint64 // answered from the cache without a fresh answer: NegativeHits + StaleServes
	NegativeHits uint64 // not-found answered from the negative cache, without asking the backend
	StaleServes  uint64 // last-known-good answers served because the backend was unavailable
	StaleMisses  uint64 // the backend was unavailable and no answer young enough was held
	Errors       uint64 // other failures, passed through (including StaleMisses)
	Evictions    uint64 // entries dropped to stay within MaxEntries
	Entries      int    // MAC addresses remembered now
}

// Backend is a [backend.Backend] that wraps another with last-known-good
// answers and a negative cache; see the package doc. Create it with
// [New]; it is safe for concurrent use.
type Backend struct {
	inner       backend.Backend
	maxAge      time.Duration
	negativeTTL time.Duration
	maxEntries  int
	reserve     time.Duration
	log         *slog.Logger
	now         func() time.Time // time.Now; tests replace it

	mu      sync.Mutex
	entries map[string]*list.Element // key: string(MAC bytes); value: *entry
	lru     list.List                // front = most recently used

	lastWarn atomic.Int64 // unix nanoseconds of the last stale-serve warning

	lookups, fresh, notFound, negativeHits, staleServes, staleMisses, errors, evictions atomic.Uint64
}

// entry is what is remembered for one MAC address: an answer, or a
// not-found (negative).
type entry struct {
	key      string
	at       time.Time // when the backend said it
	negative bool
	dhcp     backend.DHCP
	netboot  backend.Netboot
}

var _ backend.Backend = (*Backend)(nil)

// New validates cfg and returns a Backend. Errors wrap
// [backend.ErrInvalidConfig].
func New(cfg Config) (*Backend, error) {
	if cfg.Backend == nil {
		return nil, fmt.Errorf("%w: cache: Backend is required", backend.ErrInvalidConfig)
	}
	if cfg.MaxEntries < 0 {
		return nil, fmt.Errorf("%w: cache: negative MaxEntries %d", backend.ErrInvalidConfig, cfg.MaxEntries)
	}
	if cfg.Reserve < 0 {
		return nil, fmt.Errorf("%w: cache: negative Reserve %v", backend.ErrInvalidConfig, cfg.Reserve)
	}
	b := &Backend{
		inner:       cfg.Backend,
		maxAge:      orDefault(cfg.MaxAge, DefaultMaxAge),
		negativeTTL: orDefault(cfg.NegativeTTL, DefaultNegativeTTL),
		maxEntries:  cfg.MaxEntries,
		reserve:     orDefault(cfg.Reserve, DefaultReserve),
		log:         cfg.Logger,
		now:         time.Now,
		entries:     map[string]*list.Element{},
	}
	if b.maxEntries == 0 {
		b.maxEntries = DefaultMaxEntries
	}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	return b, nil
}

// orDefault returns d, or def when d is zero.
func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Lookup implements [backend.Backend]; see the package doc for what it
// adds to the wrapped backend. A stale answer comes with a nil error; it
// is reported, with its age, to the hook that the caller installed in ctx
// with [backend.WithStaleHook], if any.
func (b *Backend) Lookup(ctx context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
	b.lookups.Add(1)
	if len(req.MACAddress) == 0 {
		return b.inner.Lookup(ctx, req)
	}
	now := b.now()
	b.mu.Lock()
	var cached entry // a copy: the list element may be evicted meanwhile
	el, ok := b.entries[string(req.MACAddress)]
	if ok {
		cached = *el.Value.(*entry)
		b.lru.MoveToFront(el)
	}
	b.mu.Unlock()

	if ok && cached.negative && b.negativeTTL > 0 && now.Sub(cached.at) < b.negativeTTL {
		b.negativeHits.Add(1)
		return backend.DHCP{}, backend.Netboot{}, fmt.Errorf("%w: %s (remembered for %v)", backend.ErrNotFound, req.MACAddress, b.negativeTTL)
	}
	servable := ok && !cached.negative && b.maxAge > 0 && now.Sub(cached.at) < b.maxAge

	ictx := ctx
	if deadline, has := ctx.Deadline(); servable && has {
		reserve := min(b.reserve, time.Until(deadline)/4)
		var cancel context.CancelFunc
		ictx, cancel = context.WithDeadline(ctx, deadline.Add(-reserve))
		defer cancel()
	}
	d, n, err := b.inner.Lookup(ictx, req)
	switch {
	case err == nil:
		b.fresh.Add(1)
		b.store(&entry{key: string(req.MACAddress), at: b.now(), dhcp: cloneDHCP(d), netboot: cloneNetboot(n)})
		return d, n, nil
	case errors.Is(err, backend.ErrNotFound):
		b.notFound.Add(1)
		if b.negativeTTL > 0 {
			b.store(&entry{key: string(req.MACAddress), at: b.now(), negative: true})
		} else {
			b.forget(string(req.MACAddress))
		}
		return d, n, err
	case unavailable(err) && !errors.Is(ctx.Err(), context.Canceled):
		// The wrapped lookup gave up (or ran out of its shortened time):
		// serve the last-known-good answer. Also when the caller's own
		// deadline has just passed (a loaded machine may wake us late): a
		// late answer is better than none if the caller still listens.
		// Only a caller that cancelled gets the error.
		if servable && b.now().Sub(cached.at) < b.maxAge {
			b.staleServes.Add(1)
			b.logStale(req.MACAddress, &cached, err)
			backend.ReportStale(ctx, b.now().Sub(cached.at))
			sd, sn := cloneDHCP(cached.dhcp), cloneNetboot(cached.netboot)
			sn.AllowNetboot = false // stale data never boots a machine
			return sd, sn, nil
		}
		b.staleMisses.Add(1)
	case unavailable(err):
		b.staleMisses.Add(1) // the caller cancelled; nobody to answer
	}
	b.errors.Add(1)
	return d, n, err
}

// unavailable reports whether err means "the backend could not answer
// now" rather than an answer.
func unavailable(err error) bool {
	return errors.Is(err, backend.ErrUnavailable) || errors.Is(err, backend.ErrNoBackend) ||
		errors.Is(err, context.DeadlineExceeded)
}

// store remembers e for its MAC address, evicting the least recently used
// entries beyond the cap.
func (b *Backend) store(e *entry) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if el, ok := b.entries[e.key]; ok {
		el.Value = e
		b.lru.MoveToFront(el)
		return
	}
	b.entries[e.key] = b.lru.PushFront(e)
	for len(b.entries) > b.maxEntries {
		last := b.lru.Back()
		b.lru.Remove(last)
		delete(b.entries, last.Value.(*entry).key)
		b.evictions.Add(1)
	}
}

// forget drops what is remembered for key.
func (b *Backend) forget(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if el, ok := b.entries[key]; ok {
		b.lru.Remove(el)
		delete(b.entries, key)
	}
}

// logStale logs a stale serve: at debug level always, and as a warning at
// most once a second (with the count so far), so that an outage is visible
// without a line per DHCP packet.
func (b *Backend) logStale(mac net.HardwareAddr, e *entry, err error) {
	age := b.now().Sub(e.at).Round(time.Millisecond)
	b.log.Debug("backend unavailable: serving the last-known-good answer without netboot",
		"mac", mac.String(), "ip", e.dhcp.IPAddress.String(), "age", age, "error", err)
	now := b.now().UnixNano()
	last := b.lastWarn.Load()
	if now-last >= int64(time.Second) && b.lastWarn.CompareAndSwap(last, now) {
		b.log.Warn("backend unavailable: serving last-known-good answers without netboot",
			"mac", mac.String(), "ip", e.dhcp.IPAddress.String(), "age", age, "stale_serves", b.staleServes.Load(), "error", err)
	}
}

// Stats returns a snapshot of the counters.
func (b *Backend) Stats() Stats {
	b.mu.Lock()
	n := len(b.entries)
	b.mu.Unlock()
	s := Stats{
		Lookups:      b.lookups.Load(),
		Fresh:        b.fresh.Load(),
		NotFound:     b.notFound.Load(),
		NegativeHits: b.negativeHits.Load(),
		StaleServes:  b.staleServes.Load(),
		StaleMisses:  b.staleMisses.Load(),
		Errors:       b.errors.Load(),
		Evictions:    b.evictions.Load(),
		Entries:      n,
	}
	s.Hits = s.NegativeHits + s.StaleServes
	return s
}

// cloneDHCP returns d with its own copies of the slices, so that the
// remembered answer and the one handed out never alias.
func cloneDHCP(d backend.DHCP) backend.DHCP {
	d.MACAddress = slices.Clone(d.MACAddress)
	d.NameServers = slices.Clone(d.NameServers)
	d.NTPServers = slices.Clone(d.NTPServers)
	d.DomainSearch = slices.Clone(d.DomainSearch)
	d.ClasslessStaticRoutes = slices.Clone(d.ClasslessStaticRoutes)
	return d
}

// cloneNetboot returns n with its own copy of the slices it holds (URLs
// are strings).
func cloneNetboot(n backend.Netboot) backend.Netboot {
	n.OSIE.KernelParams = slices.Clone(n.OSIE.KernelParams)
	return n
}
