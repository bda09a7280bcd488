package dhcpserver

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/rfc1035label"
	"go.uber.org/goleak"

	"github.com/tinkerbell/backend"
)

// equate compares summaries, whose Dest holds a netip.AddrPort.
var equate = cmpopts.EquateComparable(netip.AddrPort{})

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	serverIP  = netip.MustParseAddr("198.18.0.1")
	clientIP  = netip.MustParseAddr("198.18.0.10")
	macKnown  = net.HardwareAddr{0x52, 0x54, 0x00, 0x66, 0xea, 0x9a}
	macNoBoot = net.HardwareAddr{0x52, 0x54, 0x00, 0x00, 0x00, 0x02}
	macLease0 = net.HardwareAddr{0x52, 0x54, 0x00, 0x00, 0x00, 0x03}
	macNoURL  = net.HardwareAddr{0x52, 0x54, 0x00, 0x00, 0x00, 0x04}
	macBig    = net.HardwareAddr{0x52, 0x54, 0x00, 0x00, 0x00, 0x05}
	macNone   = net.HardwareAddr{0x52, 0x54, 0x00, 0x00, 0x00, 0xee}
	macError  = net.HardwareAddr{0x52, 0x54, 0x00, 0x00, 0x00, 0xef}
	macSlow   = net.HardwareAddr{0x52, 0x54, 0x00, 0x00, 0x00, 0xf0}
	scriptURL = backend.URL("http://198.18.0.1/auto.ipxe")
)

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

// reservation is the Backend's answer for macKnown.
func reservation() backend.DHCP {
	return backend.DHCP{
		MACAddress:       macKnown,
		IPAddress:        clientIP,
		SubnetMask:       backend.MaskFrom(24),
		DefaultGateway:   serverIP,
		NameServers:      []netip.Addr{netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.3")},
		Hostname:         "node-1",
		DomainName:       "example.test",
		BroadcastAddress: netip.MustParseAddr("198.18.0.255"),
		NTPServers:       []netip.Addr{netip.MustParseAddr("198.18.0.4")},
		LeaseTime:        3600,
		DomainSearch:     []string{"example.test", "lab.example.test"},
	}
}

// memBackend is an in-memory Backend keyed by MAC address that counts its
// calls.
type memBackend struct {
	calls atomic.Int64
	res   map[string]struct {
		d backend.DHCP
		n backend.Netboot
	}
}

func newMemBackend() *memBackend {
	m := &memBackend{res: map[string]struct {
		d backend.DHCP
		n backend.Netboot
	}{}}
	add := func(mac net.HardwareAddr, d backend.DHCP, n backend.Netboot) {
		d.MACAddress = mac
		m.res[string(mac)] = struct {
			d backend.DHCP
			n backend.Netboot
		}{d, n}
	}
	add(macKnown, reservation(), backend.Netboot{AllowNetboot: true, IPXEScriptURL: scriptURL})
	add(macNoBoot, reservation(), backend.Netboot{})
	d := reservation()
	d.LeaseTime = 0
	add(macLease0, d, backend.Netboot{AllowNetboot: true})
	add(macNoURL, reservation(), backend.Netboot{AllowNetboot: true})
	d = reservation()
	for i := range bigZones {
		d.DomainSearch = append(d.DomainSearch, fmt.Sprintf("zone%02d.region.example.test", i))
	}
	add(macBig, d, backend.Netboot{})
	return m
}

func (m *memBackend) Lookup(ctx context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
	m.calls.Add(1)
	switch string(req.MACAddress) {
	case string(macError):
		return backend.DHCP{}, backend.Netboot{}, errors.New("database on fire")
	case string(macSlow):
		<-ctx.Done()
		return backend.DHCP{}, backend.Netboot{}, fmt.Errorf("slow backend: %w", ctx.Err())
	}
	r, ok := m.res[string(req.MACAddress)]
	if !ok {
		return backend.DHCP{}, backend.Netboot{}, fmt.Errorf("lookup %v: %w", req.MACAddress, backend.ErrNotFound)
	}
	return r.d, r.n, nil
}

const bigZones = 14

func testConfig(b backend.Backend) Config {
	return Config{
		Backend:    b,
		ServerAddr: serverIP,
		Netboot: NetbootConfig{
			HTTPBaseURL: mustURL("http://198.18.0.1:8080/ipxe/"),
		},
	}
}

func newTestServer(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	s, err := New(cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// request builds a client request; mods adjust it.
func request(mac net.HardwareAddr, typ dhcpv4.MessageType, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	p := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootRequest,
		HWType:        1,
		TransactionID: dhcpv4.TransactionID{1, 2, 3, 4},
		ClientIPAddr:  net.IPv4zero,
		YourIPAddr:    net.IPv4zero,
		ServerIPAddr:  net.IPv4zero,
		GatewayIPAddr: net.IPv4zero,
		ClientHWAddr:  mac,
		Options:       dhcpv4.Options{},
	}
	p.UpdateOption(dhcpv4.OptMessageType(typ))
	for _, m := range mods {
		m(p)
	}
	return p
}

func withOpt(code uint8, v ...byte) dhcpv4.Modifier {
	return func(d *dhcpv4.DHCPv4) { d.Options[code] = v }
}

func withStrOpt(code uint8, v string) dhcpv4.Modifier { return withOpt(code, []byte(v)...) }

func withIPOpt(code uint8, a netip.Addr) dhcpv4.Modifier {
	b := a.As4()
	return withOpt(code, b[:]...)
}

// pxe makes the request look like a PXE ROM of architecture arch.
func pxe(class string, arch uint16) dhcpv4.Modifier {
	return func(d *dhcpv4.DHCPv4) {
		d.Options[60] = []byte(class + ":Arch:00007:UNDI:003016")
		d.Options[93] = binary.BigEndian.AppendUint16(nil, arch)
		d.Options[94] = []byte{1, 3, 16}
		d.Options[97] = append([]byte{0}, make([]byte, 16)...)
	}
}

// summary is a reply decoded for comparison.
type summary struct {
	Type    string
	Flags   uint16
	Ciaddr  string
	Yiaddr  string
	Siaddr  string
	Giaddr  string
	Sname   string
	File    string
	Options map[uint8]string
	Order   string // option codes in wire order
	Dest    Destination
	Size    int
}

func summarize(p *dhcpv4.DHCPv4, dst Destination) *summary {
	if p == nil {
		return nil
	}
	s := &summary{
		Type:    p.MessageType().String(),
		Flags:   p.Flags,
		Ciaddr:  p.ClientIPAddr.String(),
		Yiaddr:  p.YourIPAddr.String(),
		Siaddr:  p.ServerIPAddr.String(),
		Giaddr:  p.GatewayIPAddr.String(),
		Sname:   p.ServerHostName,
		File:    p.BootFileName,
		Options: map[uint8]string{},
		Dest:    dst,
	}
	for code, v := range p.Options {
		s.Options[code] = decodeOpt(code, v)
	}
	return s
}

func decodeOpt(code uint8, v []byte) string {
	switch code {
	case 1, 3, 6, 28, 42, 54:
		var parts []string
		for i := 0; i+4 <= len(v); i += 4 {
			parts = append(parts, netip.AddrFrom4([4]byte(v[i:i+4])).String())
		}
		return strings.Join(parts, ",")
	case 51, 58, 59:
		if len(v) == 4 {
			return fmt.Sprint(binary.BigEndian.Uint32(v))
		}
	case 53:
		if len(v) == 1 {
			return dhcpv4.MessageType(v[0]).String()
		}
	case 12, 15, 60, 67:
		return string(v)
	case 119:
		l, err := rfc1035label.FromBytes(v)
		if err != nil {
			return "bad 119: " + err.Error()
		}
		return strings.Join(l.Labels, ",")
	}
	return fmt.Sprintf("%x", v)
}

// optionOrder returns the option codes of a wire packet in order.
func optionOrder(pkt []byte) []uint8 {
	var codes []uint8
	b := pkt[240:]
	for len(b) > 0 && b[0] != 255 {
		if b[0] == 0 {
			b = b[1:]
			continue
		}
		codes = append(codes, b[0])
		b = b[2+int(b[1]):]
	}
	return codes
}

func cmpDiff(want, got any) string { return cmp.Diff(want, got, equate) }
