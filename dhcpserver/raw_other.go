//go:build !linux

package dhcpserver

// ListenRaw opens a raw-mode socket on a network interface; raw mode is
// Linux only, and on this system it returns [ErrUnsupported].
func ListenRaw(iface string) (*RawConn, error) { return nil, ErrUnsupported }

// ReadPacket is never called: ListenRaw makes no RawConn here.
func (c *RawConn) ReadPacket([]byte) (int, peer, error) { return 0, peer{}, ErrUnsupported }

// WriteReply is never called: ListenRaw makes no RawConn here.
func (c *RawConn) WriteReply([]byte, int, Destination, []byte, peer) error { return ErrUnsupported }
