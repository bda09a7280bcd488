package dhcpserver

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"time"
)

// RawConn is a raw-mode socket from [ListenRaw], for [Server.Serve]: an
// AF_PACKET socket on one interface that reads the DHCP requests arriving
// there and writes replies as whole Ethernet frames (see [Config]), plus a
// UDP socket bound to port 67 on that interface that is never read, so
// that the kernel does not answer unicast requests (RENEW, RELEASE) with
// ICMP port unreachable.
//
// It is a [net.PacketConn] so that it can be passed to Serve and closed
// like any socket; ReadFrom and WriteTo are there for completeness (and
// tests), not for speed.
type RawConn struct {
	f      *os.File
	ifi    *net.Interface
	srcMAC [6]byte
	srcIP  [4]byte   // the source of replies; Serve sets it to Config.ServerAddr
	hold   io.Closer // the UDP socket on port 67, or nil when the port was taken
}

// setSource makes a the IPv4 source address of replies. Serve calls it
// before reading.
func (c *RawConn) setSource(a netip.Addr) { c.srcIP = a.As4() }

// LocalAddr returns the source address of replies (an *net.IPAddr with
// the interface name as its zone).
func (c *RawConn) LocalAddr() net.Addr {
	return &net.IPAddr{IP: net.IP(c.srcIP[:]), Zone: c.ifi.Name}
}

// Interface returns the network interface c is bound to.
func (c *RawConn) Interface() *net.Interface { return c.ifi }

// SetDeadline sets the read and write deadlines.
func (c *RawConn) SetDeadline(t time.Time) error { return c.f.SetDeadline(t) }

// SetReadDeadline sets the deadline of reads.
func (c *RawConn) SetReadDeadline(t time.Time) error { return c.f.SetReadDeadline(t) }

// SetWriteDeadline sets the deadline of writes.
func (c *RawConn) SetWriteDeadline(t time.Time) error { return c.f.SetWriteDeadline(t) }

// Close closes both sockets.
func (c *RawConn) Close() error {
	err := c.f.Close()
	if c.hold != nil {
		c.hold.Close()
	}
	return err
}

// ReadFrom reads the next DHCP request into b (truncated to len(b)) and
// returns its length and UDP source address (a *net.UDPAddr). Frames with
// broken IPv4 or UDP headers are skipped.
func (c *RawConn) ReadFrom(b []byte) (int, net.Addr, error) {
	buf := make([]byte, readSize)
	for {
		n, p, err := c.ReadPacket(buf)
		if errors.Is(err, errSkip) {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return 0, nil, err
			}
			continue
		}
		if err != nil {
			return 0, nil, err
		}
		if p.malformed {
			continue
		}
		return copy(b, buf[:n]), net.UDPAddrFromAddrPort(p.src), nil
	}
}

// WriteTo sends b as a UDP datagram from the reply source address, port
// 67, to addr (a *net.UDPAddr with an IPv4 address), in an Ethernet
// broadcast frame.
func (c *RawConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok || ua.IP.To4() == nil {
		return 0, errors.New("dhcpserver: RawConn.WriteTo needs an IPv4 *net.UDPAddr")
	}
	if len(b) > maxPayload {
		return 0, errors.New("dhcpserver: RawConn.WriteTo: payload larger than an Ethernet frame allows")
	}
	out := make([]byte, headroom+len(b))
	copy(out[headroom:], b)
	dst := Destination{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte(ua.IP.To4())), uint16(ua.Port)), Link: LinkBroadcast}
	if err := c.WriteReply(out, len(b), dst, nil, peer{}); err != nil {
		return 0, err
	}
	return len(b), nil
}

var (
	_ net.PacketConn = (*RawConn)(nil)
	_ packetConn     = (*RawConn)(nil)
)

// interfaceAddr returns the first IPv4 address of ifi.
func interfaceAddr(ifi *net.Interface) (netip.Addr, error) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("addresses of interface %q: %w", ifi.Name, err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap().Is4() {
				return ip.Unmap(), nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("interface %q has no IPv4 address", ifi.Name)
}
