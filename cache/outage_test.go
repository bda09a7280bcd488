package cache_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/cache"
	"github.com/tinkerbell/backend/dhcpserver"
	"github.com/tinkerbell/backend/internal/natstest"
	natsbackend "github.com/tinkerbell/backend/nats"
	"github.com/tinkerbell/backend/responder"
)

// reservations is the out-of-process backend of the outage test.
type reservations map[string]backend.DHCP

func (r reservations) Lookup(_ context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
	d, ok := r[req.MACAddress.String()]
	if !ok {
		return backend.DHCP{}, backend.Netboot{}, backend.ErrNotFound
	}
	script := backend.URL("http://198.18.0.1:8080/" + d.Hostname + ".ipxe")
	return d, backend.Netboot{AllowNetboot: true, IPXEScriptURL: script}, nil
}

// ipxe makes a request look like iPXE with Tinkerbell's user class, the
// client that gets the reservation's script URL as its boot file.
func ipxe(d *dhcpv4.DHCPv4) {
	d.UpdateOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003016"))
	d.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientSystemArchitectureType, []byte{0, 7}))
	d.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientNetworkInterfaceIdentifier, []byte{1, 3, 16}))
	d.UpdateOption(dhcpv4.OptUserClass("Tinkerbell"))
}

// lease is what one DISCOVER/REQUEST exchange gave a client.
type lease struct {
	offer, ack string // yiaddr of OFFER and ACK; "" when none came
	bootFile   string // file field or option 67 of either reply
	slowest    time.Duration
}

// dora runs DISCOVER then (on an OFFER) REQUEST through srv.Handle, as the
// server handles packets from its socket.
func dora(ctx context.Context, srv *dhcpserver.Server, mac net.HardwareAddr) (lease, error) {
	var l lease
	discover, err := dhcpv4.NewDiscovery(mac, ipxe)
	if err != nil {
		return l, err
	}
	start := time.Now()
	offer, _ := srv.Handle(ctx, discover)
	l.slowest = time.Since(start)
	if offer == nil {
		return l, nil
	}
	l.offer = offer.YourIPAddr.String()
	l.bootFile = bootable(offer.BootFileName + string(offer.Options.Get(dhcpv4.OptionBootfileName)))
	request, err := dhcpv4.NewRequestFromOffer(offer, ipxe)
	if err != nil {
		return l, err
	}
	start = time.Now()
	ack, _ := srv.Handle(ctx, request)
	l.slowest = max(l.slowest, time.Since(start))
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		return l, nil
	}
	l.ack = ack.YourIPAddr.String()
	l.bootFile += bootable(ack.BootFileName + string(ack.Options.Get(dhcpv4.OptionBootfileName)))
	return l, nil
}

// bootable returns the boot file of a reply, or "" when the reply says the
// client may not netboot (the DHCP server's "/netboot-not-allowed", as
// Tinkerbell's smee sends it).
func bootable(file string) string {
	if file == "/netboot-not-allowed" {
		return ""
	}
	return file
}

// TestBackendOutage is issue 9's outage test with real components: a DHCP
// server whose backend is the cache around the nats requester, an embedded
// NATS server, and two responder replicas. With every responder stopped,
// MAC addresses answered before keep getting OFFER and ACK with the same
// address and no boot file, unknown ones get nothing, no exchange outlasts
// the server's lookup deadline, and the stale answers are counted.
func TestBackendOutage(t *testing.T) {
	const known, unknown = 5, 3
	hosts := reservations{}
	var macs []net.HardwareAddr
	for i := range known + unknown {
		mac := net.HardwareAddr{0x52, 0x54, 0, 0x0e, 0, byte(i + 1)}
		macs = append(macs, mac)
		if i < known {
			hosts[mac.String()] = backend.DHCP{
				IPAddress:  netip.AddrFrom4([4]byte{198, 18, 0, byte(10 + i)}),
				SubnetMask: backend.MaskFrom(24),
				Hostname:   fmt.Sprintf("node-%d", i),
			}
		}
	}

	ns := natstest.Run(t, nil)
	var replicas []*responder.Server
	served := make(chan error, 2)
	for range 2 {
		r, err := responder.New(responder.Config{Conn: natstest.Connect(t, ns), Backend: hosts})
		if err != nil {
			t.Fatal(err)
		}
		replicas = append(replicas, r)
		go func() { served <- r.Serve() }()
	}
	stopped := false
	stopAll := func() {
		if stopped {
			return
		}
		stopped = true
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, r := range replicas {
			if err := r.Shutdown(ctx); err != nil {
				t.Errorf("responder Shutdown: %v", err)
			}
		}
		for range replicas {
			if err := <-served; !errors.Is(err, responder.ErrServerClosed) {
				t.Errorf("responder Serve: %v", err)
			}
		}
	}
	t.Cleanup(stopAll)

	requester, err := natsbackend.New(natsbackend.Config{Conn: natstest.Connect(t, ns)})
	if err != nil {
		t.Fatal(err)
	}
	c, err := cache.New(cache.Config{Backend: requester, NegativeTTL: -1}) // no negative cache: every unknown lookup reaches the backend
	if err != nil {
		t.Fatal(err)
	}
	srv, err := dhcpserver.New(dhcpserver.Config{Backend: c, ServerAddr: netip.MustParseAddr("198.18.0.1"), NegativeTTL: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })

	// All MACs at once, as clients would; each result is checked on the
	// test goroutine.
	round := func(name string) []lease {
		t.Helper()
		leases := make([]lease, len(macs))
		errs := make([]error, len(macs))
		var wg sync.WaitGroup
		for i, mac := range macs {
			wg.Go(func() { leases[i], errs[i] = dora(t.Context(), srv, mac) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("%s: %v: %v", name, macs[i], err)
			}
		}
		return leases
	}

	before := round("backend up")
	for i, l := range before {
		if i < known {
			want := hosts[macs[i].String()].IPAddress.String()
			if l.offer != want || l.ack != want || l.bootFile == "" {
				t.Errorf("backend up: %v got %+v, want OFFER and ACK of %s with a boot file", macs[i], l, want)
			}
		} else if l.offer != "" {
			t.Errorf("backend up: unknown %v got an OFFER of %s", macs[i], l.offer)
		}
	}
	up := c.Stats()

	stopAll() // the backend outage: no responder is left
	during := round("backend down")
	var slowest time.Duration
	for i, l := range during {
		slowest = max(slowest, l.slowest)
		if i < known {
			want := before[i].offer
			if l.offer != want || l.ack != want || l.bootFile != "" {
				t.Errorf("backend down: %v got %+v, want OFFER and ACK of %s and no boot file", macs[i], l, want)
			}
		} else if l.offer != "" || l.ack != "" {
			t.Errorf("backend down: unknown %v got %+v, want nothing", macs[i], l)
		}
	}
	// No exchange outlasts the server's lookup deadline (generous slack
	// for a loaded machine).
	if limit := dhcpserver.DefaultLookupTimeout + 500*time.Millisecond; slowest > limit {
		t.Errorf("slowest packet during the outage took %v, more than the lookup deadline %v + slack", slowest, dhcpserver.DefaultLookupTimeout)
	}

	down := c.Stats()
	stale := down.StaleServes - up.StaleServes
	lookups := down.Lookups - up.Lookups
	if stale < known || down.StaleMisses-up.StaleMisses < unknown || down.Fresh != up.Fresh {
		t.Errorf("cache Stats during the outage: %+v (before: %+v); want ≥ %d stale serves, ≥ %d stale misses, no fresh answer",
			down, up, known, unknown)
	}
	ds := srv.Stats()
	t.Logf("outage: %d known and %d unknown clients, %d lookups, %d stale serves, %d stale misses; slowest packet %v; server answered %v",
		known, unknown, lookups, stale, down.StaleMisses-up.StaleMisses, slowest.Round(time.Millisecond), ds.Answered)
}
