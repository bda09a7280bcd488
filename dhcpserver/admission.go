package dhcpserver

import (
	"errors"
	"sync"
	"time"

	"github.com/tinkerbell/backend"
)

// clients remembers, per MAC address, the last lookup's answer and when
// the server last replied, for three purposes:
//
//   - one lookup per transaction: the answer that produced an OFFER serves
//     the DISCOVER retransmissions and the REQUEST that follow, which carry
//     the same transaction id (Config.AnswerReuse);
//   - the negative cache: a not-found answer is remembered for
//     Config.NegativeTTL;
//   - the per-MAC limit: a token bucket of Config.MACLookupBurst lookups,
//     refilled at one per Config.MinLookupInterval;
//   - the queue discipline: clients answered within Config.KnownTTL are
//     "known" and served first.
//
// It holds at most max entries; when full, it evicts an entry of a client
// it never answered (the oldest of a small random sample) before one it
// did, so a flood of unknown MAC addresses cannot push known clients out.
type clients struct {
	mu    sync.Mutex
	m     map[[6]byte]*clientEntry
	max   int
	burst int // of the per-MAC bucket
}

type clientEntry struct {
	answer   *flight   // the last lookup's outcome; nil = none yet
	at       time.Time // when that lookup ended
	answered time.Time // the last reply sent to the client; zero = never
	tokens   float64   // the per-MAC bucket, as of tokensAt
	tokensAt time.Time // zero = full
}

func newClients(max, burst int) *clients {
	return &clients{m: map[[6]byte]*clientEntry{}, max: max, burst: burst}
}

// cached returns the last answer for mac when it may be reused at now
// (see Config.AnswerReuse and NegativeTTL; transaction: the request is
// part of the transaction xid, whose DISCOVER may have caused the lookup),
// and whether the server replied to mac within Config.KnownTTL.
func (c *clients) cached(mac [6]byte, xid [4]byte, now time.Time, transaction bool, cfg *Config) (*flight, bool) {
	c.mu.Lock()
	e := c.m[mac]
	if e == nil {
		c.mu.Unlock()
		return nil, false
	}
	f, at, answered := e.answer, e.at, e.answered
	c.mu.Unlock()
	known := !answered.IsZero() && now.Sub(answered) < cfg.KnownTTL
	if f == nil {
		return nil, known
	}
	age := now.Sub(at)
	switch {
	case f.err == nil:
		if transaction && f.xid == xid && age < cfg.AnswerReuse {
			return f, known
		}
	case errors.Is(f.err, backend.ErrNotFound):
		if age < cfg.NegativeTTL {
			return f, known
		}
	}
	return nil, known
}

// admit takes a token from mac's bucket for a lookup at now, and reports
// whether there was one. A client not in the table has a full bucket.
func (c *clients) admit(mac [6]byte, now time.Time, interval time.Duration, burst int) bool {
	if interval <= 0 {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.m[mac]
	if e == nil {
		return true // store creates the entry, with this token taken
	}
	tokens := float64(burst)
	if !e.tokensAt.IsZero() {
		tokens = min(tokens, e.tokens+float64(now.Sub(e.tokensAt))/float64(interval))
	}
	if tokens < 1 {
		return false
	}
	e.tokens, e.tokensAt = tokens-1, now
	return true
}

// recent returns mac's last answer if it was a reservation and is younger
// than window.
func (c *clients) recent(mac [6]byte, now time.Time, window time.Duration) *flight {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.m[mac]
	if e == nil || e.answer == nil || e.answer.err != nil || now.Sub(e.at) >= window {
		return nil
	}
	return e.answer
}

// known reports whether the server replied to mac within ttl before now.
func (c *clients) known(mac [6]byte, now time.Time, ttl time.Duration) bool {
	c.mu.Lock()
	e := c.m[mac]
	ok := e != nil && !e.answered.IsZero() && now.Sub(e.answered) < ttl
	c.mu.Unlock()
	return ok
}

// store records the outcome of a lookup for mac.
func (c *clients) store(mac [6]byte, f *flight, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.m[mac]; e != nil {
		e.answer, e.at = f, now
		return
	}
	c.evictLocked()
	c.m[mac] = &clientEntry{answer: f, at: now, tokens: float64(c.burst - 1), tokensAt: now}
}

// replied records that the server sent mac a reply at now.
func (c *clients) replied(mac [6]byte, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.m[mac]; e != nil {
		e.answered = now
		return
	}
	c.evictLocked()
	c.m[mac] = &clientEntry{answered: now}
}

// evictLocked makes room for one entry.
func (c *clients) evictLocked() {
	if len(c.m) < c.max {
		return
	}
	const sample = 16
	var victim [6]byte
	var best *clientEntry
	i := 0
	for k, e := range c.m { // random order
		if best == nil || better(e, best) {
			victim, best = k, e
		}
		if i++; i == sample {
			break
		}
	}
	delete(c.m, victim)
}

// better reports whether a is a better eviction victim than b: never
// answered before answered, then the older.
func better(a, b *clientEntry) bool {
	if a.answered.IsZero() != b.answered.IsZero() {
		return a.answered.IsZero()
	}
	return last(a).Before(last(b))
}

func last(e *clientEntry) time.Time {
	if e.answered.After(e.at) {
		return e.answered
	}
	return e.at
}

func (c *clients) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// budget is the not-found budget (Config.NotFoundRate, NotFoundBurst): a
// token bucket charged by results. It may go into debt: lookups admitted
// while it held a token may all end in not-found.
type budget struct {
	mu     sync.Mutex
	rate   float64 // tokens per second
	burst  float64
	tokens float64 // as of at
	at     time.Time
}

func newBudget(rate float64, burst int) *budget {
	return &budget{rate: rate, burst: float64(burst), tokens: float64(burst)}
}

// refillLocked brings the tokens up to now.
func (b *budget) refillLocked(now time.Time) {
	if !b.at.IsZero() && now.After(b.at) {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.at).Seconds()*b.rate)
	}
	if now.After(b.at) {
		b.at = now
	}
}

// available reports whether the bucket holds a token at now.
func (b *budget) available(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refillLocked(now)
	return b.tokens >= 1
}

// charge takes a token for a not-found answer at now.
func (b *budget) charge(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refillLocked(now)
	b.tokens--
}
