package dhcpserver

import (
	"net"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/rfc1035label"

	"github.com/tinkerbell/backend"
)

func reportRate(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "packets/s")
}

// lookupEveryTime is the configuration of the benchmarks that measure a
// Backend call per packet: no answer reuse, no per-MAC limit.
func lookupEveryTime() Config {
	cfg := testConfig(newMemBackend())
	cfg.AnswerReuse, cfg.MinLookupInterval = -1, -1
	return cfg
}

// BenchmarkHandleDiscover is the whole packet path of a worker: request
// bytes in (parsed by dhcpv4.FromBytes), in-memory Backend, OFFER bytes out.
func BenchmarkHandleDiscover(b *testing.B) {
	s := newTestServer(b, lookupEveryTime())
	sc := newScratch()
	pkt := request(macKnown, dhcpv4.MessageTypeDiscover, withOpt(55, 1, 3, 6, 15, 119)).ToBytes()
	ctx := s.ctx // what a worker passes
	b.ReportAllocs()
	for b.Loop() {
		if r, _ := s.handlePacket(ctx, sc, pkt); r.payload == nil {
			b.Fatal(r.drop)
		}
	}
	reportRate(b)
}

// BenchmarkHandleDiscoverParsed is the handler alone: an already parsed
// request in, OFFER bytes out.
func BenchmarkHandleDiscoverParsed(b *testing.B) {
	s := newTestServer(b, lookupEveryTime())
	sc := newScratch()
	req := request(macKnown, dhcpv4.MessageTypeDiscover, withOpt(55, 1, 3, 6, 15, 119))
	ctx := s.ctx // what a worker passes
	b.ReportAllocs()
	for b.Loop() {
		if r := s.handle(ctx, sc, req); r.payload == nil {
			b.Fatal(r.drop)
		}
	}
	reportRate(b)
}

// BenchmarkHandleDiscoverReused is BenchmarkHandleDiscover for a
// retransmitted DISCOVER (or the REQUEST after it), answered from the
// answer its first DISCOVER got (the default configuration).
func BenchmarkHandleDiscoverReused(b *testing.B) {
	s := newTestServer(b, testConfig(newMemBackend()))
	sc := newScratch()
	pkt := request(macKnown, dhcpv4.MessageTypeDiscover, withOpt(55, 1, 3, 6, 15, 119)).ToBytes()
	ctx := s.ctx
	b.ReportAllocs()
	for b.Loop() {
		if r, _ := s.handlePacket(ctx, sc, pkt); r.payload == nil {
			b.Fatal(r.drop)
		}
	}
	reportRate(b)
}

// BenchmarkLibraryBaseline is the baseline: the same DISCOVER → OFFER
// built the usual way with dhcpv4's own constructors and ToBytes, and the
// same in-memory Backend, without any of the server's logic.
func BenchmarkLibraryBaseline(b *testing.B) {
	be := newMemBackend()
	pkt := request(macKnown, dhcpv4.MessageTypeDiscover, withOpt(55, 1, 3, 6, 15, 119)).ToBytes()
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		req, err := dhcpv4.FromBytes(pkt)
		if err != nil {
			b.Fatal(err)
		}
		d, _, err := be.Lookup(ctx, reqFor(req))
		if err != nil {
			b.Fatal(err)
		}
		reply, err := dhcpv4.NewReplyFromRequest(req,
			dhcpv4.WithMessageType(dhcpv4.MessageTypeOffer),
			dhcpv4.WithYourIP(d.IPAddress.AsSlice()),
			dhcpv4.WithServerIP(net.IP(serverIP.AsSlice())),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(serverIP.AsSlice())),
			dhcpv4.WithLeaseTime(d.LeaseTime),
			dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(time.Duration(d.LeaseTime/2)*time.Second)),
			dhcpv4.WithOption(dhcpv4.OptRebindingTimeValue(time.Duration(d.LeaseTime*7/8)*time.Second)),
			dhcpv4.WithNetmask(net.CIDRMask(d.SubnetMask.Bits(), 32)),
			dhcpv4.WithOption(dhcpv4.OptRouter(d.DefaultGateway.AsSlice())),
			dhcpv4.WithOption(dhcpv4.OptDNS(d.NameServers[0].AsSlice(), d.NameServers[1].AsSlice())),
			dhcpv4.WithOption(dhcpv4.OptHostName(d.Hostname)),
			dhcpv4.WithOption(dhcpv4.OptDomainName(d.DomainName)),
			dhcpv4.WithOption(dhcpv4.OptBroadcastAddress(d.BroadcastAddress.AsSlice())),
			dhcpv4.WithOption(dhcpv4.OptNTPServers(d.NTPServers[0].AsSlice())),
			dhcpv4.WithOption(dhcpv4.OptDomainSearch(&rfc1035label.Labels{Labels: d.DomainSearch})),
		)
		if err != nil {
			b.Fatal(err)
		}
		if len(reply.ToBytes()) == 0 {
			b.Fatal("empty")
		}
	}
	reportRate(b)
}

func reqFor(p *dhcpv4.DHCPv4) backend.DHCPRequest {
	return backend.DHCPRequest{MACAddress: p.ClientHWAddr}
}

// plainConn hides the *net.UDPConn inside it, so that Serve reads one
// packet per system call (the baseline of BenchmarkServeUDP).
type plainConn struct{ net.PacketConn }

// BenchmarkServeUDP is the UDP socket path: a client keeps a window of
// DISCOVERs in flight to a served loopback socket and counts the OFFERs
// (the Backend in memory, its answer reused). "batch" is what Serve does
// with a *net.UDPConn (recvmmsg); "single" reads one packet per call.
func BenchmarkServeUDP(b *testing.B) {
	for _, mode := range []string{"batch", "single"} {
		b.Run(mode, func(b *testing.B) {
			s := newTestServer(b, testConfig(newMemBackend()))
			conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				b.Fatal(err)
			}
			var pc net.PacketConn = conn
			if mode == "single" {
				pc = plainConn{conn}
			}
			served := make(chan error, 1)
			go func() { served <- s.Serve(pc) }()
			defer func() {
				s.Close()
				<-served
			}()
			client, err := net.DialUDP("udp4", nil, conn.LocalAddr().(*net.UDPAddr))
			if err != nil {
				b.Fatal(err)
			}
			defer client.Close()
			pkt := request(macKnown, dhcpv4.MessageTypeDiscover, withOpt(55, 1, 3, 6, 15, 119)).ToBytes()
			reply := make([]byte, 1500)
			const window = 32
			inFlight := 0
			b.ReportAllocs()
			for b.Loop() {
				for inFlight < window {
					if _, err := client.Write(pkt); err != nil {
						b.Fatal(err)
					}
					inFlight++
				}
				_ = client.SetReadDeadline(time.Now().Add(time.Second))
				if _, err := client.Read(reply); err != nil {
					// A request lost in a full queue: send another.
					inFlight = 0
					continue
				}
				inFlight--
			}
			reportRate(b)
		})
	}
}
