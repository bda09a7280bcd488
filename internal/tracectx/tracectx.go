// Package tracectx moves W3C trace context between a [context.Context] and
// the traceparent text that crosses the NATS hop, with OpenTelemetry's
// propagator. Every package of the module uses it, so there is one carrier.
package tracectx

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Key is the name of the traceparent header and CloudEvents extension.
const Key = "traceparent"

// carrier holds one traceparent for the propagator, without a map.
type carrier struct{ tp string }

func (c *carrier) Get(key string) string {
	if key == Key {
		return c.tp
	}
	return ""
}

func (c *carrier) Set(key, value string) {
	if key == Key {
		c.tp = value
	}
}

func (c *carrier) Keys() []string { return []string{Key} }

// Traceparent returns the W3C traceparent of the span context in ctx, or ""
// when ctx holds no valid one.
func Traceparent(ctx context.Context) string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return "" // the common case, without the propagator's allocations
	}
	var c carrier
	propagation.TraceContext{}.Inject(ctx, &c)
	return c.tp
}

// Extract returns ctx with the remote span context that tp describes, or ctx
// unchanged when tp is empty or invalid.
func Extract(ctx context.Context, tp string) context.Context {
	if tp == "" {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, &carrier{tp: tp})
}
