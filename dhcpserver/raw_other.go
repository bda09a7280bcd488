//go:build !linux

package dhcpserver

import "net/netip"

func listenRaw(string, netip.Addr) (packetConn, error) { return nil, ErrUnsupported }
