package cache_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/cache"
)

// A backend that answers once and then becomes unavailable: the cache
// serves the last answer, without netboot.
func Example() {
	var down atomic.Bool
	inner := backend.BackendFunc(func(ctx context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
		if down.Load() {
			return backend.DHCP{}, backend.Netboot{}, backend.ErrNoBackend // as the nats requester says when no responder listens
		}
		if req.MACAddress.String() != "52:54:00:66:ea:9a" {
			return backend.DHCP{}, backend.Netboot{}, backend.ErrNotFound
		}
		return backend.DHCP{IPAddress: netip.MustParseAddr("198.18.0.10")}, backend.Netboot{AllowNetboot: true}, nil
	})
	c, err := cache.New(cache.Config{Backend: inner, MaxAge: time.Hour})
	if err != nil {
		log.Fatal(err)
	}
	known, _ := net.ParseMAC("52:54:00:66:ea:9a")
	unknown, _ := net.ParseMAC("52:54:00:00:00:01")
	ctx := context.Background()

	d, n, err := c.Lookup(ctx, backend.DHCPRequest{MACAddress: known})
	fmt.Println("up:", d.IPAddress, n.AllowNetboot, err)
	_, _, err = c.Lookup(ctx, backend.DHCPRequest{MACAddress: unknown})
	fmt.Println("up, unknown:", errors.Is(err, backend.ErrNotFound))

	down.Store(true)
	d, n, err = c.Lookup(ctx, backend.DHCPRequest{MACAddress: known})
	fmt.Println("down:", d.IPAddress, n.AllowNetboot, err)
	_, _, err = c.Lookup(ctx, backend.DHCPRequest{MACAddress: unknown})
	fmt.Println("down, unknown (negative cache):", errors.Is(err, backend.ErrNotFound))

	s := c.Stats()
	fmt.Println("stale serves:", s.StaleServes, "negative hits:", s.NegativeHits)
	// Output:
	// up: 198.18.0.10 true <nil>
	// up, unknown: true
	// down: 198.18.0.10 false <nil>
	// down, unknown (negative cache): true
	// stale serves: 1 negative hits: 1
}
