package dhcpserver

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/net/ipv4"
)

// ErrServerClosed is returned by [Server.Serve] and
// [Server.ListenAndServe] after [Server.Shutdown] or [Server.Close].
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
	scratchP sync.Pool

	flights  flights  // running lookups, by MAC address
	clients  *clients // recent answers and replies, by MAC address
	notFound *budget  // the not-found budget (Config.NotFoundRate); nil = no limit
}

// New validates cfg and returns a server. Errors wrap
// [backend.ErrInvalidConfig]. New opens no socket: [Server.ListenAndServe]
// or the caller does (see [Server.Serve]).
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
		clients: newClients(c.MaxClients, c.MACLookupBurst),
	}
	if c.NotFoundRate > 0 {
		s.notFound = newBudget(c.NotFoundRate, c.NotFoundBurst)
	}
	s.scratchP.New = func() any { return newScratch() }
	return s, nil
}

// ListenAndServe opens the socket that the configuration names (raw mode
// on Config.Interface with [ListenRaw], or UDP mode on Config.UDPAddr) and
// serves it as [Server.Serve] does. It returns [ErrServerClosed] after
// [Server.Shutdown] or [Server.Close], and other errors when the socket
// cannot be opened or fails; raw mode returns [ErrUnsupported] on systems
// other than Linux.
func (s *Server) ListenAndServe() error {
	var (
		conn net.PacketConn
		err  error
	)
	switch {
	case s.cfg.Interface != "":
		conn, err = ListenRaw(s.cfg.Interface)
	case s.cfg.UDPAddr.IsValid():
		conn, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(s.cfg.UDPAddr))
	default:
		return errors.New("dhcpserver: ListenAndServe needs Config.Interface or Config.UDPAddr; use Serve for a socket of your own")
	}
	if err != nil {
		return err
	}
	return s.Serve(conn)
}

// Serve answers the requests arriving on conn until [Server.Shutdown] or
// [Server.Close], which close conn; it then returns [ErrServerClosed]. It
// returns another error if reading from conn fails. Serve takes ownership
// of conn, which must not be served by another Server.
//
// conn is either a [*RawConn] from [ListenRaw] (raw mode, see [Config]),
// or any other [net.PacketConn], usually a [*net.UDPConn] (UDP mode).
// Since the caller opens conn, the server is ready as soon as Serve is
// called: requests sent to conn's address are queued by the kernel and
// answered once Serve reads them. This is the easy way to run a server
// on loopback without privileges:
//
//	conn, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
//	go srv.Serve(conn)
//	// send requests to conn.LocalAddr(); replies come back to their source.
func (s *Server) Serve(conn net.PacketConn) error {
	var c packetConn
	switch conn := conn.(type) {
	case *RawConn:
		conn.setSource(s.cfg.ServerAddr)
		c = conn
	case *net.UDPConn:
		c = newUDPConn(conn)
	default:
		c = &anyConn{conn}
	}
	return s.serve(c)
}

// Shutdown stops reading packets and waits for the packets being handled
// to be answered and the lookups still running to end; then Serve
// returns [ErrServerClosed]. If ctx ends first,
// Shutdown returns ctx's error and leaves the packets being handled to
// finish (or [Server.Close] to end them), as [net/http.Server.Shutdown]
// does.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stop(false)
	done := make(chan struct{})
	go func() {
		s.serving.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	// Lookups whose requests gave up (Handle callers) may still run;
	// wait for them as http.Server waits for idle connections: polling,
	// with a backoff.
	wait := time.Millisecond
	for s.stats.inflight.Load() > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		wait = min(2*wait, 100*time.Millisecond)
	}
	s.cancel()
	return nil
}

// Close stops the server now: it closes its sockets and cancels running
// lookups. Serve returns soon after, with [ErrServerClosed].
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

// knownQueueFactor is the length of the known clients' queue, in workers.
const knownQueueFactor = 4

func (s *Server) serve(c packetConn) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		c.Close()
		return ErrServerClosed
	}
	s.conns[c] = struct{}{}
	s.serving.Add(1)
	s.mu.Unlock()
	defer s.serving.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()

	// Two queues: packets from clients answered recently (known), each
	// with workers of its own, so that a flood from unknown MAC addresses
	// cannot starve them.
	n, u := s.cfg.maxInFlight, s.cfg.unknownWork
	// The known queue is deeper than the workers are many: on a shared
	// core the server may not run for a few milliseconds, and a burst of
	// DORAs from known clients must wait rather than be dropped.
	known := make(chan job, knownQueueFactor*n)
	unknown := make(chan job, u)
	free := make(chan []byte, cap(known)+n+2*u+1)
	for range cap(free) {
		free <- make([]byte, readSize)
	}
	var workers sync.WaitGroup
	work := func(jobs <-chan job) {
		sc := newScratch()
		for j := range jobs {
			s.process(c, sc, j.buf[:j.n], j.p)
			free <- j.buf
		}
	}
	for range n {
		workers.Go(func() { work(known) })
	}
	for range u {
		workers.Go(func() { work(unknown) })
	}
	dispatch := func(buf []byte, k int, p peer) {
		if k > maxPayload {
			s.drop(DropOversize)
			free <- buf
			return
		}
		q, full := unknown, DropUnknownQueueFull
		if s.isKnown(buf[:k]) {
			q, full = known, DropQueueFull
		}
		select {
		case q <- job{buf: buf, n: k, p: p}:
		default:
			s.drop(full)
			free <- buf
		}
	}
	// readFailed decides what a read error means: skip and read on (nil
	// and false), stop with err, or stop because the server is closing.
	readFailed := func(rerr error) (stop bool, err error) {
		s.mu.Lock()
		closing := s.closing
		s.mu.Unlock()
		switch {
		case closing:
			return true, ErrServerClosed
		case errors.Is(rerr, errSkip):
			return false, nil
		}
		return true, rerr
	}
	var err error
	if br, ok := c.(batchReader); ok {
		// As many requests as are queued in the socket, up to readBatch,
		// in one system call.
		bufs := make([][]byte, 0, readBatch)
		ns := make([]int, readBatch)
		peers := make([]peer, readBatch)
		for {
			bufs = append(bufs[:0], <-free)
		more:
			for len(bufs) < readBatch {
				select {
				case b := <-free:
					bufs = append(bufs, b)
				default:
					break more
				}
			}
			k, rerr := br.ReadBatch(bufs, ns, peers)
			for _, b := range bufs[k:] {
				free <- b
			}
			if rerr != nil {
				stop, e := readFailed(rerr)
				if stop {
					err = e
					break
				}
				continue
			}
			for i := range k {
				dispatch(bufs[i], ns[i], peers[i])
			}
		}
	} else {
		for {
			buf := <-free
			k, p, rerr := c.ReadPacket(buf)
			if rerr != nil {
				free <- buf
				stop, e := readFailed(rerr)
				if stop {
					err = e
					break
				}
				continue
			}
			dispatch(buf, k, p)
		}
	}
	close(known)
	close(unknown)
	// Shutdown waits for the packets being handled; after Close, a
	// worker still in a Backend call that ignores its context is left to
	// end on its own (its reply then fails on the closed socket).
	done := make(chan struct{})
	go func() {
		workers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-s.ctx.Done():
	}
	return err
}

// isKnown reports whether pkt comes from an Ethernet client that the
// server replied to within Config.KnownTTL.
func (s *Server) isKnown(pkt []byte) bool {
	if len(pkt) < 34 || pkt[1] != 1 || pkt[2] != 6 { // htype Ethernet, hlen 6
		return false
	}
	return s.clients.known([6]byte(pkt[28:34]), time.Now(), s.cfg.KnownTTL)
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
		s.cfg.logger.Debug("dhcp: write failed", "mac", macText(req.ClientHWAddr), "dst", r.dst.Addr, "error", err)
		s.drop(DropWrite)
		return
	}
	s.stats.answered[r.typ].Add(1)
}

// handlePacket parses pkt and answers it into sc.
func (s *Server) handlePacket(ctx context.Context, sc *scratch, pkt []byte) (result, *dhcpv4.DHCPv4) {
	req, err := dhcpv4.FromBytes(pkt)
	if err != nil {
		s.cfg.logger.Debug("dhcp: dropping malformed packet", "error", err)
		return result{drop: DropMalformed}, nil
	}
	r := s.handle(ctx, sc, req)
	if r.payload == nil {
		s.cfg.logger.Debug("dhcp: no reply", "mac", macText(req.ClientHWAddr), "xid", req.TransactionID.String(), "reason", r.drop)
	}
	return r, req
}

// Handle answers one request as the server would, without any socket: it
// returns the reply (nil when the server stays silent) and where the server
// would send it. It looks up the Backend with the values of ctx (its trace
// context), bounded by Config.LookupTimeout, and returns nil when ctx ends
// first; it counts in [Server.Stats] as a received packet
// does. It is meant for tests and for embedding the server's logic in
// another transport. When the reply on the wire carries options in its
// file and sname fields (option overload), the returned reply has them
// in Options, as a client reads them, and no option 52.
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
		s.cfg.logger.Error("dhcp: built an unparseable reply", "mac", macText(req.ClientHWAddr), "error", err)
		s.drop(DropMalformed)
		return nil, Destination{}
	}
	unoverload(reply, r.payload)
	s.stats.answered[r.typ].Add(1)
	return reply, r.dst
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

// readBatch is the most requests read in one system call.
const readBatch = 32

// batchReader is a packetConn that can read several requests at once.
type batchReader interface {
	// ReadBatch reads up to len(bufs) requests, the i-th into bufs[i]
	// with its length in ns[i] and its source in peers[i], and returns
	// how many it read. It waits for the first; errors as ReadPacket.
	ReadBatch(bufs [][]byte, ns []int, peers []peer) (int, error)
}

// udpConn is UDP mode.
type udpConn struct {
	*net.UDPConn
	batch *ipv4.PacketConn // reads with recvmmsg where there is one
	msgs  []ipv4.Message
}

func newUDPConn(c *net.UDPConn) *udpConn {
	return &udpConn{UDPConn: c, batch: ipv4.NewPacketConn(c), msgs: make([]ipv4.Message, readBatch)}
}

// ReadBatch implements batchReader (only the serve loop calls it).
func (u *udpConn) ReadBatch(bufs [][]byte, ns []int, peers []peer) (int, error) {
	msgs := u.msgs[:len(bufs)]
	for i, b := range bufs {
		if msgs[i].Buffers == nil {
			msgs[i].Buffers = make([][]byte, 1)
		}
		msgs[i].Buffers[0] = b
		msgs[i].N, msgs[i].Addr = 0, nil
	}
	k, err := u.batch.ReadBatch(msgs, 0)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return 0, errSkip
		}
		return 0, err
	}
	for i := range k {
		ns[i] = msgs[i].N
		peers[i] = peer{}
		if ua, ok := msgs[i].Addr.(*net.UDPAddr); ok {
			ap := ua.AddrPort()
			peers[i].src = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		}
		msgs[i].Buffers[0] = nil
	}
	return k, nil
}

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

// anyConn is UDP mode on a net.PacketConn that is not a *net.UDPConn.
type anyConn struct{ net.PacketConn }

func (a *anyConn) ReadPacket(buf []byte) (int, peer, error) {
	n, from, err := a.ReadFrom(buf)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return 0, peer{}, errSkip
		}
		return 0, peer{}, err
	}
	p := peer{}
	if ua, ok := from.(*net.UDPAddr); ok {
		p.src = ua.AddrPort()
	}
	return n, p, nil
}

// WriteReply sends replies as udpConn does.
func (a *anyConn) WriteReply(out []byte, n int, dst Destination, _ []byte, p peer) error {
	to := p.src
	if dst.Addr.Port() == 67 {
		to = dst.Addr
	}
	_, err := a.WriteTo(out[headroom:headroom+n], net.UDPAddrFromAddrPort(to))
	return err
}

// macText logs a MAC address as text (aa:bb:cc:dd:ee:ff), not as the raw
// bytes (or base64) that slog makes of a []byte.
type macText []byte

// LogValue implements [slog.LogValuer].
func (m macText) LogValue() slog.Value { return slog.StringValue(net.HardwareAddr(m).String()) }

var (
	_ packetConn     = (*udpConn)(nil)
	_ packetConn     = (*anyConn)(nil)
	_ slog.LogValuer = macText(nil)
)
