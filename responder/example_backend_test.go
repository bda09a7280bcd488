package responder_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/tinkerbell/backend"
	natsbackend "github.com/tinkerbell/backend/nats"
	"github.com/tinkerbell/backend/responder"
)

// Hosts is a backend that knows a few machines by MAC address.
type Hosts map[string]backend.DHCP

// Lookup implements [backend.Backend].
func (h Hosts) Lookup(_ context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
	if d, ok := h[req.MACAddress.String()]; ok {
		return d, backend.Netboot{AllowNetboot: true}, nil
	}
	return backend.DHCP{}, backend.Netboot{}, backend.ErrNotFound // the DHCP server stays silent
}

// This example serves a custom backend on NATS and asks it through the
// nats requester, as a DHCP server would.
func Example_backend() {
	nc, stop := startNATS() // any *nats.Conn; here an embedded server
	defer stop()

	// The backend's side: serve it on the default subject.
	srv, err := responder.New(responder.Config{Conn: nc, Backend: Hosts{
		"52:54:00:66:ea:9a": {IPAddress: netip.MustParseAddr("198.18.0.10"), Hostname: "node-1"},
	}})
	if err != nil {
		panic(err)
	}
	go srv.Serve()
	defer srv.Shutdown(context.Background())

	// The DHCP server's side: a backend.Backend that asks over NATS.
	b, err := natsbackend.New(natsbackend.Config{Conn: nc})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	mac, _ := net.ParseMAC("52:54:00:66:ea:9a")
	d, nb, err := b.Lookup(ctx, backend.DHCPRequest{MACAddress: mac})
	fmt.Println(d.IPAddress, d.Hostname, nb.AllowNetboot, err)

	other, _ := net.ParseMAC("52:54:00:00:00:01")
	_, _, err = b.Lookup(ctx, backend.DHCPRequest{MACAddress: other})
	fmt.Println(errors.Is(err, backend.ErrNotFound))

	// Output:
	// 198.18.0.10 node-1 true <nil>
	// true
}

// startNATS starts an embedded NATS server without a network listener and
// connects to it in-process.
func startNATS() (*nats.Conn, func()) {
	ns, err := server.NewServer(&server.Options{DontListen: true, NoLog: true, NoSigs: true})
	if err != nil {
		panic(err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		panic("NATS server not ready")
	}
	nc, err := nats.Connect(ns.ClientURL(), nats.InProcessServer(ns))
	if err != nil {
		panic(err)
	}
	return nc, func() {
		nc.Close()
		ns.Shutdown()
		ns.WaitForShutdown()
	}
}
