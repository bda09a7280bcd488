package dhcpserver

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/internal/natstest"
	natsbackend "github.com/tinkerbell/backend/nats"
	"github.com/tinkerbell/backend/responder"
)

// countingBackend counts the lookups that reach it, per MAC address, and
// those for MAC addresses it does not know.
type countingBackend struct {
	inner   backend.Backend
	mu      sync.Mutex
	perMAC  map[string]int
	unknown atomic.Int64
}

func newCounting(inner backend.Backend) *countingBackend {
	return &countingBackend{inner: inner, perMAC: map[string]int{}}
}

func (c *countingBackend) Lookup(ctx context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
	c.mu.Lock()
	c.perMAC[req.MACAddress.String()]++
	c.mu.Unlock()
	d, n, err := c.inner.Lookup(ctx, req)
	if errors.Is(err, backend.ErrNotFound) {
		c.unknown.Add(1)
	}
	return d, n, err
}

func (c *countingBackend) calls(mac net.HardwareAddr) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.perMAC[mac.String()]
}

// overNATS serves be with a responder on an embedded NATS server and
// returns the requester that asks it: the whole chain the DHCP server
// uses in production (hedging off).
func overNATS(t *testing.T, be backend.Backend) backend.Backend {
	t.Helper()
	ns := natstest.Run(t, nil)
	resp, err := responder.New(responder.Config{Conn: natstest.Connect(t, ns), Backend: be})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- resp.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := resp.Shutdown(ctx); err != nil {
			t.Errorf("responder Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, responder.ErrServerClosed) {
			t.Errorf("responder Serve: %v", err)
		}
	})
	// Without hedging, which would send a slow lookup twice: the counts at
	// the Backend are then the server's lookups.
	requester, err := natsbackend.New(natsbackend.Config{Conn: natstest.Connect(t, ns), HedgeDelay: -1})
	if err != nil {
		t.Fatal(err)
	}
	return requester
}

// exchangeTimeout sends req up to tries times, waiting wait for a reply of
// type want each time, as a client that retransmits does. It returns the
// reply, or nil.
func (c *client) exchangeTimeout(req *dhcpv4.DHCPv4, want dhcpv4.MessageType, tries int, wait time.Duration) *dhcpv4.DHCPv4 {
	buf := make([]byte, 1500)
	b := req.ToBytes()
	for range tries {
		if _, err := c.conn.WriteToUDPAddrPort(b, c.srv); err != nil {
			return nil
		}
		deadline := time.Now().Add(wait)
		for {
			c.conn.SetReadDeadline(deadline)
			n, _, err := c.conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				break // timeout: retransmit
			}
			p, err := dhcpv4.FromBytes(buf[:n])
			if err == nil && p.TransactionID == req.TransactionID && p.MessageType() == want {
				return p
			}
		}
	}
	return nil
}

// dora runs DISCOVER/OFFER/REQUEST/ACK for mac, sending each message
// copies times in a row (retransmissions), and reports whether it got
// its ACK.
func (c *client) dora(mac net.HardwareAddr, xid byte, copies, tries int, wait time.Duration) bool {
	id := func(d *dhcpv4.DHCPv4) { d.TransactionID = dhcpv4.TransactionID{mac[4], mac[5], 0, xid} }
	disc := request(mac, dhcpv4.MessageTypeDiscover, id)
	for range copies - 1 {
		c.conn.WriteToUDPAddrPort(disc.ToBytes(), c.srv)
	}
	offer := c.exchangeTimeout(disc, dhcpv4.MessageTypeOffer, tries, wait)
	if offer == nil {
		return false
	}
	req := request(mac, dhcpv4.MessageTypeRequest, id, withIPOpt(54, serverIP), withOpt(50, offer.YourIPAddr.To4()...))
	for range copies - 1 {
		c.conn.WriteToUDPAddrPort(req.ToBytes(), c.srv)
	}
	return c.exchangeTimeout(req, dhcpv4.MessageTypeAck, tries, wait) != nil
}

// TestOneLookupPerDORA: a DORA costs one lookup, counted at the Backend
// behind NATS, also when the client retransmits; renewals and
// INIT-REBOOT ask again.
func TestOneLookupPerDORA(t *testing.T) {
	be := newCounting(newMemBackend())
	cfg := testConfig(overNATS(t, be))
	cfg.MinLookupInterval = -1 // so that the renewals below reach the Backend
	s := newTestServer(t, cfg)
	c := newClient(t, serveLoopback(t, s))
	macs := []net.HardwareAddr{macKnown, macNoBoot, macLease0}

	type counts struct{ DORA, Retransmitted, Renew, InitReboot int }
	var got counts
	if !c.dora(macs[0], 1, 1, 3, 5*time.Second) {
		t.Fatal("DORA failed")
	}
	got.DORA = be.calls(macs[0])
	if !c.dora(macs[1], 1, 3, 3, 5*time.Second) {
		t.Fatal("DORA with retransmissions failed")
	}
	got.Retransmitted = be.calls(macs[1])

	renew := request(macs[0], dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(clientIP.AsSlice()))
	if c.exchangeTimeout(renew, dhcpv4.MessageTypeAck, 3, 5*time.Second) == nil {
		t.Fatal("no ACK to the renewal")
	}
	got.Renew = be.calls(macs[0])
	if !c.dora(macs[2], 1, 1, 3, 5*time.Second) {
		t.Fatal("DORA failed")
	}
	reboot := request(macs[2], dhcpv4.MessageTypeRequest, withIPOpt(50, clientIP))
	if c.exchangeTimeout(reboot, dhcpv4.MessageTypeAck, 3, 5*time.Second) == nil {
		t.Fatal("no ACK to INIT-REBOOT")
	}
	got.InitReboot = be.calls(macs[2])

	want := counts{DORA: 1, Retransmitted: 1, Renew: 2, InitReboot: 2}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Backend lookups (-want +got):\n%s", diff)
	}
}

// TestAdmissionCaches: the negative cache and the per-MAC limit, with
// Handle.
func TestAdmissionCaches(t *testing.T) {
	tests := []struct {
		name    string
		cfg     func(*Config)
		reqs    []*dhcpv4.DHCPv4
		lookups int
		drops   map[DropReason]uint64
		reused  uint64 // checked when not zero
	}{
		{name: "not found is remembered", reqs: repeat(5, request(macNone, dhcpv4.MessageTypeDiscover)),
			lookups: 1, drops: map[DropReason]uint64{DropNotFound: 5}},
		{name: "negative cache off", cfg: func(c *Config) { c.NegativeTTL, c.MinLookupInterval = -1, -1 },
			reqs: repeat(3, request(macNone, dhcpv4.MessageTypeDiscover)), lookups: 3, drops: map[DropReason]uint64{DropNotFound: 3}},
		{name: "per-MAC limit: a burst of 5, then the last answer",
			reqs:    repeat(7, request(macKnown, dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(clientIP.AsSlice()))),
			lookups: 5, drops: map[DropReason]uint64{}, reused: 2},
		{name: "per-MAC limit without answer reuse: a burst of 5, then dropped", cfg: func(c *Config) { c.AnswerReuse = -1 },
			reqs:    repeat(7, request(macKnown, dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(clientIP.AsSlice()))),
			lookups: 5, drops: map[DropReason]uint64{DropMACLimited: 2}},
		{name: "per-MAC limit after failures", reqs: repeat(7, request(macError, dhcpv4.MessageTypeDiscover)),
			lookups: 5, drops: map[DropReason]uint64{DropBackend: 5, DropMACLimited: 2}},
		{name: "per-MAC limit off", cfg: func(c *Config) { c.MinLookupInterval = -1 },
			reqs:    repeat(7, request(macKnown, dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(clientIP.AsSlice()))),
			lookups: 7, drops: map[DropReason]uint64{}},
		{name: "a new transaction asks again", reqs: []*dhcpv4.DHCPv4{
			request(macKnown, dhcpv4.MessageTypeDiscover),
			request(macKnown, dhcpv4.MessageTypeDiscover), // retransmitted
			request(macKnown, dhcpv4.MessageTypeDiscover, func(d *dhcpv4.DHCPv4) { d.TransactionID[0] = 9 }),
		}, lookups: 2, drops: map[DropReason]uint64{}},
		{name: "unknown clients are limited by the not-found budget", cfg: func(c *Config) { c.NotFoundRate, c.NotFoundBurst = 2, 2 },
			reqs: []*dhcpv4.DHCPv4{
				request(net.HardwareAddr{2, 0, 0, 0, 0, 1}, dhcpv4.MessageTypeDiscover),
				request(net.HardwareAddr{2, 0, 0, 0, 0, 2}, dhcpv4.MessageTypeDiscover),
				request(net.HardwareAddr{2, 0, 0, 0, 0, 3}, dhcpv4.MessageTypeDiscover),
				request(net.HardwareAddr{2, 0, 0, 0, 0, 4}, dhcpv4.MessageTypeDiscover),
			},
			lookups: 2, drops: map[DropReason]uint64{DropNotFound: 2, DropUnknownLimited: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := newCounting(newMemBackend())
			cfg := testConfig(be)
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			s := newTestServer(t, cfg)
			for _, r := range tt.reqs {
				s.Handle(t.Context(), r)
			}
			st := s.Stats()
			if int(st.Lookups) != tt.lookups {
				t.Errorf("Lookups = %d, want %d", st.Lookups, tt.lookups)
			}
			if diff := cmp.Diff(tt.drops, st.Dropped); diff != "" {
				t.Errorf("Dropped (-want +got):\n%s", diff)
			}
			if tt.reused != 0 && st.Reused != tt.reused {
				t.Errorf("Reused = %d, want %d", st.Reused, tt.reused)
			}
		})
	}
}

func repeat(n int, r *dhcpv4.DHCPv4) []*dhcpv4.DHCPv4 {
	out := make([]*dhcpv4.DHCPv4, n)
	for i := range out {
		out[i] = r
	}
	return out
}

// TestClientsBounded: the table of clients stays within MaxClients, and a
// flood of unknown MAC addresses does not evict the clients the server
// answered.
func TestClientsBounded(t *testing.T) {
	c := newClients(64, 5)
	now := time.Now()
	var known [][6]byte
	for i := range 16 {
		mac := [6]byte{2, 0, 0, 0, 1, byte(i)}
		c.store(mac, &flight{}, now)
		c.replied(mac, now)
		known = append(known, mac)
	}
	for i := range 10000 {
		c.store([6]byte{2, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)}, &flight{err: backend.ErrNotFound}, now.Add(time.Duration(i)))
	}
	if n := c.len(); n > 64 {
		t.Errorf("%d clients remembered, want at most 64", n)
	}
	for _, mac := range known {
		if !c.known(mac, now, time.Hour) {
			t.Errorf("known client %x was evicted by the flood", mac)
		}
	}
}

// TestUnknownFlood: a flood of DISCOVERs from distinct unknown MAC
// addresses, as fast as this test can send them, while known clients run
// DORAs over real sockets, with the whole chain behind the server
// (requester, embedded NATS, responder). At least 99 % of the known DORAs
// complete, and the lookups for unknown MAC addresses that reach the
// Backend stay within the not-found budget: its burst, its rate over the
// test's time, and the lookups the unknown queue's workers had running
// when it emptied.
func TestUnknownFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("flood test")
	}
	known := make([]net.HardwareAddr, 10)
	res := map[string]backend.DHCP{}
	for i := range known {
		known[i] = net.HardwareAddr{0x52, 0x54, 0, 0, 0x10, byte(i)}
		d := reservation()
		d.IPAddress = netip.AddrFrom4([4]byte{198, 18, 0, byte(100 + i)})
		d.MACAddress = known[i]
		res[known[i].String()] = d
	}
	be := newCounting(backend.BackendFunc(func(ctx context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
		if d, ok := res[req.MACAddress.String()]; ok {
			return d, backend.Netboot{}, nil
		}
		return backend.DHCP{}, backend.Netboot{}, backend.ErrNotFound
	}))
	const rateLimit, burst = 50, 50
	cfg := testConfig(overNATS(t, be))
	cfg.NotFoundRate, cfg.NotFoundBurst = rateLimit, burst
	cfg.AnswerReuse, cfg.MinLookupInterval = -1, -1 // every known DORA asks the Backend twice
	s := newTestServer(t, cfg)
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	conn.SetReadBuffer(4 << 20)
	start := time.Now()
	srv := serveConnUDP(t, s, conn)

	// The known clients got a lease before the flood.
	clients := make([]*client, len(known))
	for i, mac := range known {
		clients[i] = newClient(t, srv)
		if !clients[i].dora(mac, 0, 1, 5, time.Second) {
			t.Fatalf("warm-up DORA for %v failed: %+v", mac, s.Stats())
		}
	}

	const floodFor = 3 * time.Second
	ctx, cancel := context.WithTimeout(t.Context(), floodFor)
	defer cancel()
	var sent atomic.Int64
	var flood sync.WaitGroup
	flooder := newClient(t, srv)
	flood.Go(func() {
		req := request(net.HardwareAddr{0x02, 0, 0, 0, 0, 0}, dhcpv4.MessageTypeDiscover)
		b := req.ToBytes()
		for i := 0; ctx.Err() == nil; i++ {
			copy(b[28:34], []byte{0x02, 0xee, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)})
			if _, err := flooder.conn.WriteToUDPAddrPort(b, srv); err == nil {
				sent.Add(1)
			}
		}
	})
	var tried, completed atomic.Int64
	for i, c := range clients {
		flood.Go(func() {
			for xid := byte(1); ctx.Err() == nil; xid++ {
				tried.Add(1)
				// A client retransmits for a minute or more; 8 tries of
				// a second each is patient enough for a loaded machine
				// under -race and still fails a starved client.
				if c.dora(known[i], xid, 1, 8, time.Second) {
					completed.Add(1)
				}
			}
		})
	}
	flood.Wait()
	elapsed := time.Since(start)
	st := s.Stats()
	unknownLookups := be.unknown.Load()
	t.Logf("flood: %d DISCOVERs sent in %v; known DORAs %d/%d; unknown lookups at the backend %d; drops %v",
		sent.Load(), floodFor, completed.Load(), tried.Load(), unknownLookups, st.Dropped)
	if tried.Load() < 10 {
		t.Fatalf("only %d known DORAs tried", tried.Load())
	}
	if ratio := float64(completed.Load()) / float64(tried.Load()); ratio < 0.99 {
		t.Errorf("%d of %d known DORAs completed (%.1f %%), want at least 99 %%", completed.Load(), tried.Load(), 100*ratio)
	}
	// A token bucket of burst tokens refilled at rateLimit per second,
	// charged after each not-found: the lookups admitted while it held a
	// token, at most unknownWork of them running at once, may overdraw it
	// by that many.
	if limit := burst + int64(rateLimit*elapsed.Seconds()) + int64(s.cfg.unknownWork) + 1; unknownLookups > limit {
		t.Errorf("%d lookups for unknown MACs reached the Backend in %v, want at most %d (burst %d, %d/s, %d unknown workers)",
			unknownLookups, elapsed, limit, burst, rateLimit, s.cfg.unknownWork)
	}
	if st.Dropped[DropUnknownLimited] == 0 {
		t.Errorf("no %s drops: the not-found budget never emptied", DropUnknownLimited)
	}
	if sent.Load() < 10*unknownLookups {
		t.Errorf("only %d flood packets sent for %d unknown lookups: the flood did not flood", sent.Load(), unknownLookups)
	}
}

// serveConnUDP serves conn with s until t ends and returns its address.
func serveConnUDP(t *testing.T, s *Server, conn *net.UDPConn) netip.AddrPort {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(conn) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-errc; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve = %v, want ErrServerClosed", err)
		}
	})
	return conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// TestColdStart: after a restart the server has answered nobody, so every
// client counts as unknown. 500 clients with reservations doing DORAs at
// once, over real sockets, are all served, and none is dropped by the
// not-found budget (which only not-found answers spend), even with a
// budget much smaller than the number of clients.
func TestColdStart(t *testing.T) {
	const n = 500
	res := map[string]backend.DHCP{}
	macs := make([]net.HardwareAddr, n)
	for i := range macs {
		macs[i] = net.HardwareAddr{0x52, 0x54, 0, 0x20, byte(i >> 8), byte(i)}
		d := reservation()
		d.IPAddress = netip.AddrFrom4([4]byte{198, 18, 1 + byte(i>>8), byte(i)})
		d.MACAddress = macs[i]
		res[macs[i].String()] = d
	}
	be := newCounting(backend.BackendFunc(func(ctx context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
		if d, ok := res[req.MACAddress.String()]; ok {
			return d, backend.Netboot{}, nil
		}
		return backend.DHCP{}, backend.Netboot{}, backend.ErrNotFound
	}))
	cfg := testConfig(be)
	cfg.NotFoundRate, cfg.NotFoundBurst = 10, 10 // far below n: the old per-request limit would drop most
	s := newTestServer(t, cfg)
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	conn.SetReadBuffer(4 << 20)
	srv := serveConnUDP(t, s, conn)

	clients := make([]*client, n)
	for i := range clients {
		clients[i] = newClient(t, srv)
	}
	start := make(chan struct{})
	var completed atomic.Int64
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() {
			<-start
			// A client retransmits (a full unknown queue drops some
			// packets); 10 tries of a second each.
			if c.dora(macs[i], 1, 1, 10, time.Second) {
				completed.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	st := s.Stats()
	t.Logf("cold start: %d of %d DORAs completed; %d lookups; drops %v", completed.Load(), n, st.Lookups, st.Dropped)
	if completed.Load() != n {
		t.Errorf("%d of %d DORAs completed, want all", completed.Load(), n)
	}
	if d := st.Dropped[DropUnknownLimited]; d != 0 {
		t.Errorf("%d %s drops of clients with reservations, want none", d, DropUnknownLimited)
	}
	if be.unknown.Load() != 0 {
		t.Errorf("%d not-found lookups, want none", be.unknown.Load())
	}
}
