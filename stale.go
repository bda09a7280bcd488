package backend

import (
	"context"
	"time"
)

// staleHookKey is the context key of the hook installed by
// [WithStaleHook].
type staleHookKey struct{}

// WithStaleHook returns a copy of ctx that carries hook, for a caller of
// [Backend.Lookup] that wants to know when the answer it gets is stale: a
// last-known-good answer served because the source of truth was
// unavailable (see package cache), which comes with a nil error like a
// fresh one. A Backend that serves such an answer calls [ReportStale]
// with the ctx of the Lookup, which calls hook with the answer's age.
//
// The hook is called at most once per Lookup, before Lookup returns, on
// the goroutine of the Lookup (or one it waits for); it must not block. A
// caller that installs no hook pays nothing: ReportStale then only looks
// the key up in the context.
func WithStaleHook(ctx context.Context, hook func(age time.Duration)) context.Context {
	return context.WithValue(ctx, staleHookKey{}, hook)
}

// ReportStale tells the hook installed in ctx by [WithStaleHook], if any,
// that the answer about to be returned is a last-known-good one, age old
// (the time since the source of truth gave it). A [Backend] that wraps
// others and serves stale answers calls it before Lookup returns; it does
// nothing when ctx carries no hook.
func ReportStale(ctx context.Context, age time.Duration) {
	if hook, ok := ctx.Value(staleHookKey{}).(func(time.Duration)); ok && hook != nil {
		hook(age)
	}
}
