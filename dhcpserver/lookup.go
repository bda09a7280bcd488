package dhcpserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"go.opentelemetry.io/otel/trace"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/internal/tracectx"
)

// flight is the outcome of one Backend lookup, shared by the requests for
// the same MAC address that arrive while it runs. It is written only by
// the lookup and read only after it ended.
type flight struct {
	mac         [6]byte
	xid         [4]byte // of the request that started the lookup
	dhcp        backend.DHCP
	netboot     backend.Netboot
	err         error
	traced      bool
	traceparent [26]byte // version, trace id, span id, flags
	span        trace.SpanContext
	// stale: the Backend served a last-known-good answer, staleAge old
	// (reported through backend.ReportStale; only watched when
	// Config.OnDecision is set).
	stale    bool
	staleAge time.Duration
}

// markStale is the stale hook of f's lookup (backend.WithStaleHook): it
// runs before the Backend's Lookup returns, so f is still written only by
// its lookup.
func (f *flight) markStale(age time.Duration) { f.stale, f.staleAge = true, age }

// errGaveUp is the error of a request whose own context ended while it
// waited for its lookup (Close, or the ctx given to Handle).
var errGaveUp = errors.New("dhcpserver: request gave up waiting for its lookup")

// flights are the running lookups, by MAC address: requests for an
// address whose lookup runs wait for it instead of asking again.
type flights struct {
	mu  sync.Mutex
	run map[[6]byte]*flightCall
}

// flightCall is one running lookup and the channel closed when it ends.
type flightCall struct {
	f    *flight
	done chan struct{}
}

// join returns the running lookup for mac, or registers c as the one
// that runs (leader true).
func (g *flights) join(mac [6]byte, c *flightCall) (running *flightCall, leader bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if r, ok := g.run[mac]; ok {
		return r, false
	}
	if g.run == nil {
		g.run = make(map[[6]byte]*flightCall)
	}
	g.run[mac] = c
	return c, true
}

// end removes the lookup c for mac and wakes its followers.
func (g *flights) end(mac [6]byte, c *flightCall) {
	g.mu.Lock()
	delete(g.run, mac)
	g.mu.Unlock()
	close(c.done)
}

// lookup asks the Backend about mac. Requests for the same address that
// arrive while a lookup runs share it; each waits only as long as its own
// ctx allows, and the lookup itself is bounded by Config.LookupTimeout and
// ended by [Server.Close], not by the ctx of whichever request started it.
//
// A packet from a socket (ctx is the server's) runs its lookup on its own
// worker goroutine, whose stack has long grown to what a lookup needs; a
// caller of Handle, whose ctx may end first, has it run on a goroutine of
// its own so that it can stop waiting.
func (s *Server) lookup(ctx context.Context, mac []byte, xid [4]byte) *flight {
	f := &flight{mac: [6]byte(mac), xid: xid}
	s.stats.waiting.Add(1)
	defer s.stats.waiting.Add(-1)
	c, leader := s.flights.join(f.mac, &flightCall{f: f, done: make(chan struct{})})
	if leader {
		if ctx == s.ctx {
			s.runLookup(ctx, f)
			s.flights.end(f.mac, c)
			return f
		}
		go func() {
			s.runLookup(ctx, f)
			s.flights.end(f.mac, c)
		}()
	}
	select {
	case <-c.done:
		if !leader {
			s.stats.coalesced.Add(1)
		}
		return c.f
	case <-ctx.Done():
		return &flight{mac: f.mac, err: fmt.Errorf("%w: %w", errGaveUp, context.Cause(ctx))}
	}
}

// runLookup calls the Backend for f.mac with the values (trace context)
// of ctx.
func (s *Server) runLookup(ctx context.Context, f *flight) {
	var cancel context.CancelFunc
	if ctx == s.ctx { // a packet from a socket: ended by Close
		ctx, cancel = context.WithTimeout(ctx, s.cfg.LookupTimeout)
	} else {
		// A caller of Handle: its cancellation must not end the lookup of
		// the other requests sharing it, but Close must.
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), s.cfg.LookupTimeout)
		stop := context.AfterFunc(s.ctx, cancel)
		defer stop()
	}
	defer cancel()
	s.stats.inflight.Add(1)
	defer s.stats.inflight.Add(-1)
	if s.cfg.tracer != nil {
		var span trace.Span
		ctx, span = s.cfg.tracer.Start(ctx, "dhcp.lookup", trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
	}
	if s.cfg.OnDecision != nil {
		// Only then: installing the hook allocates.
		ctx = backend.WithStaleHook(ctx, f.markStale)
	}
	req := backend.DHCPRequest{MACAddress: net.HardwareAddr(f.mac[:])}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		f.traced = true
		f.span = sc
		tid, sid := sc.TraceID(), sc.SpanID()
		f.traceparent[0] = 0
		copy(f.traceparent[1:17], tid[:])
		copy(f.traceparent[17:25], sid[:])
		f.traceparent[25] = byte(sc.TraceFlags())
		req.Traceparent = tracectx.Traceparent(ctx)
	}
	start := time.Now()
	s.stats.lookups.Add(1)
	f.dhcp, f.netboot, f.err = s.cfg.Backend.Lookup(ctx, req)
	s.stats.observe(time.Since(start))
	switch {
	case f.err == nil:
	case errors.Is(f.err, backend.ErrNotFound):
		s.stats.notFound.Add(1)
		if s.notFound != nil {
			s.notFound.charge(time.Now())
		}
	default:
		s.stats.backendErrors.Add(1)
	}
	if s.ctx.Err() == nil {
		s.clients.store(f.mac, f, time.Now())
	}
}

// clientTrace returns ctx with the remote span context that an iPXE
// client sent in option 43 sub-option 69 (the binary traceparent the
// server gives it: version 0, trace id, span id, flags), so that the
// lookup continues the client's trace; ctx itself when there is none or
// ctx already has a span context.
func clientTrace(ctx context.Context, req *dhcpv4.DHCPv4) context.Context {
	v := get(req, dhcpv4.OptionVendorSpecificInformation)
	if v == nil || trace.SpanContextFromContext(ctx).IsValid() {
		return ctx
	}
	for len(v) >= 2 && v[0] != 255 {
		if v[0] == 0 { // pad
			v = v[1:]
			continue
		}
		code, n := v[0], int(v[1])
		if 2+n > len(v) {
			return ctx
		}
		if val := v[2 : 2+n]; code == subTraceparent && n == 26 && val[0] == 0 {
			sc := trace.NewSpanContext(trace.SpanContextConfig{
				TraceID:    trace.TraceID(val[1:17]),
				SpanID:     trace.SpanID(val[17:25]),
				TraceFlags: trace.TraceFlags(val[25]),
				Remote:     true,
			})
			if sc.IsValid() {
				return trace.ContextWithRemoteSpanContext(ctx, sc)
			}
			return ctx
		}
		v = v[2+n:]
	}
	return ctx
}
