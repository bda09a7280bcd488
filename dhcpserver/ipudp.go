package dhcpserver

import (
	"encoding/binary"
	"net/netip"
)

// buildIPUDP writes IPv4 and UDP headers (with checksums) into b[:28] for
// a UDP payload of n bytes at b[28:], from src:67 to dst.
func buildIPUDP(b []byte, src [4]byte, dst netip.AddrPort, n int) {
	d := dst.Addr().As4()
	ip := b[:20]
	ip[0], ip[1] = 0x45, 0
	binary.BigEndian.PutUint16(ip[2:4], uint16(20+8+n))
	binary.BigEndian.PutUint32(ip[4:8], 0) // id, flags, fragment offset
	ip[8], ip[9] = 64, 17                  // TTL, UDP
	ip[10], ip[11] = 0, 0
	copy(ip[12:16], src[:])
	copy(ip[16:20], d[:])
	binary.BigEndian.PutUint16(ip[10:12], ^checksum(ip, 0))

	udp := b[20 : 28+n]
	binary.BigEndian.PutUint16(udp[0:2], 67)
	binary.BigEndian.PutUint16(udp[2:4], dst.Port())
	binary.BigEndian.PutUint16(udp[4:6], uint16(8+n))
	udp[6], udp[7] = 0, 0
	// Pseudo-header: addresses, protocol, UDP length.
	sum := uint32(17) + uint32(8+n)
	sum += uint32(binary.BigEndian.Uint16(src[0:2])) + uint32(binary.BigEndian.Uint16(src[2:4]))
	sum += uint32(binary.BigEndian.Uint16(d[0:2])) + uint32(binary.BigEndian.Uint16(d[2:4]))
	cs := ^checksum(udp, sum)
	if cs == 0 {
		cs = 0xffff // RFC 768: 0 means "no checksum"
	}
	binary.BigEndian.PutUint16(udp[6:8], cs)
}

// checksum returns the ones' complement sum of b added to sum, folded to
// 16 bits (the Internet checksum before the final complement; a valid
// header with its checksum field sums to 0xffff, so ^checksum == 0).
func checksum(b []byte, sum uint32) uint16 {
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}

// parseFrame checks the Ethernet, IPv4 and UDP headers of frame and returns
// where the UDP payload is. The UDP checksum is not checked: packets from
// local senders on veth or with offloading carry a partial one.
func parseFrame(frame []byte) (off, n int, p peer) {
	p.malformed = true
	if len(frame) < 14+20+8 {
		return
	}
	copy(p.srcMAC[:], frame[6:12])
	ip := frame[14:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[0]>>4 != 4 || ihl < 20 || len(ip) < ihl+8 {
		return
	}
	total := int(binary.BigEndian.Uint16(ip[2:4]))
	if total < ihl+8 || total > len(ip) || checksum(ip[:ihl], 0) != 0xffff {
		return
	}
	udp := ip[ihl:total]
	ulen := int(binary.BigEndian.Uint16(udp[4:6]))
	if ulen < 8 || ulen > len(udp) {
		return
	}
	p.src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[12:16])), binary.BigEndian.Uint16(udp[0:2]))
	p.malformed = false
	return 14 + ihl + 8, ulen - 8, p
}
