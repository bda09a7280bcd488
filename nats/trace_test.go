package nats_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/internal/wire"
	natsbackend "github.com/tinkerbell/backend/nats"
)

// TestTracing: with a TracerProvider, a lookup is a client span, child of
// the caller's span, whose requests are span events, and the traceparent
// on the wire names it, so that the responder's span is its child.
func TestTracing(t *testing.T) {
	env := newEnv(t)
	var requests atomicCounter
	tps := make(chan string, 8)
	queueRespond(t, env.resp, backend.DefaultSubject, func(m *nats.Msg) *nats.Msg {
		ev, err := wire.Decode(m.Data, backend.RequestEventType)
		if err == nil {
			tps <- ev.Traceparent
		}
		if requests.add() == 1 {
			return nil // the first request is lost: a hedge answers
		}
		return reply(responseEvent(fullMessage(testMAC)))
	})
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(t.Context()) })
	b := newBackend(t, env.req, natsbackend.Config{TracerProvider: tp, HedgeDelay: 20 * time.Millisecond})

	ctx, parent := tp.Tracer("test").Start(t.Context(), "dhcp")
	if _, _, err := b.Lookup(ctx, backend.DHCPRequest{MACAddress: testMAC}); err != nil {
		t.Fatalf("Lookup: %v", err)
	}
	parent.End()
	spans := rec.Ended()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want the lookup's and the caller's", len(spans))
	}
	s := spans[0]
	if s.SpanKind() != trace.SpanKindClient || s.Parent().SpanID() != parent.SpanContext().SpanID() {
		t.Errorf("lookup span: kind %v, parent %v; want client, child of %v", s.SpanKind(), s.Parent().SpanID(), parent.SpanContext().SpanID())
	}
	var events []string
	for _, e := range s.Events() {
		events = append(events, e.Name)
	}
	if got := strings.Join(events, ","); got != "attempt,hedge" {
		t.Errorf("span events %q, want attempt,hedge", got)
	}
	tp1 := <-tps
	if want := s.SpanContext().SpanID().String(); !strings.Contains(tp1, want) {
		t.Errorf("traceparent on the wire %q does not name the lookup's span %s", tp1, want)
	}
}

// TestNewWarnings: a connection to a loopback server without TLS logs no
// warning (the unsafe case is tested on URLs, since tests may not reach
// other hosts).
func TestNewWarnings(t *testing.T) {
	env := newEnv(t)
	var buf bytes.Buffer
	newBackend(t, env.req, natsbackend.Config{Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	if buf.Len() != 0 {
		t.Errorf("New logged %q for a loopback server", buf.String())
	}
}
