package nats_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/internal/natstest"
	natsbackend "github.com/tinkerbell/backend/nats"
)

func TestNew(t *testing.T) {
	env := newEnv(t)
	tests := []struct {
		name    string
		cfg     natsbackend.Config
		subject string // want, when valid
	}{
		{name: "defaults", cfg: natsbackend.Config{Conn: env.req}, subject: backend.DefaultSubject},
		{name: "subject", cfg: natsbackend.Config{Conn: env.req, Subject: "dhcp.lab"}, subject: "dhcp.lab"},
		{name: "prefix", cfg: natsbackend.Config{Conn: env.req, SubjectPrefix: "site-a"}, subject: "site-a." + backend.DefaultSubject},
		{name: "prefix with dot", cfg: natsbackend.Config{Conn: env.req, SubjectPrefix: "site-a.", Subject: "x"}, subject: "site-a.x"},
		{name: "nil conn", cfg: natsbackend.Config{}},
		{name: "wildcard subject", cfg: natsbackend.Config{Conn: env.req, Subject: "a.*"}},
		{name: "full wildcard", cfg: natsbackend.Config{Conn: env.req, Subject: "a.>"}},
		{name: "empty token", cfg: natsbackend.Config{Conn: env.req, Subject: "a..b"}},
		{name: "space in subject", cfg: natsbackend.Config{Conn: env.req, Subject: "a b"}},
		{name: "space in prefix", cfg: natsbackend.Config{Conn: env.req, SubjectPrefix: "site a"}},
		{name: "negative timeout", cfg: natsbackend.Config{Conn: env.req, Timeout: -time.Second}},
		{name: "timeout under a millisecond", cfg: natsbackend.Config{Conn: env.req, Timeout: time.Microsecond}},
		{name: "negative attempts", cfg: natsbackend.Config{Conn: env.req, Retry: natsbackend.RetryPolicy{MaxAttempts: -1}}},
		{name: "negative backoff", cfg: natsbackend.Config{Conn: env.req, Retry: natsbackend.RetryPolicy{InitialBackoff: -1}}},
		{name: "negative max backoff", cfg: natsbackend.Config{Conn: env.req, Retry: natsbackend.RetryPolicy{MaxBackoff: -1}}},
		{name: "source not a URI reference", cfg: natsbackend.Config{Conn: env.req, Source: "a b\\c"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := natsbackend.New(tc.cfg)
			if tc.subject == "" {
				if !errors.Is(err, backend.ErrInvalidConfig) {
					t.Fatalf("New: error %v, want one matching ErrInvalidConfig", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if got := b.Subject(); got != tc.subject {
				t.Errorf("Subject() = %q, want %q", got, tc.subject)
			}
		})
	}
}

// TestLookupRequest checks the request on the wire with the CloudEvents
// SDK and against the wire rules.
func TestLookupRequest(t *testing.T) {
	span := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled,
	})
	const spanTP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	const givenTP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"

	tests := []struct {
		name        string
		cfg         natsbackend.Config
		ctx         func(context.Context) (context.Context, context.CancelFunc)
		traceparent string // in the DHCPRequest passed to Lookup
		want        string // traceparent on the wire
		maxBudget   time.Duration
	}{
		{
			name:      "no deadline, no trace",
			ctx:       func(ctx context.Context) (context.Context, context.CancelFunc) { return ctx, func() {} },
			maxBudget: natsbackend.DefaultTimeout,
		},
		{
			name: "span in context",
			ctx: func(ctx context.Context) (context.Context, context.CancelFunc) {
				return trace.ContextWithSpanContext(ctx, span), func() {}
			},
			want:      spanTP,
			maxBudget: natsbackend.DefaultTimeout,
		},
		{
			name: "span in context wins over the request's",
			ctx: func(ctx context.Context) (context.Context, context.CancelFunc) {
				return trace.ContextWithSpanContext(ctx, span), func() {}
			},
			traceparent: givenTP,
			want:        spanTP,
			maxBudget:   natsbackend.DefaultTimeout,
		},
		{
			name:        "traceparent given in the request",
			ctx:         func(ctx context.Context) (context.Context, context.CancelFunc) { return ctx, func() {} },
			traceparent: givenTP,
			want:        givenTP,
			maxBudget:   natsbackend.DefaultTimeout,
		},
		{
			name: "deadline before the timeout",
			cfg:  natsbackend.Config{Timeout: 10 * time.Second},
			ctx: func(ctx context.Context) (context.Context, context.CancelFunc) {
				return context.WithTimeout(ctx, 3*time.Second)
			},
			maxBudget: 3 * time.Second,
		},
		{
			name: "deadline after the timeout",
			cfg:  natsbackend.Config{Timeout: 2 * time.Second},
			ctx: func(ctx context.Context) (context.Context, context.CancelFunc) {
				return context.WithTimeout(ctx, time.Minute)
			},
			maxBudget: 2 * time.Second,
		},
	}
	env := newEnv(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := make(chan *nats.Msg, 2)
			resp := fullMessage(testMAC)
			respond(t, env.resp, backend.DefaultSubject, func(m *nats.Msg) *nats.Msg {
				got <- m
				return reply(responseEvent(resp))
			})
			cfg := tc.cfg
			cfg.Source = "/test/requester"
			b := newBackend(t, env.req, cfg)
			ctx, cancel := tc.ctx(t.Context())
			defer cancel()
			dl, hasDeadline := ctx.Deadline()
			before := time.Now()
			for range 2 {
				if _, _, err := b.Lookup(ctx, backend.DHCPRequest{MACAddress: testMAC, Traceparent: tc.traceparent}); err != nil {
					t.Fatalf("Lookup: %v", err)
				}
			}
			var ids []string
			for range 2 {
				m := <-got
				ids = append(ids, checkRequest(t, m, tc.want))
				// Budget: positive, at most the timeout and at most what was
				// left of the caller's deadline when the lookup began.
				bud, err := budget(m)
				if err != nil {
					t.Fatalf("header %s: %v", backend.HeaderTimeout, err)
				}
				if bud <= 0 || bud > tc.maxBudget {
					t.Errorf("budget %v, want in (0, %v]", bud, tc.maxBudget)
				}
				if hasDeadline && bud > dl.Sub(before) {
					t.Errorf("budget %v exceeds the %v left of the caller's deadline", bud, dl.Sub(before))
				}
			}
			if ids[0] == ids[1] {
				t.Errorf("two lookups sent the same event id %q", ids[0])
			}
		})
	}
}

// checkRequest checks a request message with the CloudEvents SDK and
// returns its event id.
func checkRequest(t *testing.T, m *nats.Msg, wantTP string) string {
	t.Helper()
	if got := m.Header.Get("Content-Type"); got != "application/cloudevents+json" {
		t.Errorf("Content-Type header %q, want application/cloudevents+json", got)
	}
	if m.Reply == "" {
		t.Errorf("request has no reply subject")
	}
	var e event.Event
	if err := json.Unmarshal(m.Data, &e); err != nil {
		t.Fatalf("sdk-go cannot decode the request %s: %v", m.Data, err)
	}
	if err := e.Validate(); err != nil {
		t.Errorf("sdk-go: invalid request event: %v", err)
	}
	type attrs struct {
		SpecVersion, Type, Source, DataContentType string
		HasID, HasTime                             bool
		Traceparent                                any
	}
	want := attrs{
		SpecVersion: "1.0", Type: backend.RequestEventType, Source: "/test/requester",
		DataContentType: "application/json", HasID: true, HasTime: true,
	}
	if wantTP != "" {
		want.Traceparent = wantTP
	}
	got := attrs{
		SpecVersion: e.SpecVersion(), Type: e.Type(), Source: e.Source(), DataContentType: e.DataContentType(),
		HasID: e.ID() != "", HasTime: !e.Time().IsZero(), Traceparent: e.Extensions()["traceparent"],
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("request attributes (-want +got):\n%s", diff)
	}
	var req backend.DHCPRequest
	if err := e.DataAs(&req); err != nil {
		t.Fatalf("DataAs(DHCPRequest): %v", err)
	}
	if diff := cmp.Diff(backend.DHCPRequest{MACAddress: testMAC, Traceparent: wantTP}, req, cmpOpts); diff != "" {
		t.Errorf("request data (-want +got):\n%s", diff)
	}
	// The data must be readable without our decoder, too.
	var plain struct{ MACAddress, Traceparent string }
	if err := json.Unmarshal(e.Data(), &plain); err != nil {
		t.Fatalf("request data is not a JSON object: %v", err)
	}
	if plain.MACAddress != testMAC.String() {
		t.Errorf("MACAddress on the wire %q, want %q", plain.MACAddress, testMAC)
	}
	return e.ID()
}

func TestLookupSubjectPrefix(t *testing.T) {
	env := newEnv(t)
	var wrong atomicCounter
	respond(t, env.resp, backend.DefaultSubject, func(*nats.Msg) *nats.Msg {
		wrong.add()
		return reply(responseEvent(backend.Message{Error: backend.Status{Code: 500, Message: "wrong tenant"}}))
	})
	respond(t, env.resp, "tenant-a."+backend.DefaultSubject, func(*nats.Msg) *nats.Msg {
		return reply(responseEvent(fullMessage(testMAC)))
	})
	b := newBackend(t, env.req, natsbackend.Config{SubjectPrefix: "tenant-a"})
	d, _, err := b.Lookup(t.Context(), backend.DHCPRequest{MACAddress: testMAC})
	if err != nil {
		t.Fatalf("Lookup: %v", err)
	}
	if got, want := d.Hostname, "node-1"; got != want {
		t.Errorf("Hostname = %q, want %q", got, want)
	}
	if n := wrong.load(); n != 0 {
		t.Errorf("the unprefixed subject got %d requests", n)
	}
}

func TestLookupMissingMAC(t *testing.T) {
	env := newEnv(t)
	var requests atomicCounter
	respond(t, env.resp, backend.DefaultSubject, func(*nats.Msg) *nats.Msg { requests.add(); return nil })
	b := newBackend(t, env.req, natsbackend.Config{})
	_, _, err := b.Lookup(t.Context(), backend.DHCPRequest{})
	var fe *backend.FieldError
	if !errors.As(err, &fe) || fe.Field != "MACAddress" || !errors.Is(err, backend.ErrInvalidMessage) {
		t.Errorf("Lookup without MAC: error %v, want a *FieldError for MACAddress", err)
	}
	if err := env.resp.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := requests.load(); n != 0 {
		t.Errorf("responder got %d requests, want none", n)
	}
}

func TestLookupNoResponder(t *testing.T) {
	env := newEnv(t)
	for _, attempts := range []int{1, 3} {
		t.Run(fmt.Sprint(attempts, " attempts"), func(t *testing.T) {
			b := newBackend(t, env.req, natsbackend.Config{Timeout: 100 * time.Millisecond, Retry: natsbackend.RetryPolicy{MaxAttempts: attempts}})
			// A deadline far away: the lookup keeps asking for its own
			// time (MaxAttempts × Timeout), then gives up because nobody
			// listens, not because the caller's time ran out.
			ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
			defer cancel()
			_, _, err := b.Lookup(ctx, backend.DHCPRequest{MACAddress: testMAC})
			if !errors.Is(err, backend.ErrNoBackend) {
				t.Errorf("Lookup: error %v, want ErrNoBackend", err)
			}
			if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
				t.Errorf("Lookup: error %v after the context ended (%v): want a fast ErrNoBackend", err, ctx.Err())
			}
		})
	}
}

func TestLookupConnectionClosed(t *testing.T) {
	srv := natstest.Run(t, nil)
	nc := natstest.Connect(t, srv)
	b := newBackend(t, nc, natsbackend.Config{})
	nc.Close()
	ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
	defer cancel()
	_, _, err := b.Lookup(ctx, backend.DHCPRequest{MACAddress: testMAC})
	if !errors.Is(err, backend.ErrUnavailable) || !errors.Is(err, nats.ErrConnectionClosed) {
		t.Errorf("Lookup on a closed connection: error %v, want ErrUnavailable and nats.ErrConnectionClosed", err)
	}
	if ctx.Err() != nil {
		t.Errorf("Lookup on a closed connection waited for the deadline")
	}
}

// stall is a responder that holds each request until the test ends and
// then answers it, too late. It reports each request it receives. Its
// callback never blocks, so requests do not queue behind each other.
func stall(t *testing.T, nc *nats.Conn, subject string) <-chan struct{} {
	t.Helper()
	got := make(chan struct{}, 64)
	held := make(chan *nats.Msg, 64)
	respond(t, nc, subject, func(m *nats.Msg) *nats.Msg {
		select {
		case held <- m:
		default:
		}
		select {
		case got <- struct{}{}:
		default:
		}
		return nil
	})
	// Runs before the subscription ends and the connection closes.
	t.Cleanup(func() {
		for {
			select {
			case m := <-held:
				_ = m.RespondMsg(reply(responseEvent(fullMessage(testMAC))))
			default:
				return
			}
		}
	})
	return got
}

func TestLookupSlowResponder(t *testing.T) {
	env := newEnv(t)
	stall(t, env.resp, backend.DefaultSubject)
	b := newBackend(t, env.req, natsbackend.Config{})
	ctx, cancel := context.WithTimeout(t.Context(), 150*time.Millisecond)
	defer cancel()
	_, _, err := b.Lookup(ctx, backend.DHCPRequest{MACAddress: testMAC})
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, backend.ErrUnavailable) {
		t.Errorf("Lookup: error %v, want context.DeadlineExceeded and ErrUnavailable", err)
	}
	if errors.Is(err, context.Canceled) {
		t.Errorf("Lookup: error %v matches context.Canceled", err)
	}
}

// TestLookupAttemptTimeouts: every attempt times out well before the
// caller's deadline, if any; the error says so and is not the caller's
// deadline.
func TestLookupAttemptTimeouts(t *testing.T) {
	contexts := []struct {
		name string
		ctx  func(t *testing.T) context.Context
	}{
		{"background", func(*testing.T) context.Context { return context.Background() }},
		{"cancelable", func(t *testing.T) context.Context { return t.Context() }},
		{"far deadline", func(t *testing.T) context.Context {
			ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
			t.Cleanup(cancel)
			return ctx
		}},
	}
	env := newEnv(t)
	for i, tc := range contexts {
		t.Run(tc.name, func(t *testing.T) {
			subject := fmt.Sprint("test.timeouts.", i)
			var requests atomicCounter
			respond(t, env.resp, subject, func(*nats.Msg) *nats.Msg { requests.add(); return nil })
			b := newBackend(t, env.req, natsbackend.Config{
				Subject: subject,
				Timeout: 50 * time.Millisecond,
				Retry:   natsbackend.RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond},
			})
			ctx := tc.ctx(t)
			_, _, err := b.Lookup(ctx, backend.DHCPRequest{MACAddress: testMAC})
			if !errors.Is(err, backend.ErrUnavailable) || !errors.Is(err, nats.ErrTimeout) {
				t.Errorf("Lookup: error %v, want ErrUnavailable and nats.ErrTimeout", err)
			}
			if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
				t.Errorf("Lookup: error %v matches context.DeadlineExceeded, but the caller's context is live", err)
			}
			// Three attempts were sent (a starved machine may drop one
			// whose time ran out before it left: never more).
			if n := b.Stats().Requests; n != 3 {
				t.Errorf("%d requests sent, want 3 attempts", n)
			}
			if err := env.resp.Flush(); err != nil {
				t.Fatal(err)
			}
			if n := requests.load(); n > 3 {
				t.Errorf("responder got %d requests, want at most 3", n)
			}
		})
	}
}

func TestLookupCancel(t *testing.T) {
	env := newEnv(t)
	got := stall(t, env.resp, backend.DefaultSubject)
	b := newBackend(t, env.req, natsbackend.Config{Timeout: time.Minute})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	res := goLookup(ctx, b, backend.DHCPRequest{MACAddress: testMAC})
	<-got // the request is in flight
	cancel()
	r := <-res
	if !errors.Is(r.err, context.Canceled) || !errors.Is(r.err, backend.ErrUnavailable) {
		t.Errorf("Lookup: error %v, want context.Canceled and ErrUnavailable", r.err)
	}
	// A cause given by the caller is kept, and the error still matches
	// context.Canceled.
	errStop := errors.New("DHCP server stopping")
	cctx, ccancel := context.WithCancelCause(t.Context())
	res = goLookup(cctx, b, backend.DHCPRequest{MACAddress: testMAC})
	<-got
	ccancel(errStop)
	if r := <-res; !errors.Is(r.err, context.Canceled) || !errors.Is(r.err, errStop) {
		t.Errorf("Lookup cancelled with a cause: error %v, want context.Canceled and the cause", r.err)
	}
	// Already cancelled: no request at all.
	if _, _, err := b.Lookup(ctx, backend.DHCPRequest{MACAddress: testMAC}); !errors.Is(err, context.Canceled) {
		t.Errorf("Lookup with a cancelled context: error %v, want context.Canceled", err)
	}
}

// retryHook is a slog handler that calls fn on every record, on the
// lookup's goroutine, before the backoff.
type retryHook struct{ fn func(slog.Record) }

func (h retryHook) Enabled(context.Context, slog.Level) bool      { return true }
func (h retryHook) Handle(_ context.Context, r slog.Record) error { h.fn(r); return nil }
func (h retryHook) WithAttrs([]slog.Attr) slog.Handler            { return h }
func (h retryHook) WithGroup(string) slog.Handler                 { return h }

func TestLookupRetry(t *testing.T) {
	t.Run("after a timeout", func(t *testing.T) {
		env := newEnv(t)
		var requests atomicCounter
		respond(t, env.resp, backend.DefaultSubject, func(*nats.Msg) *nats.Msg {
			if requests.add() == 1 {
				return nil // lost
			}
			return reply(responseEvent(fullMessage(testMAC)))
		})
		// Long enough that the second attempt is not lost to a slow
		// machine as well.
		b := newBackend(t, env.req, natsbackend.Config{Timeout: 500 * time.Millisecond})
		d, _, err := b.Lookup(t.Context(), backend.DHCPRequest{MACAddress: testMAC})
		if err != nil {
			t.Fatalf("Lookup: %v", err)
		}
		if d.Hostname != "node-1" {
			t.Errorf("Hostname %q, want node-1", d.Hostname)
		}
		if n := requests.load(); n != 2 {
			t.Errorf("responder got %d requests, want 2", n)
		}
	})
	t.Run("after no responders", func(t *testing.T) {
		env := newEnv(t)
		var requests atomicCounter
		var retries []string
		// The responder appears while the requester backs off after the
		// first attempt found nobody.
		hook := retryHook{fn: func(r slog.Record) {
			retries = append(retries, r.Message)
			if len(retries) == 1 {
				respond(t, env.resp, backend.DefaultSubject, func(*nats.Msg) *nats.Msg {
					requests.add()
					return reply(responseEvent(fullMessage(testMAC)))
				})
			}
		}}
		b := newBackend(t, env.req, natsbackend.Config{Logger: slog.New(hook)})
		if _, _, err := b.Lookup(t.Context(), backend.DHCPRequest{MACAddress: testMAC}); err != nil {
			t.Fatalf("Lookup: %v", err)
		}
		if len(retries) != 1 || requests.load() != 1 {
			t.Errorf("%d retries logged, %d requests answered; want 1 and 1", len(retries), requests.load())
		}
	})
}

// TestLookupBackoffCapped: MaxBackoff caps every wait between attempts,
// the first one included, even when InitialBackoff is larger.
func TestLookupBackoffCapped(t *testing.T) {
	env := newEnv(t)
	const maxBackoff = 10 * time.Millisecond
	var backoffs []time.Duration
	hook := retryHook{fn: func(r slog.Record) {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "backoff" {
				backoffs = append(backoffs, a.Value.Duration())
			}
			return true
		})
	}}
	b := newBackend(t, env.req, natsbackend.Config{
		Logger: slog.New(hook),
		Retry:  natsbackend.RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Minute, MaxBackoff: maxBackoff},
	})
	// Room for several capped backoffs; an uncapped one would not fit, so
	// the lookup would give up without retrying.
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if _, _, err := b.Lookup(ctx, backend.DHCPRequest{MACAddress: testMAC}); !errors.Is(err, backend.ErrNoBackend) {
		t.Errorf("Lookup: error %v, want ErrNoBackend", err)
	}
	if len(backoffs) < 2 {
		t.Fatalf("%d backoffs logged, want at least 2", len(backoffs))
	}
	for i, d := range backoffs {
		if d < 0 || d > maxBackoff {
			t.Errorf("backoff %d: %v, want at most MaxBackoff %v", i+1, d, maxBackoff)
		}
	}
}

// TestLookupServerRestart restarts the server under running lookups: the
// same Backend works again afterwards, and lookups during the outage fail
// within their deadline.
func TestLookupServerRestart(t *testing.T) {
	srv := natstest.Run(t, nil)
	reconnected := make(chan struct{}, 2)
	opts := []nats.Option{
		nats.MaxReconnects(-1),
		nats.ReconnectWait(10 * time.Millisecond),
		nats.ReconnectJitter(0, 0),
		nats.ReconnectHandler(func(*nats.Conn) { reconnected <- struct{}{} }),
	}
	req := natstest.Connect(t, srv, opts...)
	resp := natstest.Connect(t, srv, opts...)
	respond(t, resp, backend.DefaultSubject, func(m *nats.Msg) *nats.Msg {
		return reply(responseEvent(fullMessage(testMAC)))
	})
	b := newBackend(t, req, natsbackend.Config{})
	// Lookups that may meet the outage have a short deadline; those that
	// must succeed a long one, so that a slow machine does not fail them.
	const perLookup, mustSucceed = 300 * time.Millisecond, 10 * time.Second
	lookupWithin := func(d time.Duration) error {
		ctx, cancel := context.WithTimeout(t.Context(), d)
		defer cancel()
		_, _, err := b.Lookup(ctx, backend.DHCPRequest{MACAddress: testMAC})
		return err
	}
	lookup := func() error { return lookupWithin(perLookup) }
	if err := lookupWithin(mustSucceed); err != nil {
		t.Fatalf("Lookup before the restart: %v", err)
	}

	// Lookups run in a loop through the restart. Each must return: a hang
	// would trip the watchdog.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ok, failed int
	var unexpected []error
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				done := make(chan error, 1)
				go func() { done <- lookup() }()
				var err error
				select {
				case err = <-done:
				case <-time.After(perLookup + 10*time.Second):
					err = errors.New("lookup did not return long after its deadline")
					<-done
				}
				mu.Lock()
				switch {
				case err == nil:
					ok++
				case errors.Is(err, backend.ErrUnavailable), errors.Is(err, backend.ErrNoBackend):
					failed++
				default:
					unexpected = append(unexpected, err)
				}
				mu.Unlock()
			}
		})
	}

	natstest.Shutdown(srv)
	// The outage: lookups fail within their deadline.
	for range 3 {
		ctx, cancel := context.WithTimeout(t.Context(), perLookup)
		_, _, err := b.Lookup(ctx, backend.DHCPRequest{MACAddress: testMAC})
		if !errors.Is(err, backend.ErrUnavailable) && !errors.Is(err, backend.ErrNoBackend) {
			t.Errorf("Lookup during the outage: error %v, want ErrUnavailable", err)
		}
		cancel()
	}
	natstest.RunAgain(t, srv)
	for range 2 {
		select {
		case <-reconnected:
		case <-time.After(30 * time.Second):
			t.Fatal("clients did not reconnect")
		}
	}
	// The responder's subscription is back once its connection has
	// reconnected; the same Backend must then succeed.
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := lookup()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Lookup after the restart still fails: %v", err)
		}
	}
	for i := range 20 {
		if err := lookupWithin(mustSucceed); err != nil {
			t.Fatalf("Lookup %d after the restart: %v", i, err)
		}
	}
	close(stop)
	wg.Wait()
	if len(unexpected) > 0 {
		t.Errorf("%d lookups failed with unexpected errors, first: %v", len(unexpected), unexpected[0])
	}
	t.Logf("background lookups through the restart: %d succeeded, %d failed", ok, failed)
}

// TestLookupConcurrent: many lookups at once on one connection, each gets
// the answer for its own MAC address.
func TestLookupConcurrent(t *testing.T) {
	env := newEnv(t)
	// The answer is derived from the MAC address in the request.
	respond(t, env.resp, backend.DefaultSubject, func(m *nats.Msg) *nats.Msg {
		var e event.Event
		var req backend.DHCPRequest
		if json.Unmarshal(m.Data, &e) != nil || e.DataAs(&req) != nil {
			return reply(responseEvent(backend.Message{Error: backend.Status{Code: 400}}))
		}
		return reply(responseEvent(answerFor(req.MACAddress)))
	})
	b := newBackend(t, env.req, natsbackend.Config{Timeout: 30 * time.Second})
	const n = 1000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			mac := net.HardwareAddr{0x02, 0, 0, 0, byte(i >> 8), byte(i)}
			d, nb, err := b.Lookup(t.Context(), backend.DHCPRequest{MACAddress: mac})
			if err != nil {
				errs <- fmt.Errorf("lookup %v: %w", mac, err)
				return
			}
			want := answerFor(mac)
			if diff := cmp.Diff(result{want.DHCP, want.Netboot}, result{d, nb}, cmpOpts); diff != "" {
				errs <- fmt.Errorf("lookup %v (-want +got):\n%s", mac, diff)
			}
		})
	}
	wg.Wait()
	close(errs)
	var count int
	for err := range errs {
		if count++; count <= 5 {
			t.Error(err)
		}
	}
	if count > 0 {
		t.Errorf("%d of %d lookups failed", count, n)
	}
}

// answerFor is a reservation that depends on every byte of mac.
func answerFor(mac net.HardwareAddr) backend.Message {
	m := fullMessage(mac)
	m.IPAddress = netip.AddrFrom4([4]byte{198, 18, mac[4], mac[5]})
	m.Hostname = "node-" + strings.ReplaceAll(mac.String(), ":", "")
	return m
}
