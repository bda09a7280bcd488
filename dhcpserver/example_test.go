package dhcpserver_test

import (
	"context"
	"errors"
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

// OnDecision sees every decision about a client; here an OFFER, then the
// ACK of the same transaction, made on the OFFER's answer.
func ExampleConfig_onDecision() {
	decisions := make(chan dhcpserver.Decision, 16) // never block the server
	srv, _ := dhcpserver.New(dhcpserver.Config{
		Backend: backend.BackendFunc(func(ctx context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
			return backend.DHCP{IPAddress: netip.MustParseAddr("198.18.0.10")}, backend.Netboot{}, nil
		}),
		ServerAddr: netip.MustParseAddr("198.18.0.1"),
		OnDecision: func(d dhcpserver.Decision) {
			select {
			case decisions <- d:
			default: // full: drop rather than wait
			}
		},
	})
	defer srv.Close()
	mac, _ := net.ParseMAC("52:54:00:66:ea:9a")
	discover, _ := dhcpv4.NewDiscovery(mac)
	offer, _ := srv.Handle(context.Background(), discover)
	request, _ := dhcpv4.NewRequestFromOffer(offer)
	srv.Handle(context.Background(), request)
	close(decisions)
	for d := range decisions {
		fmt.Printf("%s %s %s %q\n", d.Kind, d.MAC, d.IP, d.Reason)
	}
	fmt.Println("backend lookups:", srv.Stats().Lookups)
	// Output:
	// offer 52:54:00:66:ea:9a 198.18.0.10 ""
	// ack 52:54:00:66:ea:9a 198.18.0.10 "answer reused"
	// backend lookups: 1
}

// Raw mode with a socket opened before serving: once ListenRaw returns,
// requests arriving on the interface are queued for Serve. (Needs Linux
// and CAP_NET_RAW.)
func ExampleListenRaw() {
	srv, err := dhcpserver.New(dhcpserver.Config{
		Backend: backend.BackendFunc(func(context.Context, backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
			return backend.DHCP{}, backend.Netboot{}, backend.ErrNotFound
		}),
		Interface: "eth0", // ServerAddr: eth0's first IPv4 address
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	conn, err := dhcpserver.ListenRaw("eth0")
	if err != nil {
		fmt.Println(err)
		return
	}
	go func() {
		time.Sleep(time.Minute)
		srv.Shutdown(context.Background())
	}()
	if err := srv.Serve(conn); !errors.Is(err, dhcpserver.ErrServerClosed) {
		fmt.Println(err)
	}
}
