package nats_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/dhcpserver"
	"github.com/tinkerbell/backend/internal/natstest"
	natsbackend "github.com/tinkerbell/backend/nats"
)

// queueRespond serves subject in the responders' queue group, as replicas
// of package responder do.
func queueRespond(t *testing.T, nc *nats.Conn, subject string, fn func(req *nats.Msg) *nats.Msg) {
	t.Helper()
	sub, err := nc.QueueSubscribe(subject, backend.DefaultQueue, func(m *nats.Msg) {
		if r := fn(m); r != nil {
			_ = m.RespondMsg(r)
		}
	})
	if err != nil {
		t.Fatalf("subscribe %q: %v", subject, err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
}

// TestAttemptsFitTheBudget: with the DHCP server's deadline and the default
// configuration, three real attempts are made (hedges off, so that only
// attempts are counted), each with a third of the time.
func TestAttemptsFitTheBudget(t *testing.T) {
	env := newEnv(t)
	var mu sync.Mutex
	var budgets []time.Duration
	queueRespond(t, env.resp, backend.DefaultSubject, func(m *nats.Msg) *nats.Msg {
		d, err := budget(m)
		if err == nil {
			mu.Lock()
			budgets = append(budgets, d)
			mu.Unlock()
		}
		return nil // never answers
	})
	b := newBackend(t, env.req, natsbackend.Config{HedgeDelay: -1})
	ctx, cancel := context.WithTimeout(t.Context(), dhcpserver.DefaultLookupTimeout)
	defer cancel()
	start := time.Now()
	_, _, err := b.Lookup(ctx, backend.DHCPRequest{MACAddress: testMAC})
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, backend.ErrUnavailable) {
		t.Errorf("Lookup: error %v, want DeadlineExceeded and ErrUnavailable", err)
	}
	if over := time.Since(start) - dhcpserver.DefaultLookupTimeout; over > 100*time.Millisecond {
		t.Errorf("Lookup returned %v after its deadline", over)
	}
	if err := env.resp.Flush(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	// A request whose attempt ended before it left is never sent: on a
	// starved machine the responder may see fewer, never more.
	if len(budgets) > 3 {
		t.Fatalf("%d requests, want 3 attempts", len(budgets))
	}
	for i, d := range budgets {
		// A third of the deadline each, give or take the milliseconds the
		// machine took.
		if third := dhcpserver.DefaultLookupTimeout / 3; d > third || d < third-200*time.Millisecond {
			t.Errorf("attempt %d: budget %v, want about %v", i+1, d, third)
		}
	}
	if s := b.Stats(); s.Requests != 3 || s.Retries != 2 || s.Lookups[natsbackend.OutcomeTimeout] != 1 {
		t.Errorf("Stats: %d requests, %d retries, %d timeouts; want 3, 2, 1", s.Requests, s.Retries, s.Lookups[natsbackend.OutcomeTimeout])
	}
}

// TestHedge: one replica holds every request, the other answers; every
// lookup succeeds, through a hedge when the first request went to the
// stalled one.
func TestHedge(t *testing.T) {
	env := newEnv(t)
	stalled, fast := env.resp, natstest.Connect(t, env.srv)
	var slow, answered atomicCounter
	held := make(chan *nats.Msg, 1024)
	queueRespond(t, stalled, backend.DefaultSubject, func(m *nats.Msg) *nats.Msg {
		slow.add()
		select {
		case held <- m:
		default:
		}
		return nil
	})
	queueRespond(t, fast, backend.DefaultSubject, func(m *nats.Msg) *nats.Msg {
		answered.add()
		return reply(responseEvent(fullMessage(testMAC)))
	})
	b := newBackend(t, env.req, natsbackend.Config{HedgeDelay: 20 * time.Millisecond})
	const n = 50
	for i := range n {
		ctx, cancel := context.WithTimeout(t.Context(), dhcpserver.DefaultLookupTimeout)
		_, _, err := b.Lookup(ctx, backend.DHCPRequest{MACAddress: testMAC})
		cancel()
		if err != nil {
			t.Fatalf("Lookup %d: %v", i, err)
		}
	}
	s := b.Stats()
	if slow.load() == 0 {
		t.Skip("the queue group never picked the stalled replica")
	}
	if s.Hedges == 0 || s.HedgeWins == 0 || s.Hedges < uint64(slow.load())-1 {
		t.Errorf("Stats: %d hedges, %d hedge wins; the stalled replica got %d requests", s.Hedges, s.HedgeWins, slow.load())
	}
	if s.Lookups[natsbackend.OutcomeOK] != n {
		t.Errorf("Stats: %d ok lookups, want %d", s.Lookups[natsbackend.OutcomeOK], n)
	}
	t.Logf("%d lookups: %d requests, %d to the stalled replica, %d hedges, %d won by a hedge", n, s.Requests, slow.load(), s.Hedges, s.HedgeWins)
}

// TestNoHedgesWhenFast: lookups answered quickly cost one request each:
// hedging adds no load in the normal case (counted at the responder).
func TestNoHedgesWhenFast(t *testing.T) {
	env := newEnv(t)
	var requests atomicCounter
	queueRespond(t, env.resp, backend.DefaultSubject, func(m *nats.Msg) *nats.Msg {
		requests.add()
		return reply(responseEvent(fullMessage(testMAC)))
	})
	// A hedge delay far above the round trip on a loaded machine.
	b := newBackend(t, env.req, natsbackend.Config{HedgeDelay: time.Second})
	const n = 500
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			for range n / 10 {
				if _, _, err := b.Lookup(t.Context(), backend.DHCPRequest{MACAddress: testMAC}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := env.resp.Flush(); err != nil {
		t.Fatal(err)
	}
	s := b.Stats()
	got := struct{ Responder, Requests, Hedges uint64 }{uint64(requests.load()), s.Requests, s.Hedges}
	if diff := cmp.Diff(struct{ Responder, Requests, Hedges uint64 }{n, n, 0}, got); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
}

// TestRetry503: a replica that answers 503 is routed around: the lookup is
// retried and another replica answers.
func TestRetry503(t *testing.T) {
	env := newEnv(t)
	other := natstest.Connect(t, env.srv)
	var unavailable, answered atomicCounter
	queueRespond(t, env.resp, backend.DefaultSubject, func(*nats.Msg) *nats.Msg {
		unavailable.add()
		return reply(responseEvent(backend.Message{Error: backend.Status{Code: backend.CodeUnavailable, Message: "shedding"}}))
	})
	queueRespond(t, other, backend.DefaultSubject, func(*nats.Msg) *nats.Msg {
		answered.add()
		return reply(responseEvent(fullMessage(testMAC)))
	})
	// NATS picks one of the two at random: with 30 attempts a lookup
	// meets the shedding replica every time once in 2^30, not once in
	// 2^10 (which failed a CI dry run); short backoffs let them all fit.
	b := newBackend(t, env.req, natsbackend.Config{Retry: natsbackend.RetryPolicy{
		MaxAttempts: 30, InitialBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}})
	const n = 50
	for i := range n {
		ctx, cancel := context.WithTimeout(t.Context(), dhcpserver.DefaultLookupTimeout)
		_, _, err := b.Lookup(ctx, backend.DHCPRequest{MACAddress: testMAC})
		cancel()
		if err != nil {
			t.Fatalf("Lookup %d: %v", i, err)
		}
	}
	if s := b.Stats(); s.Lookups[natsbackend.OutcomeOK] != n || s.Retries != uint64(unavailable.load()) {
		t.Errorf("Stats: %d ok, %d retries; want %d ok and one retry per 503 (%d)", s.Lookups[natsbackend.OutcomeOK], s.Retries, n, unavailable.load())
	}
}

// TestLookupClosed: after Close, lookups fail at once.
func TestLookupClosed(t *testing.T) {
	env := newEnv(t)
	b := newBackend(t, env.req, natsbackend.Config{})
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, _, err := b.Lookup(t.Context(), backend.DHCPRequest{MACAddress: testMAC}); !errors.Is(err, backend.ErrUnavailable) {
		t.Errorf("Lookup after Close: error %v, want ErrUnavailable", err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
