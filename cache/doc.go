// Package cache is a [backend.Backend] that wraps another one and keeps a
// DHCP server answering its known clients when the backend is unavailable.
//
// Every lookup goes to the wrapped backend: renewals are how changes to a
// reservation reach clients, so a fresh answer is never replaced by a
// remembered one while the backend works. What the cache adds:
//
//   - Last-known-good answers. When the wrapped backend is unavailable —
//     nobody answered ([backend.ErrNoBackend]), it timed out
//     ([context.DeadlineExceeded]), it replied 503 or the connection is
//     down ([backend.ErrUnavailable]) — a MAC address that got an answer
//     within [Config.MaxAge] gets that answer again, with
//     [backend.Netboot.AllowNetboot] forced to false: stale data never
//     re-provisions a machine. Each stale answer is counted
//     ([Stats.StaleServes]) and logged (a warning at most once a second,
//     each one at debug level) and reported to the caller's hook, if it
//     installed one with [backend.WithStaleHook] (the DHCP server does
//     when it publishes decisions: a "stale-answer" decision). Other failures (a 500, a 400) are passed
//     through: the backend answered, and what it said is not "try later".
//     A caller that cancelled its context gets the error, not a stale
//     answer; one whose deadline passed while the cache was waking up
//     still gets it.
//   - A stale answer is returned before the caller's deadline. When the
//     cache holds an answer it could serve, the wrapped lookup gets a
//     deadline [Config.Reserve] earlier than the caller's (at most a
//     quarter of the time left), so that its timeout still leaves time to
//     answer. This relies on the wrapped backend honouring its context, as
//     [backend.Backend] requires (the nats requester returns by its
//     deadline whatever the connection does).
//   - A negative cache. A not-found answer is remembered for
//     [Config.NegativeTTL]: lookups for that MAC address within it fail
//     with [backend.ErrNotFound] without asking the backend, so that a
//     flood of unknown clients costs one backend lookup per MAC per TTL.
//     A not-found also forgets the MAC's last-known-good answer: a removed
//     reservation is never served stale.
//   - Bounded memory. At most [Config.MaxEntries] MAC addresses are
//     remembered (answers and not-founds together); beyond that the least
//     recently used one is evicted ([Stats.Evictions]).
//
// Lookups without a MAC address are passed through uncached.
//
// In a DHCP server, wrap the requester:
//
//	req, _ := natsbackend.New(natsbackend.Config{Conn: nc})
//	c, _ := cache.New(cache.Config{Backend: req})
//	srv, _ := dhcpserver.New(dhcpserver.Config{Backend: c, Interface: "eth1"})
package cache
