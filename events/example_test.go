package events_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/tinkerbell/backend/events"
)

// This example publishes one decision and receives it as a subscriber
// (for example `nats sub 'tinkerbell.dhcp.events.>'`) would.
func ExamplePublisher() {
	nc, stop := startNATS()
	defer stop()

	sub, err := nc.SubscribeSync("tinkerbell.dhcp.events.>")
	if err != nil {
		panic(err)
	}
	p, err := events.New(events.Config{Conn: nc})
	if err != nil {
		panic(err)
	}
	mac, _ := net.ParseMAC("52:54:00:66:ea:9a")
	p.Publish(events.Event{
		Kind: events.KindOffer, MAC: mac, IP: netip.MustParseAddr("198.18.0.10"), XID: 0x3903f326,
		MessageType: "DISCOVER", ServerID: netip.MustParseAddr("198.18.0.1"),
	})
	if err := p.Shutdown(context.Background()); err != nil {
		panic(err)
	}
	msg, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		panic(err)
	}
	fmt.Println(msg.Subject)
	fmt.Printf("%+v\n", p.Stats())
	// Output:
	// tinkerbell.dhcp.events.offer
	// {Published:1 Dropped:0 Failed:0 Pending:0}
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
	return nc, func() { nc.Close(); ns.Shutdown(); ns.WaitForShutdown() }
}
