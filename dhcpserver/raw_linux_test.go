package dhcpserver

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"golang.org/x/sys/unix"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/internal/netnstest"
	"github.com/tinkerbell/backend/internal/testenv"
)

var (
	serverPrefix = netip.PrefixFrom(serverIP, 24)
	relayPrefix  = netip.MustParsePrefix("198.18.0.2/24")
)

// backendFor serves the test reservation to mac only.
func backendFor(mac net.HardwareAddr) backend.Backend {
	return backend.BackendFunc(func(ctx context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
		if req.MACAddress.String() != mac.String() {
			return backend.DHCP{}, backend.Netboot{}, backend.ErrNotFound
		}
		d := reservation()
		d.MACAddress = mac
		return d, backend.Netboot{}, nil
	})
}

// serveRaw runs a raw-mode server on link (a socket opened in its
// namespace) and stops it when t ends, checking that Serve returns
// ErrServerClosed.
func serveRaw(t *testing.T, link netnstest.Link, be backend.Backend) *Server {
	t.Helper()
	s, err := New(testConfig(be))
	if err != nil {
		t.Fatal(err)
	}
	return serveConn(t, s, openRaw(t, link))
}

// openRaw opens a raw socket on link, in its namespace.
func openRaw(t *testing.T, link netnstest.Link) *RawConn {
	t.Helper()
	var conn *RawConn
	if err := link.NS.Do(func() error {
		var err error
		conn, err = ListenRaw(link.Name)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return conn
}

// serveConn serves conn with s until t ends, then shuts s down and checks
// that Serve returns ErrServerClosed.
func serveConn(t *testing.T, s *Server, conn net.PacketConn) *Server {
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
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return s
}

// capture records every frame arriving on link, to check what the server
// put on the wire.
type capture struct{ fd int }

func startCapture(t *testing.T, link netnstest.Link) *capture {
	t.Helper()
	var fd int
	err := link.NS.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: link.Index}); err != nil {
			unix.Close(fd)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatalf("capture: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return &capture{fd: fd}
}

// frame is a captured server reply.
type frame struct {
	EthDst, EthSrc string
	IPSrc, IPDst   string
	UDPDst         uint16
	Type           string
	ChecksumsOK    bool
}

// replies returns the DHCP replies (UDP from port 67) captured so far.
func (c *capture) replies(t *testing.T) []frame {
	t.Helper()
	var out []frame
	buf := make([]byte, 2048)
	for {
		n, _, err := unix.Recvfrom(c.fd, buf, unix.MSG_DONTWAIT)
		if err != nil {
			return out
		}
		b := buf[:n]
		if len(b) < 42 || binary.BigEndian.Uint16(b[12:14]) != 0x0800 || b[23] != 17 {
			continue
		}
		ihl := int(b[14]&0xf) * 4
		udp := b[14+ihl:]
		if binary.BigEndian.Uint16(udp[0:2]) != 67 {
			continue
		}
		ip := b[14 : 14+ihl]
		ulen := int(binary.BigEndian.Uint16(udp[4:6]))
		pseudo := uint32(17) + uint32(ulen)
		for i := 12; i < 20; i += 2 {
			pseudo += uint32(binary.BigEndian.Uint16(ip[i : i+2]))
		}
		f := frame{
			EthDst:      net.HardwareAddr(b[0:6]).String(),
			EthSrc:      net.HardwareAddr(b[6:12]).String(),
			IPSrc:       netip.AddrFrom4([4]byte(ip[12:16])).String(),
			IPDst:       netip.AddrFrom4([4]byte(ip[16:20])).String(),
			UDPDst:      binary.BigEndian.Uint16(udp[2:4]),
			ChecksumsOK: checksum(ip, 0) == 0xffff && checksum(udp[:ulen], pseudo) == 0xffff,
		}
		if p, err := dhcpv4.FromBytes(udp[8:ulen]); err == nil {
			f.Type = p.MessageType().String()
		}
		out = append(out, f)
	}
}

func newNClient(t *testing.T, link netnstest.Link) *nclient4.Client {
	t.Helper()
	var c *nclient4.Client
	err := link.NS.Do(func() error {
		var err error
		c, err = nclient4.New(link.Name, nclient4.WithTimeout(time.Second), nclient4.WithRetry(5))
		return err
	})
	if err != nil {
		t.Fatalf("nclient4: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestRawDORA runs insomniacslk's nclient4 against the raw-socket server
// across a veth pair: with the broadcast flag, and without it, where the
// server must unicast to the offered address at the client's MAC without
// ARP.
func TestRawDORA(t *testing.T) {
	netnstest.Require(t)
	for _, tc := range []struct {
		name      string
		broadcast bool
	}{{"broadcast", true}, {"unicast without ARP", false}} {
		t.Run(tc.name, func(t *testing.T) {
			p := netnstest.NewPair(t, netnstest.PairConfig{AddrA: serverPrefix})
			s := serveRaw(t, p.A, backendFor(p.B.HardwareAddr))
			cap := startCapture(t, p.B)
			c := newNClient(t, p.B)
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			lease, err := c.Request(ctx, dhcpv4.WithBroadcast(tc.broadcast))
			if err != nil {
				t.Fatalf("DORA: %v (server stats %+v)", err, s.Stats())
			}
			got := summarize(lease.ACK, Destination{})
			want := ack(Destination{})
			want.Flags = map[bool]uint16{true: 0x8000}[tc.broadcast]
			if diff := cmp.Diff(want, got, equate); diff != "" {
				t.Errorf("ACK (-want +got):\n%s", diff)
			}

			ethDst, ipDst := p.B.HardwareAddr.String(), "198.18.0.10"
			if tc.broadcast {
				ethDst, ipDst = "ff:ff:ff:ff:ff:ff", "255.255.255.255"
			}
			mk := func(typ string) frame {
				return frame{EthDst: ethDst, EthSrc: p.A.HardwareAddr.String(), IPSrc: "198.18.0.1", IPDst: ipDst,
					UDPDst: 68, Type: typ, ChecksumsOK: true}
			}
			if diff := cmp.Diff([]frame{mk("OFFER"), mk("ACK")}, cap.replies(t)); diff != "" {
				t.Errorf("frames on the wire (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRawRelay plays a relay agent: it sends a DISCOVER with giaddr and
// option 82 to the server's address and receives the OFFER on port 67.
func TestRawRelay(t *testing.T) {
	netnstest.Require(t)
	p := netnstest.NewPair(t, netnstest.PairConfig{AddrA: serverPrefix, AddrB: relayPrefix})
	serveRaw(t, p.A, newMemBackend())
	var relay *net.UDPConn
	if err := p.B.NS.Do(func() error {
		var err error
		relay, err = net.ListenUDP("udp4", &net.UDPAddr{IP: relayPrefix.Addr().AsSlice(), Port: 67})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	exchange := func(req *dhcpv4.DHCPv4) *summary {
		t.Helper()
		if _, err := relay.WriteToUDPAddrPort(req.ToBytes(), netip.AddrPortFrom(serverIP, 67)); err != nil {
			t.Fatal(err)
		}
		relay.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 1500)
		n, from, err := relay.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("relay got no reply: %v", err)
		}
		if from != netip.AddrPortFrom(serverIP, 67) {
			t.Errorf("reply from %v", from)
		}
		reply, err := dhcpv4.FromBytes(buf[:n])
		if err != nil {
			t.Fatal(err)
		}
		return summarize(reply, Destination{})
	}
	giaddr := dhcpv4.WithRelay(relayPrefix.Addr().AsSlice())
	opt82 := withOpt(82, 1, 6, 's', 'w', '1', '/', '1', '7')

	got := exchange(request(macKnown, dhcpv4.MessageTypeDiscover, giaddr, opt82))
	want := set(offer(Destination{}, 82, "01067377312f3137"), func(s *summary) { s.Giaddr = "198.18.0.2" })
	if diff := cmp.Diff(want, got, equate); diff != "" {
		t.Errorf("relayed OFFER (-want +got):\n%s", diff)
	}
	got = exchange(request(macKnown, dhcpv4.MessageTypeRequest, giaddr, opt82, withIPOpt(50, otherIP)))
	want = set(nak(Destination{}), func(s *summary) {
		s.Giaddr, s.Flags = "198.18.0.2", 0x8000
		s.Options[82] = "01067377312f3137"
	})
	if diff := cmp.Diff(want, got, equate); diff != "" {
		t.Errorf("relayed NAK (-want +got):\n%s", diff)
	}
}

// TestUdhcpc runs busybox udhcpc, a real third-party client, against the
// raw-socket server and checks what it would configure.
func TestUdhcpc(t *testing.T) {
	testenv.Require(t, testenv.Netns, "udhcpc")
	udhcpc := testenv.Command(t, "udhcpc") // the udhcpc program or busybox's applet
	p := netnstest.NewPair(t, netnstest.PairConfig{AddrA: serverPrefix})
	serveRaw(t, p.A, backendFor(p.B.HardwareAddr))

	dir := t.TempDir()
	out := filepath.Join(dir, "bound.env")
	script := filepath.Join(dir, "script.sh")
	// udhcpc calls the script with "deconfig", then "bound" and the lease
	// in environment variables; record them instead of configuring.
	if err := os.WriteFile(script, []byte("#!/bin/sh\n[ \"$1\" = bound ] || exit 0\nenv > \""+out+"\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := p.B.NS.Command(ctx, udhcpc[0], append(udhcpc[1:], "-i", p.B.Name, "-n", "-q", "-f", "-t", "5", "-T", "1", "-s", script)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("udhcpc: %v\n%s", err, b)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatalf("udhcpc did not bind: %v", err)
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			switch k {
			case "ip", "subnet", "mask", "router", "dns", "serverid", "lease", "hostname", "domain", "broadcast", "interface":
				env[k] = strings.TrimSpace(v)
			}
		}
	}
	want := map[string]string{
		"interface": p.B.Name,
		"ip":        "198.18.0.10",
		"subnet":    "255.255.255.0",
		"mask":      "24",
		"router":    "198.18.0.1",
		"dns":       "198.18.0.2 198.18.0.3",
		"serverid":  "198.18.0.1",
		"lease":     "3600",
		"hostname":  "node-1",
		"domain":    "example.test",
		"broadcast": "198.18.0.255",
	}
	if diff := cmp.Diff(want, env); diff != "" {
		t.Errorf("udhcpc lease (-want +got):\n%s", diff)
	}
}

// TestRawRenew: a client that has its address renews by unicast to the
// server (ciaddr set) and asks for configuration (INFORM); the replies go
// to ciaddr:68 at the Ethernet source of the request.
func TestRawRenew(t *testing.T) {
	netnstest.Require(t)
	p := netnstest.NewPair(t, netnstest.PairConfig{AddrA: serverPrefix, AddrB: netip.PrefixFrom(clientIP, 24)})
	serveRaw(t, p.A, backendFor(p.B.HardwareAddr))
	var conn *net.UDPConn
	if err := p.B.NS.Do(func() error {
		var err error
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: clientIP.AsSlice(), Port: 68})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, typ := range []dhcpv4.MessageType{dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeInform} {
		req := request(p.B.HardwareAddr, typ, dhcpv4.WithClientIP(clientIP.AsSlice()))
		if _, err := conn.WriteToUDPAddrPort(req.ToBytes(), netip.AddrPortFrom(serverIP, 67)); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 1500)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("%v: no reply at ciaddr: %v", typ, err)
		}
		reply, err := dhcpv4.FromBytes(buf[:n])
		if err != nil {
			t.Fatal(err)
		}
		want := set(ack(Destination{}), func(s *summary) { s.Ciaddr = "198.18.0.10" })
		if typ == dhcpv4.MessageTypeInform {
			want = set(ack(Destination{}, 51, "", 58, "", 59, ""), func(s *summary) { s.Ciaddr, s.Yiaddr = "198.18.0.10", "0.0.0.0" })
		}
		if diff := cmp.Diff(want, summarize(reply, Destination{}), equate); diff != "" {
			t.Errorf("reply to %v (-want +got):\n%s", typ, diff)
		}
	}
}

// TestRawFilterForeignFrames: the raw socket takes only frames that
// arrived on its own interface and were sent to this host (or broadcast).
// A request tagged for a VLAN, or sent to another host's MAC address (seen
// when the interface is promiscuous, as bridge ports are), is not ours to
// answer: the answer would leave untagged, on the wrong network, or compete
// with the server that the client addressed. (A VLAN that has an interface
// on top of ours is filtered by interface index; this kernel may lack
// 802.1Q support, so the test sends a tagged frame that no VLAN interface
// takes, which the kernel marks as for another host.)
func TestRawFilterForeignFrames(t *testing.T) {
	netnstest.Require(t)
	p := netnstest.NewPair(t, netnstest.PairConfig{AddrA: serverPrefix})
	p.A.NS.Run(t, "ip", "link", "set", p.A.Name, "promisc", "on")
	var c *RawConn
	if err := p.A.NS.Do(func() error {
		var err error
		c, err = ListenRaw(p.A.Name)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	bcastMAC := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	send := func(dst net.HardwareAddr, vlan uint16, xid byte) {
		t.Helper()
		req := request(macKnown, dhcpv4.MessageTypeDiscover, func(d *dhcpv4.DHCPv4) { d.TransactionID[3] = xid })
		f := frameFor(req.ToBytes(), func(f []byte) { copy(f[0:6], dst) })
		if vlan != 0 {
			f = append(append(f[:12:12], 0x81, 0x00, byte(vlan>>8), byte(vlan)), f[12:]...)
		}
		if err := p.B.NS.Do(func() error {
			fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			return unix.Sendto(fd, f, 0, &unix.SockaddrLinklayer{Ifindex: p.B.Index, Halen: 6, Addr: [8]byte(append(dst, 0, 0))})
		}); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	send(bcastMAC, 8, 1)                                 // tagged for VLAN 8
	send(net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}, 0, 2) // to another host's MAC
	send(bcastMAC, 0, 3)                                 // ours
	send(p.A.HardwareAddr, 0, 4)                         // ours

	var got []byte
	buf := make([]byte, readSize)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for !slices.Contains(got, 3) || !slices.Contains(got, 4) { // in any order
		n, pr, err := c.ReadPacket(buf)
		if err != nil {
			t.Fatalf("ReadPacket after %v: %v", got, err)
		}
		if pr.malformed {
			continue
		}
		req, err := dhcpv4.FromBytes(buf[:n])
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, req.TransactionID[3])
	}
	slices.Sort(got)
	if diff := cmp.Diff([]byte{3, 4}, got); diff != "" {
		t.Errorf("requests read, by xid (-want +got):\n%s", diff)
	}
}

// TestRawLinkFlap: the interface going down and up again (a cable pulled,
// a switch rebooted) does not stop raw mode: the socket reports ENETDOWN
// once, and the server reads on when the link is back.
func TestRawLinkFlap(t *testing.T) {
	netnstest.Require(t)
	p := netnstest.NewPair(t, netnstest.PairConfig{AddrA: serverPrefix})
	s := serveRaw(t, p.A, backendFor(p.B.HardwareAddr))
	p.A.NS.Run(t, "ip", "link", "set", p.A.Name, "down")
	p.A.NS.Run(t, "ip", "link", "set", p.A.Name, "up")
	p.A.NS.Run(t, "ip", "addr", "replace", serverPrefix.String(), "dev", p.A.Name)
	c := newNClient(t, p.B)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	lease, err := c.Request(ctx, dhcpv4.WithBroadcast(true))
	if err != nil {
		t.Fatalf("DORA after the link flapped: %v (server stats %+v)", err, s.Stats())
	}
	if got := lease.ACK.YourIPAddr.String(); got != clientIP.String() {
		t.Errorf("ACK yiaddr %v, want %v", got, clientIP)
	}
}

// TestRawListenAndServe: with Interface set and ServerAddr not, New takes
// the interface's address as the server identifier, and ListenAndServe
// opens the raw socket itself.
func TestRawListenAndServe(t *testing.T) {
	netnstest.Require(t)
	p := netnstest.NewPair(t, netnstest.PairConfig{AddrA: netip.MustParsePrefix("198.18.0.5/24")})
	cfg := testConfig(backendFor(p.B.HardwareAddr))
	cfg.ServerAddr = netip.Addr{}
	cfg.Interface = p.A.Name
	var s *Server
	if err := p.A.NS.Do(func() error {
		var err error
		s, err = New(cfg)
		return err
	}); err != nil {
		t.Fatalf("New: %v", err)
	}
	errc := make(chan error, 1)
	go func() { errc <- p.A.NS.Do(s.ListenAndServe) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-errc; !errors.Is(err, ErrServerClosed) {
			t.Errorf("ListenAndServe = %v, want ErrServerClosed", err)
		}
	})
	c := newNClient(t, p.B) // retries until the socket is open
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	lease, err := c.Request(ctx, dhcpv4.WithBroadcast(true))
	if err != nil {
		t.Fatalf("DORA: %v", err)
	}
	if got := net.IP(lease.ACK.Options[54]).String(); got != "198.18.0.5" {
		t.Errorf("server identifier %v, want the interface's 198.18.0.5", got)
	}
}

// TestRawHoldsPort67: a client that renews by unicast gets its ACK and no
// ICMP port unreachable (which a connected UDP socket reports as
// ECONNREFUSED): the raw socket comes with a UDP socket on port 67. The
// same exchange without that socket shows that the check can fail.
func TestRawHoldsPort67(t *testing.T) {
	netnstest.Require(t)
	for _, hold := range []bool{true, false} {
		t.Run(map[bool]string{true: "held", false: "not held"}[hold], func(t *testing.T) {
			p := netnstest.NewPair(t, netnstest.PairConfig{AddrA: serverPrefix, AddrB: netip.PrefixFrom(clientIP, 24)})
			conn := openRaw(t, p.A)
			if conn.hold == nil {
				t.Fatal("ListenRaw did not bind port 67")
			}
			if !hold {
				conn.hold.Close()
				conn.hold = nil
			}
			s, err := New(testConfig(backendFor(p.B.HardwareAddr)))
			if err != nil {
				t.Fatal(err)
			}
			serveConn(t, s, conn)
			var uc *net.UDPConn
			if err := p.B.NS.Do(func() error {
				var err error
				uc, err = net.DialUDP("udp4", &net.UDPAddr{IP: clientIP.AsSlice(), Port: 68}, &net.UDPAddr{IP: serverIP.AsSlice(), Port: 67})
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer uc.Close()
			refused := 0
			acks := 0
			buf := make([]byte, 1500)
			for range 2 {
				req := request(p.B.HardwareAddr, dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(clientIP.AsSlice()))
				if _, err := uc.Write(req.ToBytes()); err != nil {
					if errors.Is(err, unix.ECONNREFUSED) {
						refused++
						continue
					}
					t.Fatal(err)
				}
				uc.SetReadDeadline(time.Now().Add(10 * time.Second))
				for {
					n, err := uc.Read(buf)
					if errors.Is(err, unix.ECONNREFUSED) {
						refused++
						continue
					}
					if err != nil {
						t.Fatalf("no ACK: %v", err)
					}
					if r, err := dhcpv4.FromBytes(buf[:n]); err == nil && r.MessageType() == dhcpv4.MessageTypeAck {
						acks++
						break
					}
				}
			}
			if acks != 2 {
				t.Errorf("%d ACKs, want 2", acks)
			}
			if hold && refused != 0 {
				t.Errorf("ICMP port unreachable reported %d times, want none", refused)
			}
			if !hold && refused == 0 {
				t.Error("no ICMP port unreachable without the socket on port 67: the check cannot tell")
			}
		})
	}
}

// TestRawConnPacketConn: a RawConn is a net.PacketConn: ReadFrom returns
// a request's payload and UDP source, WriteTo sends a datagram from the
// interface's address, port 67.
func TestRawConnPacketConn(t *testing.T) {
	netnstest.Require(t)
	p := netnstest.NewPair(t, netnstest.PairConfig{AddrA: serverPrefix, AddrB: relayPrefix})
	rc := openRaw(t, p.A)
	defer rc.Close()
	var uc *net.UDPConn
	if err := p.B.NS.Do(func() error {
		var err error
		uc, err = net.ListenUDP("udp4", &net.UDPAddr{IP: relayPrefix.Addr().AsSlice(), Port: 68})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	if _, err := uc.WriteToUDPAddrPort([]byte("hello, server"), netip.AddrPortFrom(serverIP, 67)); err != nil {
		t.Fatal(err)
	}
	rc.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 1500)
	n, from, err := rc.ReadFrom(buf)
	if err != nil {
		t.Fatalf("ReadFrom: %v", err)
	}
	type got struct{ Payload, From string }
	if diff := cmp.Diff(got{"hello, server", "198.18.0.2:68"}, got{string(buf[:n]), from.String()}); diff != "" {
		t.Errorf("ReadFrom (-want +got):\n%s", diff)
	}
	if _, err := rc.WriteTo([]byte("hello, client"), from); err != nil {
		t.Fatalf("WriteTo: %v", err)
	}
	uc.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, src, err := uc.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("client read: %v", err)
	}
	if diff := cmp.Diff(got{"hello, client", "198.18.0.1:67"}, got{string(buf[:n]), src.String()}); diff != "" {
		t.Errorf("datagram from WriteTo (-want +got):\n%s", diff)
	}
	rc.SetReadDeadline(time.Now().Add(-time.Second))
	if _, _, err := rc.ReadFrom(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("ReadFrom after its deadline: %v, want os.ErrDeadlineExceeded", err)
	}
}
