package dhcpserver

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"go.opentelemetry.io/otel/trace"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/internal/tracectx"
)

// ErrServerClosed is returned by [Server.Serve] and [Server.ServeConn]
// after [Server.Shutdown] or [Server.Close].
var ErrServerClosed = errors.New("dhcpserver: server closed")

// Server is a reservation-only DHCPv4 server: every answer comes from its
// [backend.Backend]. Create it with [New]; its methods are safe for
// concurrent use.
type Server struct {
	cfg   *config
	stats counters

	ctx    context.Context // canceled by Close: aborts lookups
	cancel context.CancelFunc

	mu       sync.Mutex
	conns    map[packetConn]struct{}
	closing  bool
	serving  sync.WaitGroup // running serve loops
	addr     net.Addr
	scratchP sync.Pool

	fmu     sync.Mutex
	flights map[[6]byte]*flight
}

// New validates cfg and returns a server. Errors wrap
// [backend.ErrInvalidConfig]. New opens no socket: [Server.Serve] does.
func New(cfg Config) (*Server, error) {
	c, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:     c,
		ctx:     ctx,
		cancel:  cancel,
		conns:   map[packetConn]struct{}{},
		flights: map[[6]byte]*flight{},
	}
	s.scratchP.New = func() any { return newScratch() }
	return s, nil
}

// Serve opens the socket that the configuration names (raw mode on
// Config.Interface, or UDP mode on Config.UDPAddr) and answers requests
// until [Server.Shutdown] or [Server.Close], after which it returns
// [ErrServerClosed]. It returns other errors when the socket cannot be
// opened or fails. Raw mode returns [ErrUnsupported] on systems other than
// Linux.
func (s *Server) Serve() error {
	var (
		c   packetConn
		err error
	)
	switch {
	case s.cfg.Interface != "":
		c, err = listenRaw(s.cfg.Interface, s.cfg.ServerAddr)
		if errors.Is(err, ErrUnsupported) {
			return err
		}
	case s.cfg.UDPAddr.IsValid():
		var uc *net.UDPConn
		uc, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(s.cfg.UDPAddr))
		if err == nil {
			c = &udpConn{uc}
		}
	default:
		return errors.New("dhcpserver: Serve needs Config.Interface or Config.UDPAddr; use ServeConn for a socket of your own")
	}
	if err != nil {
		return err
	}
	return s.serve(c)
}

// ServeConn answers requests arriving on conn in UDP mode (see [Config])
// until [Server.Shutdown] or [Server.Close], which close conn; it then
// returns [ErrServerClosed].
//
// This is the easy way to run a server on loopback without privileges:
//
//	conn, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
//	go srv.ServeConn(conn)
//	// send requests to conn.LocalAddr(); replies come back to their source.
func (s *Server) ServeConn(conn *net.UDPConn) error {
	return s.serve(&udpConn{conn})
}

// Addr returns the local address of the most recently opened socket: a
// *net.UDPAddr in UDP mode (useful with port 0), nil before it is open.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Shutdown stops reading packets, waits for the packets being handled to
// be answered, then releases everything. If ctx ends first, it closes the
// server as [Server.Close] does and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stop(false)
	done := make(chan struct{})
	go func() {
		s.serving.Wait()
		close(done)
	}()
	select {
	case <-done:
		s.cancel()
		return nil
	case <-ctx.Done():
		s.cancel()
		<-done
		return ctx.Err()
	}
}

// Close stops the server now: it closes its sockets and cancels running
// lookups. Serve returns soon after.
func (s *Server) Close() error {
	s.cancel()
	s.stop(true)
	return nil
}

// stop makes the serve loops end: at once (closing their sockets) or after
// their next read, which a deadline in the past interrupts, so that
// handled packets can still be answered.
func (s *Server) stop(now bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing = true
	for c := range s.conns {
		if now {
			c.Close()
		} else {
			c.SetReadDeadline(time.Unix(1, 0))
		}
	}
}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() Stats { return s.stats.snapshot() }

func (s *Server) drop(r DropReason) { s.stats.dropped[dropIndex(r)].Add(1) }

type job struct {
	buf []byte // whole buffer, returned to the free list
	n   int
	p   peer
}

func (s *Server) serve(c packetConn) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		c.Close()
		return ErrServerClosed
	}
	s.conns[c] = struct{}{}
	s.addr = c.LocalAddr()
	s.serving.Add(1)
	s.mu.Unlock()
	defer s.serving.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()

	n := s.cfg.maxInFlight
	jobs := make(chan job, n)
	free := make(chan []byte, 2*n+1)
	for range cap(free) {
		free <- make([]byte, readSize)
	}
	var workers sync.WaitGroup
	for range n {
		workers.Go(func() {
			sc := newScratch()
			for j := range jobs {
				s.process(c, sc, j.buf[:j.n], j.p)
				free <- j.buf
			}
		})
	}
	var err error
	for {
		buf := <-free
		k, p, rerr := c.ReadPacket(buf)
		if rerr != nil {
			free <- buf
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				err = ErrServerClosed
			} else if errors.Is(rerr, errSkip) {
				continue
			} else {
				err = rerr
			}
			break
		}
		if k > maxPayload {
			s.drop(DropOversize)
			free <- buf
			continue
		}
		select {
		case jobs <- job{buf: buf, n: k, p: p}:
		default:
			s.drop(DropQueueFull)
			free <- buf
		}
	}
	close(jobs)
	workers.Wait()
	return err
}

// process handles one packet from c and sends the reply, if any.
func (s *Server) process(c packetConn, sc *scratch, pkt []byte, p peer) {
	if p.malformed {
		s.drop(DropMalformed)
		return
	}
	r, req := s.handlePacket(s.ctx, sc, pkt)
	if r.payload == nil {
		s.drop(r.drop)
		return
	}
	if err := c.WriteReply(sc.out, len(r.payload), r.dst, req.ClientHWAddr, p); err != nil {
		s.cfg.logger.Debug("dhcp: write failed", "mac", req.ClientHWAddr, "dst", r.dst.Addr, "err", err)
		s.drop(DropWrite)
		return
	}
	s.stats.answered[r.typ].Add(1)
}

// handlePacket parses pkt and answers it into sc.
func (s *Server) handlePacket(ctx context.Context, sc *scratch, pkt []byte) (result, *dhcpv4.DHCPv4) {
	req, err := dhcpv4.FromBytes(pkt)
	if err != nil {
		s.cfg.logger.Debug("dhcp: dropping malformed packet", "err", err)
		return result{drop: DropMalformed}, nil
	}
	r := s.handle(ctx, sc, req)
	if r.payload == nil {
		s.cfg.logger.Debug("dhcp: no reply", "mac", req.ClientHWAddr, "reason", r.drop)
	}
	return r, req
}

// Handle answers one request as the server would, without any socket: it
// returns the reply (nil when the server stays silent) and where the server
// would send it. It looks up the Backend with ctx (bounded by
// Config.LookupTimeout) and counts in [Server.Stats] as a received packet
// does. It is meant for tests and for embedding the server's logic in
// another transport.
func (s *Server) Handle(ctx context.Context, req *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, Destination) {
	if req == nil {
		s.drop(DropMalformed)
		return nil, Destination{}
	}
	sc := s.scratchP.Get().(*scratch)
	defer s.scratchP.Put(sc)
	r := s.handle(ctx, sc, req)
	if r.payload == nil {
		s.drop(r.drop)
		return nil, Destination{}
	}
	reply, err := dhcpv4.FromBytes(r.payload)
	if err != nil { // a bug: the server never emits a packet it cannot parse
		s.cfg.logger.Error("dhcp: built an unparseable reply", "mac", req.ClientHWAddr, "err", err)
		s.drop(DropMalformed)
		return nil, Destination{}
	}
	s.stats.answered[r.typ].Add(1)
	return reply, r.dst
}

// flight is one Backend lookup, shared by the requests for the same MAC
// address that arrive while it runs.
type flight struct {
	wg          sync.WaitGroup // done when the lookup is
	dhcp        backend.DHCP
	netboot     backend.Netboot
	err         error
	traced      bool
	traceparent [26]byte // version, trace id, span id, flags
}

// lookup asks the Backend about mac, sharing a lookup already running for
// the same address. A request that joins a running lookup waits for it to
// end, which its own deadline (LookupTimeout) bounds.
func (s *Server) lookup(ctx context.Context, mac []byte) *flight {
	key := [6]byte(mac)
	s.fmu.Lock()
	if f, ok := s.flights[key]; ok {
		s.fmu.Unlock()
		s.stats.coalesced.Add(1)
		f.wg.Wait()
		return f
	}
	f := &flight{}
	f.wg.Add(1)
	s.flights[key] = f
	s.fmu.Unlock()

	defer func() {
		s.fmu.Lock()
		delete(s.flights, key)
		s.fmu.Unlock()
		f.wg.Done()
	}()

	ctx, cancel := context.WithTimeout(ctx, s.cfg.LookupTimeout)
	defer cancel()
	if s.cfg.tracer != nil {
		var span trace.Span
		ctx, span = s.cfg.tracer.Start(ctx, "dhcp.lookup", trace.WithSpanKind(trace.SpanKindClient))
		defer span.End()
	}
	req := backend.DHCPRequest{MACAddress: net.HardwareAddr(mac)}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		f.traced = true
		tid, sid := sc.TraceID(), sc.SpanID()
		f.traceparent[0] = 0
		copy(f.traceparent[1:17], tid[:])
		copy(f.traceparent[17:25], sid[:])
		f.traceparent[25] = byte(sc.TraceFlags())
		req.Traceparent = tracectx.Traceparent(ctx)
	}
	start := time.Now()
	s.stats.lookups.Add(1)
	f.dhcp, f.netboot, f.err = s.cfg.Backend.Lookup(ctx, req)
	s.stats.observe(time.Since(start))
	switch {
	case f.err == nil:
	case errors.Is(f.err, backend.ErrNotFound):
		s.stats.notFound.Add(1)
	default:
		s.stats.backendErrors.Add(1)
	}
	return f
}

// packetConn is a socket the server reads requests from and writes replies
// to: raw (AF_PACKET) or UDP.
type packetConn interface {
	// ReadPacket reads one request into buf and returns the length of the
	// DHCP payload, moved to the start of buf, and where it came from. An
	// error wrapping errSkip means "not for us, read on".
	ReadPacket(buf []byte) (int, peer, error)
	// WriteReply sends the DHCP payload at out[headroom:headroom+n] (out
	// has room for the lower-layer headers before it) to dst.
	WriteReply(out []byte, n int, dst Destination, chaddr []byte, p peer) error
	LocalAddr() net.Addr
	SetReadDeadline(time.Time) error
	Close() error
}

// peer describes where a request came from.
type peer struct {
	src       netip.AddrPort
	srcMAC    [6]byte
	malformed bool // lower-layer headers were invalid
}

var errSkip = errors.New("dhcpserver: skip packet")

// readSize is larger than any DHCP packet we accept, so that an oversize
// one is recognised as such rather than truncated.
const readSize = 64 + 14 + 60 + 8 + maxPayload

// udpConn is UDP mode.
type udpConn struct{ *net.UDPConn }

func (u *udpConn) ReadPacket(buf []byte) (int, peer, error) {
	n, from, err := u.ReadFromUDPAddrPort(buf)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return 0, peer{}, errSkip
		}
		return 0, peer{}, err
	}
	return n, peer{src: from}, nil
}

// WriteReply sends relayed replies to the relay (giaddr:67) and every other
// reply to the request's source address and port.
func (u *udpConn) WriteReply(out []byte, n int, dst Destination, _ []byte, p peer) error {
	to := p.src
	if dst.Addr.Port() == 67 {
		to = dst.Addr
	}
	_, err := u.WriteToUDPAddrPort(out[headroom:headroom+n], to)
	return err
}

var _ packetConn = (*udpConn)(nil)
