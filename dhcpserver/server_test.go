package dhcpserver

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/internal/testenv"
)

// startLoopback runs s in UDP mode on a new socket on 127.0.0.1 and
// returns the socket's address and Serve's result, for tests that shut the
// server down themselves.
func startLoopback(t *testing.T, s *Server) (netip.AddrPort, <-chan error) {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(conn) }()
	return conn.LocalAddr().(*net.UDPAddr).AddrPort(), errc
}

// serveLoopback runs s in UDP mode on 127.0.0.1 and returns the server's
// address. The server is shut down, and Serve's result checked, when t
// ends.
func serveLoopback(t *testing.T, s *Server) netip.AddrPort {
	t.Helper()
	addr, errc := startLoopback(t, s)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-errc; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return addr
}

// client is a UDP client on loopback.
type client struct {
	t    *testing.T
	conn *net.UDPConn
	srv  netip.AddrPort
}

func newClient(t *testing.T, srv netip.AddrPort) *client {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &client{t: t, conn: conn, srv: srv}
}

func (c *client) send(b []byte) {
	c.t.Helper()
	if _, err := c.conn.WriteToUDPAddrPort(b, c.srv); err != nil {
		c.t.Fatal(err)
	}
}

// exchange sends req and returns the reply.
func (c *client) exchange(req *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	c.t.Helper()
	c.send(req.ToBytes())
	if err := c.conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		c.t.Fatal(err)
	}
	buf := make([]byte, 1500)
	n, from, err := c.conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		c.t.Fatalf("no reply to %v: %v", req.MessageType(), err)
	}
	if from != c.srv {
		c.t.Errorf("reply from %v, want %v", from, c.srv)
	}
	p, err := dhcpv4.FromBytes(buf[:n])
	if err != nil {
		c.t.Fatalf("bad reply: %v", err)
	}
	return p
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond) // polling a condition, not synchronising
	}
}

func TestUDPModeDORA(t *testing.T) {
	s := newTestServer(t, testConfig(newMemBackend()))
	c := newClient(t, serveLoopback(t, s))

	offer := c.exchange(request(macKnown, dhcpv4.MessageTypeDiscover))
	if offer.MessageType() != dhcpv4.MessageTypeOffer || !offer.YourIPAddr.Equal(clientIP.AsSlice()) {
		t.Fatalf("offer: %v", offer.Summary())
	}
	req, err := dhcpv4.NewRequestFromOffer(offer)
	if err != nil {
		t.Fatal(err)
	}
	ack := c.exchange(req)
	if ack.MessageType() != dhcpv4.MessageTypeAck || !ack.YourIPAddr.Equal(clientIP.AsSlice()) {
		t.Fatalf("ack: %v", ack.Summary())
	}
	if got, want := ack.SubnetMask().String(), "ffffff00"; got != want {
		t.Errorf("mask %v, want %v", got, want)
	}

	// A garbage datagram is dropped and counted, and the server goes on.
	c.send([]byte("definitely not DHCP"))
	waitFor(t, "malformed drop", func() bool { return s.Stats().Dropped[DropMalformed] == 1 })
	c.exchange(request(macKnown, dhcpv4.MessageTypeDiscover))

	// A reply is counted after it is written: the client can read it first.
	waitFor(t, "the second OFFER counted", func() bool { return s.Stats().Answered[dhcpv4.MessageTypeOffer] == 2 })
	st := s.Stats()
	st.LookupLatency = Histogram{}
	want := Stats{
		Received: map[dhcpv4.MessageType]uint64{dhcpv4.MessageTypeDiscover: 2, dhcpv4.MessageTypeRequest: 1},
		Answered: map[dhcpv4.MessageType]uint64{dhcpv4.MessageTypeOffer: 2, dhcpv4.MessageTypeAck: 1},
		Dropped:  map[DropReason]uint64{DropMalformed: 1},
		Lookups:  1, // the DISCOVER's answer serves the REQUEST and the next DISCOVER
		Reused:   2,
	}
	if diff := cmp.Diff(want, st); diff != "" {
		t.Errorf("Stats (-want +got):\n%s", diff)
	}
	if h := s.Stats().LookupLatency; h.Count != 1 || len(h.Counts) != len(h.Bounds)+1 {
		t.Errorf("latency histogram %+v, want 1 observation", h)
	}
}

// TestListenAndServeUDP: ListenAndServe opens Config.UDPAddr itself.
func TestListenAndServeUDP(t *testing.T) {
	// A free port: open, note, close. Another process could take it in
	// between; the client then gets no reply and the test fails loudly.
	probe, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.LocalAddr().(*net.UDPAddr).AddrPort()
	probe.Close()
	cfg := testConfig(newMemBackend())
	cfg.UDPAddr = addr
	s := newTestServer(t, cfg)
	errc := make(chan error, 1)
	go func() { errc <- s.ListenAndServe() }()
	c := newClient(t, addr)
	// The socket opens in the goroutine: resend until the first reply.
	deadline := time.Now().Add(10 * time.Second)
	buf := make([]byte, 1500)
	for {
		c.send(request(macKnown, dhcpv4.MessageTypeDiscover).ToBytes())
		c.conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, _, err := c.conn.ReadFromUDPAddrPort(buf)
		if err == nil {
			if p, err := dhcpv4.FromBytes(buf[:n]); err != nil || p.MessageType() != dhcpv4.MessageTypeOffer {
				t.Fatalf("reply %v, %v", p, err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no reply from ListenAndServe on %v: %v", addr, err)
		}
	}
	s.Close()
	if err := <-errc; !errors.Is(err, ErrServerClosed) {
		t.Errorf("ListenAndServe after Close: %v", err)
	}
	if err := s.ListenAndServe(); !errors.Is(err, ErrServerClosed) {
		t.Errorf("ListenAndServe on a closed server: %v", err)
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(conn); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve on a closed server: %v", err)
	}
}

func TestRelayedUDP(t *testing.T) {
	// A relay on loopback: giaddr 127.0.0.1 means the reply goes to
	// 127.0.0.1:67, which needs root to bind.
	testenv.Require(t, testenv.Root)
	relay, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 67})
	if err != nil {
		t.Fatalf("cannot bind port 67: %v", err)
	}
	defer relay.Close()
	s := newTestServer(t, testConfig(newMemBackend()))
	srv := serveLoopback(t, s)
	req := request(macKnown, dhcpv4.MessageTypeDiscover, dhcpv4.WithRelay(net.IPv4(127, 0, 0, 1)), withOpt(82, 1, 3, 'p', '1', '7'))
	if _, err := relay.WriteToUDPAddrPort(req.ToBytes(), srv); err != nil {
		t.Fatal(err)
	}
	relay.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 1500)
	n, err := relay.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	p, err := dhcpv4.FromBytes(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	if got := string(p.Options[82]); got != "\x01\x03p17" {
		t.Errorf("option 82 %q, want it echoed", got)
	}
}

// TestCoalescing: requests for one MAC that arrive while its lookup runs
// share that lookup.
func TestCoalescing(t *testing.T) {
	release := make(chan struct{})
	var n int
	var mu sync.Mutex
	be := backend.BackendFunc(func(ctx context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
		mu.Lock()
		n++
		mu.Unlock()
		select {
		case <-release:
		case <-ctx.Done():
			return backend.DHCP{}, backend.Netboot{}, ctx.Err()
		}
		return reservation(), backend.Netboot{}, nil
	})
	s := newTestServer(t, testConfig(be))
	const waiters = 8
	var wg sync.WaitGroup
	replies := make(chan *dhcpv4.DHCPv4, waiters)
	for i := range waiters {
		typ := dhcpv4.MessageTypeDiscover
		mods := []dhcpv4.Modifier{}
		if i%2 == 1 { // DISCOVER and REQUEST alike
			typ = dhcpv4.MessageTypeRequest
			mods = append(mods, withIPOpt(54, serverIP), withIPOpt(50, clientIP))
		}
		wg.Go(func() {
			p, _ := s.Handle(t.Context(), request(macKnown, typ, mods...))
			replies <- p
		})
	}
	waitFor(t, "all requests waiting on one lookup", func() bool { return s.stats.waiting.Load() == waiters })
	close(release)
	wg.Wait()
	close(replies)
	for p := range replies {
		if p == nil || !p.YourIPAddr.Equal(clientIP.AsSlice()) {
			t.Errorf("reply %v", p)
		}
	}
	if st := s.Stats(); n != 1 || st.Lookups != 1 || st.Coalesced != waiters-1 {
		t.Errorf("backend called %d times (Stats.Lookups %d, Coalesced %d), want 1 (1, %d)", n, st.Lookups, st.Coalesced, waiters-1)
	}
	// Once done, a retransmission reuses the answer.
	s.Handle(t.Context(), request(macKnown, dhcpv4.MessageTypeDiscover))
	if st := s.Stats(); n != 1 || st.Reused != 1 {
		t.Errorf("backend called %d times, Reused %d; want 1, 1", n, st.Reused)
	}
}

// TestShutdownDrains: Shutdown waits for a packet being handled and its
// reply is still sent; Close aborts a running lookup.
func TestShutdownDrains(t *testing.T) {
	be := newHeldBackend()
	s := newTestServer(t, testConfig(be))
	addr, errc := startLoopback(t, s)
	c := newClient(t, addr)
	c.send(request(macKnown, dhcpv4.MessageTypeDiscover).ToBytes())
	<-be.started
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	waitFor(t, "serve loop to stop reading", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.closing
	})
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v while a packet was in flight", err)
	default:
	}
	close(be.release)
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-errc; !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve: %v", err)
	}
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 1500)
	if _, _, err := c.conn.ReadFromUDPAddrPort(buf); err != nil {
		t.Errorf("the in-flight reply was not sent: %v", err)
	}
}

func TestCloseAbortsLookup(t *testing.T) {
	s := newTestServer(t, testConfig(newMemBackend()))
	addr, errc := startLoopback(t, s)
	c := newClient(t, addr)
	c.send(request(macSlow, dhcpv4.MessageTypeDiscover).ToBytes()) // blocks until its context ends
	waitFor(t, "lookup running", func() bool { return s.Stats().Lookups == 1 })
	s.Close()
	if err := <-errc; !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve: %v", err)
	}
	// The lookup, which waits for its context, ends too.
	waitFor(t, "the aborted lookup to end", func() bool { return s.Stats().BackendErrors == 1 })
}

func TestNewRejects(t *testing.T) {
	good := testConfig(newMemBackend())
	tests := []struct {
		name string
		mod  func(*Config)
	}{
		{"no backend", func(c *Config) { c.Backend = nil }},
		{"no server address", func(c *Config) { c.ServerAddr = netip.Addr{} }},
		{"IPv6 server address", func(c *Config) { c.ServerAddr = netip.MustParseAddr("2001:db8::1") }},
		{"unspecified server address", func(c *Config) { c.ServerAddr = netip.IPv4Unspecified() }},
		{"broadcast server address", func(c *Config) { c.ServerAddr = netip.MustParseAddr("255.255.255.255") }},
		{"multicast server address", func(c *Config) { c.ServerAddr = netip.MustParseAddr("224.0.0.1") }},
		{"raw and UDP", func(c *Config) { c.Interface = "eth0"; c.UDPAddr = netip.MustParseAddrPort("127.0.0.1:67") }},
		{"negative timeout", func(c *Config) { c.LookupTimeout = -1 }},
		{"tiny lease", func(c *Config) { c.DefaultLeaseTime = time.Millisecond }},
		{"http base not http", func(c *Config) { c.Netboot.HTTPBaseURL = mustURL("ftp://198.18.0.1/") }},
		{"tftp base relative", func(c *Config) { c.Netboot.TFTPBaseURL = mustURL("/ipxe") }},
		{"empty binary name", func(c *Config) { c.Netboot.Binaries = map[iana.Arch]string{7: ""} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.mod(&cfg)
			_, err := New(cfg)
			if diff := cmp.Diff(backend.ErrInvalidConfig, err, cmpopts.EquateErrors()); diff != "" {
				t.Errorf("New: %v, want an error wrapping ErrInvalidConfig", err)
			}
		})
	}
	if _, err := New(good); err != nil {
		t.Errorf("New(good config): %v", err)
	}
}

func TestListenAndServeWithoutSocket(t *testing.T) {
	s := newTestServer(t, testConfig(newMemBackend()))
	if err := s.ListenAndServe(); err == nil || errors.Is(err, ErrServerClosed) {
		t.Errorf("ListenAndServe without Interface or UDPAddr: %v", err)
	}
}

// TestServeReadPaths: a *net.UDPConn is read in batches, any other
// net.PacketConn one packet at a time; both answer every request of a
// burst from a known client, each to its source.
func TestServeReadPaths(t *testing.T) {
	for _, tt := range []struct {
		name string
		wrap func(*net.UDPConn) net.PacketConn
	}{
		{"batch", func(c *net.UDPConn) net.PacketConn { return c }},
		{"single", func(c *net.UDPConn) net.PacketConn { return plainConn{c} }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, testConfig(newMemBackend()))
			conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			addr := conn.LocalAddr().(*net.UDPAddr).AddrPort()
			errc := make(chan error, 1)
			go func() { errc <- s.Serve(tt.wrap(conn)) }()
			// Answered once, the client is known: its burst has the
			// known clients' queue.
			if p := newClient(t, addr).exchange(request(macKnown, dhcpv4.MessageTypeDiscover)); p.MessageType() != dhcpv4.MessageTypeOffer {
				t.Fatalf("first reply %v, want an OFFER", p.MessageType())
			}
			const burst = 2 * readBatch
			clients := make([]*client, burst)
			for i := range clients {
				clients[i] = newClient(t, addr)
				clients[i].send(request(macKnown, dhcpv4.MessageTypeDiscover).ToBytes())
			}
			buf := make([]byte, 1500)
			for i, c := range clients {
				if err := c.conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
					t.Fatal(err)
				}
				n, from, err := c.conn.ReadFromUDPAddrPort(buf)
				if err != nil {
					t.Fatalf("client %d: no reply: %v (dropped %v)", i, err, s.Stats().Dropped)
				}
				p, err := dhcpv4.FromBytes(buf[:n])
				if err != nil || p.MessageType() != dhcpv4.MessageTypeOffer || from != addr {
					t.Fatalf("client %d: reply %v from %v (%v), want an OFFER from %v", i, p, from, err, addr)
				}
			}
			s.Close()
			if err := <-errc; !errors.Is(err, ErrServerClosed) {
				t.Errorf("Serve = %v, want ErrServerClosed", err)
			}
		})
	}
}
