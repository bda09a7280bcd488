package backend_test

import (
	"context"
	"fmt"
	"time"

	"github.com/tinkerbell/backend"
)

// A caller that wants to know whether an answer was served stale installs
// a hook; a Backend that serves a last-known-good answer reports it.
func ExampleWithStaleHook() {
	lastKnownGood := backend.BackendFunc(func(ctx context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
		backend.ReportStale(ctx, 90*time.Second) // the source is down: an answer 90 s old
		return backend.DHCP{}, backend.Netboot{}, nil
	})
	ctx := backend.WithStaleHook(context.Background(), func(age time.Duration) {
		fmt.Println("stale answer, age", age)
	})
	_, _, _ = lastKnownGood.Lookup(ctx, backend.DHCPRequest{})
	_, _, _ = lastKnownGood.Lookup(context.Background(), backend.DHCPRequest{}) // no hook: nothing reported
	// Output: stale answer, age 1m30s
}
