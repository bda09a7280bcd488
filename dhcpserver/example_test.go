package dhcpserver_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/dhcpserver"
)

// A server in UDP mode on loopback, with an in-process Backend, and a
// client that runs DISCOVER → OFFER against it. Replies go back to the
// client's source address and port.
func Example() {
	reservations := backend.BackendFunc(func(ctx context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
		if req.MACAddress.String() != "52:54:00:66:ea:9a" {
			return backend.DHCP{}, backend.Netboot{}, backend.ErrNotFound
		}
		return backend.DHCP{
			IPAddress:      netip.MustParseAddr("198.18.0.10"),
			SubnetMask:     backend.MaskFrom(24),
			DefaultGateway: netip.MustParseAddr("198.18.0.1"),
			LeaseTime:      3600,
		}, backend.Netboot{}, nil
	})
	srv, err := dhcpserver.New(dhcpserver.Config{
		Backend:    reservations,
		ServerAddr: netip.MustParseAddr("198.18.0.1"),
	})
	if err != nil {
		panic(err)
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		panic(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(conn) }()
	defer func() {
		srv.Shutdown(context.Background())
		<-served
	}()

	// The client.
	client, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		panic(err)
	}
	defer client.Close()
	mac, _ := net.ParseMAC("52:54:00:66:ea:9a")
	discover, _ := dhcpv4.NewDiscovery(mac)
	client.WriteTo(discover.ToBytes(), conn.LocalAddr())
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 1500)
	n, _, err := client.ReadFrom(buf)
	if err != nil {
		panic(err)
	}
	offer, _ := dhcpv4.FromBytes(buf[:n])
	fmt.Println(offer.MessageType(), offer.YourIPAddr, net.IP(offer.SubnetMask()), offer.Router(), offer.IPAddressLeaseTime(0))
	// Output: OFFER 198.18.0.10 255.255.255.0 [198.18.0.1] 1h0m0s
}

// Handle answers a parsed request without a socket: the reply, and where
// RFC 2131 says it goes.
func ExampleServer_Handle() {
	srv, _ := dhcpserver.New(dhcpserver.Config{
		Backend: backend.BackendFunc(func(ctx context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
			return backend.DHCP{IPAddress: netip.MustParseAddr("198.18.0.10")}, backend.Netboot{}, nil
		}),
		ServerAddr: netip.MustParseAddr("198.18.0.1"),
	})
	defer srv.Close()
	mac, _ := net.ParseMAC("52:54:00:66:ea:9a")
	discover, _ := dhcpv4.NewDiscovery(mac)
	reply, dst := srv.Handle(context.Background(), discover)
	fmt.Println(reply.MessageType(), reply.YourIPAddr, dst.Addr, dst.Link == dhcpserver.LinkClient)
	// Output: OFFER 198.18.0.10 198.18.0.10:68 true
}
