package tracectx

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

func TestRoundTrip(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ctx := Extract(context.Background(), tp)
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() || !sc.IsRemote() || sc.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("Extract(%q) = %v", tp, sc)
	}
	if got := Traceparent(ctx); got != tp {
		t.Errorf("Traceparent = %q, want %q", got, tp)
	}
	if got := Traceparent(context.Background()); got != "" {
		t.Errorf("Traceparent(no span) = %q", got)
	}
	for _, bad := range []string{"", "garbage", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"} {
		if sc := trace.SpanContextFromContext(Extract(context.Background(), bad)); sc.IsValid() {
			t.Errorf("Extract(%q) gave a valid span context", bad)
		}
	}
}
