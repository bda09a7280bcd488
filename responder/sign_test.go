package responder_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/internal/wire"
	natsbackend "github.com/tinkerbell/backend/nats"
	"github.com/tinkerbell/backend/responder"
)

// TestSigned checks that a responder with a SigningKey signs every reply,
// success, not found, bad request and shed alike, over the request's id,
// and that the requester trusting its key accepts them while one trusting
// another key rejects them.
func TestSigned(t *testing.T) {
	nc, more := conn(t)
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	trusted, err := wire.TrustedKeys(pub)
	if err != nil {
		t.Fatal(err)
	}
	known := mustMAC(t, "52:54:00:00:0d:01")
	release := make(chan struct{})
	holding := make(chan struct{}, 2)
	unblock := sync.OnceFunc(func() { close(release) })
	defer unblock()
	srv := serve(t, responder.Config{Conn: more(), SigningKey: kp, MaxConcurrent: 1, MaxPending: 1, Backend: backend.BackendFunc(
		func(_ context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
			switch req.MACAddress.String() {
			case known.String():
				return backend.DHCP{Hostname: "signed"}, backend.Netboot{}, nil
			case "52:54:00:00:0d:02":
				holding <- struct{}{}
				<-release // occupies the only worker
				return backend.DHCP{}, backend.Netboot{}, nil
			}
			return backend.DHCP{}, backend.Netboot{}, backend.ErrNotFound
		})})

	request := func(t *testing.T, id string, mac string, h nats.Header) *nats.Msg {
		t.Helper()
		var ids wire.IDs
		a := wire.Attrs{ID: id, Source: "/test", Type: backend.RequestEventType}
		return rawRequest(t, nc, backend.DefaultSubject, h, wire.AppendRequest(nil, &a, &ids, &backend.DHCPRequest{MACAddress: mustMAC(t, mac)}))
	}
	for _, tt := range []struct {
		name, id, mac string
		h             nats.Header
		code          string
	}{
		{"answer", "q-1", known.String(), nil, ""},
		{"not found", "q-2", "52:54:00:00:0d:09", nil, "404"},
		{"bad budget", "q-3", known.String(), nats.Header{backend.HeaderTimeout: {"soon"}}, "400"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			reply := request(t, tt.id, tt.mac, tt.h)
			if got := reply.Header.Get(backend.HeaderServiceErrorCode); got != tt.code {
				t.Fatalf("code %q, want %q", got, tt.code)
			}
			checkSigned(t, reply, tt.id, trusted)
			ev, _ := wire.Decode(reply.Data, "")
			if err := wire.VerifyEvent(trusted, tt.id+"x", &ev); !errors.Is(err, backend.ErrBadSignature) {
				t.Errorf("verified against another request id: %v", err)
			}
		})
	}

	t.Run("shed", func(t *testing.T) {
		// One request holds the worker, one waits in the queue: the next
		// is shed, from the subscription's callback, and signed too.
		hold := &nats.Msg{Subject: backend.DefaultSubject, Reply: nc.NewRespInbox(), Data: requestEvent(mustMAC(t, "52:54:00:00:0d:02"), "")}
		// The first must reach the backend before the second arrives, or
		// the second finds the queue full and is shed itself. (The worker
		// of the last subtest may still be counted in flight for a moment
		// after its reply: wait for it first.)
		waitFor(t, "the last subtest's worker", func() bool { st := srv.Stats(); return st.InFlight == 0 && st.Queued == 0 })
		if err := nc.PublishMsg(hold); err != nil {
			t.Fatal(err)
		}
		select {
		case <-holding:
		case <-time.After(5 * time.Second):
			t.Fatal("the first request did not reach the backend")
		}
		if err := nc.PublishMsg(hold); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "a busy worker and a full queue", func() bool { st := srv.Stats(); return st.InFlight == 1 && st.Queued == 1 })
		reply := request(t, "q-4", known.String(), nil)
		if got := reply.Header.Get(backend.HeaderServiceErrorCode); got != "503" {
			t.Fatalf("code %q, want 503", got)
		}
		checkSigned(t, reply, "q-4", trusted)
		unblock()
		waitFor(t, "the worker to be free", func() bool { st := srv.Stats(); return st.InFlight == 0 && st.Queued == 0 })
	})

	t.Run("requester", func(t *testing.T) {
		ok := requester(t, natsbackend.Config{Conn: nc, TrustedKeys: []string{pub}})
		d, _, err := ok.Lookup(t.Context(), backend.DHCPRequest{MACAddress: known})
		if err != nil || d.Hostname != "signed" {
			t.Errorf("Lookup trusting the responder = %q, %v", d.Hostname, err)
		}
		other, _ := nkeys.CreateUser()
		otherPub, _ := other.PublicKey()
		wrong := requester(t, natsbackend.Config{Conn: nc, TrustedKeys: []string{otherPub}, Timeout: 200 * time.Millisecond,
			Retry: natsbackend.RetryPolicy{MaxAttempts: 1}})
		if _, _, err := wrong.Lookup(t.Context(), backend.DHCPRequest{MACAddress: known}); err == nil {
			t.Error("Lookup trusting another key succeeded")
		}
	})
}

// TestSigningKeyInvalid checks that a key pair that cannot sign is a
// configuration error.
func TestSigningKeyInvalid(t *testing.T) {
	nc, _ := conn(t)
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	pubOnly, err := nkeys.FromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := responder.New(responder.Config{Conn: nc, Backend: table{}, SigningKey: pubOnly}); !errors.Is(err, backend.ErrInvalidConfig) {
		t.Errorf("New with a public key only: %v, want ErrInvalidConfig", err)
	}
}

// TestSpans checks the trace across the NATS hop: the requester's client
// span is the parent of the responder's server span, which the backend's
// context carries; one trace id for all.
func TestSpans(t *testing.T) {
	nc, more := conn(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	inBackend := make(chan trace.SpanContext, 1)
	serve(t, responder.Config{Conn: more(), TracerProvider: tp, Backend: backend.BackendFunc(
		func(ctx context.Context, _ backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
			inBackend <- trace.SpanContextFromContext(ctx)
			return backend.DHCP{Hostname: "traced"}, backend.Netboot{}, nil
		})})
	req := requester(t, natsbackend.Config{Conn: nc, TracerProvider: tp, HedgeDelay: -1})
	ctx, root := tp.Tracer("test").Start(t.Context(), "dhcp transaction", trace.WithSpanKind(trace.SpanKindServer))
	if _, _, err := req.Lookup(ctx, backend.DHCPRequest{MACAddress: mustMAC(t, "52:54:00:00:0e:01")}); err != nil {
		t.Fatal(err)
	}
	root.End()
	backendSC := <-inBackend

	var server, client sdktrace.ReadOnlySpan
	waitFor(t, "the responder's span", func() bool {
		for _, s := range rec.Ended() {
			switch s.SpanKind() {
			case trace.SpanKindServer:
				if s.InstrumentationScope().Name == "github.com/tinkerbell/backend/responder" {
					server = s
				}
			case trace.SpanKindClient:
				client = s
			}
		}
		return server != nil && client != nil
	})
	if server.SpanContext().TraceID() != root.SpanContext().TraceID() {
		t.Errorf("responder span in trace %s, want %s", server.SpanContext().TraceID(), root.SpanContext().TraceID())
	}
	if server.Parent().SpanID() != client.SpanContext().SpanID() || !server.Parent().IsRemote() {
		t.Errorf("responder span's parent %v, want the requester's span %v (remote)", server.Parent().SpanID(), client.SpanContext().SpanID())
	}
	if backendSC.SpanID() != server.SpanContext().SpanID() {
		t.Errorf("backend's context carries span %v, want the responder's %v", backendSC.SpanID(), server.SpanContext().SpanID())
	}
	attrs := map[string]string{}
	for _, kv := range server.Attributes() {
		attrs[string(kv.Key)] = kv.Value.Emit()
	}
	if attrs["tinkerbell.dhcp.outcome"] != "ok" || attrs["messaging.destination.name"] != backend.DefaultSubject || attrs["tinkerbell.dhcp.mac"] != "52:54:00:00:0e:01" {
		t.Errorf("responder span attributes %v", attrs)
	}
}
