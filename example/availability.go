package main

import (
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/cache"
	"github.com/tinkerbell/backend/dhcpserver"
	natsbackend "github.com/tinkerbell/backend/nats"
)

// The DHCP server's availability pieces (issue 9), each on by default and
// tuned or turned off by a flag where 0 (or a negative value) means off.
// The libraries' configs use 0 for "default" and a negative value for
// "off"; off maps.

// off maps a flag's "0 or negative = off" to the libraries' "negative =
// off".
func off[T ~int64 | ~float64 | ~int](v T) T {
	if v <= 0 {
		return -1
	}
	return v
}

// requesterConfig is the nats requester of the DHCP server: hedged
// requests and retries that fit the lookup deadline.
func requesterConfig(o *options, nc *nats.Conn, log *slog.Logger) natsbackend.Config {
	return natsbackend.Config{
		Conn:          nc,
		Subject:       o.subject,
		SubjectPrefix: o.prefix,
		HedgeDelay:    off(o.hedgeDelay),
		Retry:         natsbackend.RetryPolicy{MaxAttempts: o.attempts},
		Logger:        log,
	}
}

// newCache wraps the requester with last-known-good answers: while the
// backend is unavailable, known clients keep their addresses (never
// netboot). Not-found answers are remembered by the DHCP server itself
// (-negative-ttl), earlier in the path, so the cache's negative cache is
// off here.
func newCache(o *options, b backend.Backend, log *slog.Logger) (*cache.Backend, error) {
	return cache.New(cache.Config{
		Backend:     b,
		MaxAge:      off(o.staleMaxAge),
		NegativeTTL: -1,
		MaxEntries:  o.cacheSize,
		Logger:      log,
	})
}

// admission checks the availability flags (before anything connects) and
// sets the DHCP server's per-client knobs: one lookup per DORA, the
// negative cache, the per-MAC lookup limit and the unknown-client rate
// limit.
func admission(o *options, cfg *dhcpserver.Config) error {
	if o.cacheSize <= 0 {
		return usageError{fmt.Errorf("-cache-size %d: want a positive number", o.cacheSize)}
	}
	if o.attempts < 1 {
		return usageError{fmt.Errorf("-lookup-attempts %d: want at least 1", o.attempts)}
	}
	if o.knownTTL <= 0 {
		return usageError{fmt.Errorf("-known-ttl %v: want a positive duration", o.knownTTL)}
	}
	if o.notFoundBurst < 0 {
		return usageError{fmt.Errorf("-not-found-burst %d: want a positive number (0: the default)", o.notFoundBurst)}
	}
	if o.maxClients <= 0 {
		return usageError{fmt.Errorf("-max-clients %d: want a positive number", o.maxClients)}
	}
	if o.maxConcurrent <= 0 {
		return usageError{fmt.Errorf("-max-concurrent %d: want a positive number", o.maxConcurrent)}
	}
	cfg.AnswerReuse = off(o.answerReuse)
	cfg.NegativeTTL = off(o.negativeTTL)
	cfg.MinLookupInterval = off(o.minLookupInterval)
	cfg.NotFoundRate = off(o.notFoundRate)
	cfg.NotFoundBurst = o.notFoundBurst
	cfg.KnownTTL = o.knownTTL
	cfg.MaxClients = o.maxClients
	cfg.MaxConcurrent = o.maxConcurrent
	return nil
}
