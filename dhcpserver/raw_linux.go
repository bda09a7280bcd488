//go:build linux

package dhcpserver

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Raw mode is an AF_PACKET socket bound to one interface, with a classic
// BPF filter that lets only unfragmented IPv4/UDP packets to port 67 reach
// user space. Replies are whole Ethernet frames built here.

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Linux BPF ancillary data (linux/filter.h): loads at these offsets read
// the packet type and the receiving interface instead of packet bytes.
const (
	skfAdOff     = 0xfffff000 // SKF_AD_OFF (-0x1000)
	skfAdPktType = 4          // SKF_AD_PKTTYPE
	skfAdIfindex = 8          // SKF_AD_IFINDEX
)

// bootpsFilter is "ip and udp dst port 67 and not ip fragment", for frames
// with an Ethernet header that were sent to this host (not PACKET_OTHERHOST,
// which a promiscuous interface and a VLAN tag nobody handles produce) and
// were received by the interface itself (not by a VLAN or macvlan interface
// on top of it, whose frames reach a socket bound to the lower interface
// too). listenRaw fills in the interface index (instruction 3).
var bootpsFilter = [...]unix.SockFilter{
	{Code: 0x20, K: skfAdOff + skfAdPktType},              // 0: ld pkttype
	{Code: 0x35, Jt: 12, Jf: 0, K: unix.PACKET_OTHERHOST}, // 1: jge OTHERHOST (or outgoing, loopback) → drop
	{Code: 0x20, K: skfAdOff + skfAdIfindex},              // 2: ld ifindex
	{Code: 0x15, Jt: 0, Jf: 10, K: 0},                     // 3: jeq <our ifindex> else drop
	{Code: 0x28, K: 12},                                   // 4: ldh [12]            ethertype
	{Code: 0x15, Jt: 0, Jf: 8, K: 0x800},                  // 5: jeq IPv4 else drop
	{Code: 0x30, K: 23},                                   // 6: ldb [23]            IP protocol
	{Code: 0x15, Jt: 0, Jf: 6, K: 17},                     // 7: jeq UDP else drop
	{Code: 0x28, K: 20},                                   // 8: ldh [20]            flags, fragment offset
	{Code: 0x45, Jt: 4, Jf: 0, K: 0x1fff},                 // 9: jset offset → drop
	{Code: 0xb1, K: 14},                                   // 10: ldxb 4*([14]&0xf)   IP header length
	{Code: 0x48, K: 16},                                   // 11: ldh [x+16]         UDP destination port
	{Code: 0x15, Jt: 0, Jf: 1, K: 67},                     // 12: jeq 67 else drop
	{Code: 0x06, K: 0x40000},                              // 13: ret: accept
	{Code: 0x06, K: 0},                                    // 14: ret: drop
}

// ListenRaw opens a raw-mode socket on the network interface named iface
// (Linux only; needs CAP_NET_RAW), for [Server.Serve]. Its replies come
// from the interface's MAC address and, once served, from
// [Config].ServerAddr; until then from the interface's first IPv4
// address. On other systems it returns [ErrUnsupported].
func ListenRaw(iface string) (*RawConn, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("dhcpserver: interface %q: %w", iface, err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("dhcpserver: interface %q is not Ethernet (hardware address %v)", iface, ifi.HardwareAddr)
	}
	// Protocol 0 receives nothing until bind, so no unfiltered packet
	// slips in before the filter is attached.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("dhcpserver: raw socket on %s: %w", iface, err)
	}
	filter := bootpsFilter
	filter[3].K = uint32(ifi.Index)
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("dhcpserver: attach BPF filter: %w", err)
	}
	// Our own replies to a relay go to port 67 too: do not read them back.
	// (Linux ≥ 4.20; on older kernels the BPF filter drops them.)
	_ = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("dhcpserver: bind raw socket to %s: %w", iface, err)
	}
	c := &RawConn{f: os.NewFile(uintptr(fd), "packet:"+iface), ifi: ifi}
	copy(c.srcMAC[:], ifi.HardwareAddr)
	if a, err := interfaceAddr(ifi); err == nil {
		c.srcIP = a.As4()
	}
	c.hold = holdPort67(iface)
	return c, nil
}

// holdPort67 binds a UDP socket to port 67 on iface, with a filter that
// drops everything it would receive, and returns it. Without a UDP socket
// on port 67 the kernel answers every unicast request to the server's
// address (RENEW, RELEASE, INFORM) with ICMP port unreachable, while the
// raw socket answers it too; with one, it stays quiet. When the port is
// taken (another DHCP server or relay holds it), that socket keeps the
// kernel quiet, and holdPort67 returns nil.
func holdPort67(iface string) io.Closer {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			drop := [...]unix.SockFilter{{Code: 0x06, K: 0}} // ret 0: drop
			prog := unix.SockFprog{Len: uint16(len(drop)), Filter: &drop[0]}
			if serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog); serr != nil {
				return
			}
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
				return
			}
			serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, iface)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	c, err := lc.ListenPacket(context.Background(), "udp4", "0.0.0.0:67")
	if err != nil {
		return nil
	}
	return c
}

// ReadPacket reads one frame and moves its DHCP payload to the start of
// buf. Frames with invalid IPv4 or UDP headers are reported as malformed
// (the BPF filter already let only IPv4/UDP to port 67 through).
func (c *RawConn) ReadPacket(buf []byte) (int, peer, error) {
	n, err := c.f.Read(buf)
	if err != nil {
		// ENETDOWN: the interface went down. The socket reports it once
		// and receives again when the interface is back up.
		if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, unix.ENETDOWN) {
			return 0, peer{}, fmt.Errorf("%w: %w", errSkip, err)
		}
		return 0, peer{}, err
	}
	off, length, p := parseFrame(buf[:n])
	if p.malformed {
		return 0, p, nil
	}
	copy(buf, buf[off:off+length])
	return length, p, nil
}

// WriteReply builds Ethernet, IPv4 and UDP headers in front of the payload
// and sends the frame on the interface the request came in on.
func (c *RawConn) WriteReply(out []byte, n int, dst Destination, chaddr []byte, p peer) error {
	frame := out[:headroom+n]
	switch dst.Link {
	case LinkBroadcast:
		copy(frame[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	case LinkClient:
		copy(frame[0:6], chaddr)
	default:
		copy(frame[0:6], p.srcMAC[:])
	}
	copy(frame[6:12], c.srcMAC[:])
	binary.BigEndian.PutUint16(frame[12:14], 0x0800)
	buildIPUDP(frame[14:], c.srcIP, dst.Addr, n)
	_, err := c.f.Write(frame)
	return err
}
