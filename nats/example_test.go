package nats_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/tinkerbell/backend"
	natsbackend "github.com/tinkerbell/backend/nats"
)

// A DHCP server's view: construct a Backend on a NATS connection and look
// up a client. An embedded NATS server and a responder that always gives
// the same answer stand in for a real deployment.
func Example() {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true})
	if err != nil {
		log.Fatal(err)
	}
	srv.Start()
	defer srv.WaitForShutdown()
	defer srv.Shutdown()
	if !srv.ReadyForConnections(10 * time.Second) {
		log.Fatal("NATS server not ready")
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()

	// The responder: usually package responder in another process; any
	// program that answers with a response event will do.
	sub, err := nc.Subscribe(backend.DefaultSubject, func(m *nats.Msg) {
		_ = m.Respond([]byte(`{"specversion":"1.0","id":"1","source":"/example","type":"org.tinkerbell.dhcp.backend.response",
			"data":{"IPAddress":"198.18.0.10","SubnetMask":"255.255.255.0","Hostname":"node-1","Error":{"Code":0,"Message":""}}}`))
	})
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Unsubscribe()

	b, err := natsbackend.New(natsbackend.Config{Conn: nc})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	mac, _ := net.ParseMAC("52:54:00:66:ea:9a")
	dhcp, netboot, err := b.Lookup(ctx, backend.DHCPRequest{MACAddress: mac})
	switch {
	case errors.Is(err, backend.ErrNotFound):
		fmt.Println("no reservation: stay silent")
	case err != nil:
		log.Fatal(err)
	default:
		fmt.Println(dhcp.IPAddress, dhcp.SubnetMask, dhcp.Hostname, netboot.AllowNetboot)
	}
	// Output: 198.18.0.10 255.255.255.0 node-1 false
}

// Configuration for a multi-tenant deployment: the prefix keeps each
// site's lookups on its own subject, and each attempt gets 500 ms, within
// the deadline of the caller's context.
func ExampleNew() {
	nc, err := nats.Connect(nats.DefaultURL, nats.MaxReconnects(-1))
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	b, err := natsbackend.New(natsbackend.Config{
		Conn:          nc,
		SubjectPrefix: "site-a",
		Timeout:       500 * time.Millisecond,
		Retry:         natsbackend.RetryPolicy{MaxAttempts: 2},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(b.Subject())
}

// A DHCP server's connection: the health settings first, then the
// deployment's own options (credentials, TLS), and its own inbox prefix
// for the permission policy of the README.
func ExampleConnectionOptions() {
	opts := append(natsbackend.ConnectionOptions(),
		nats.Name("dhcp-a"),
		// nats.UserCredentials("/etc/tinkerbell/dhcp-a.creds"),
		// nats.RootCAs("/etc/tinkerbell/ca.pem"),
	)
	nc, err := nats.Connect(nats.DefaultURL, opts...)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	b, err := natsbackend.New(natsbackend.Config{Conn: nc, InboxPrefix: "_INBOX.dhcp-a"})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()
	fmt.Println(b.Subject())
}

// Counters for a metrics exporter: lookups by outcome, requests, hedges.
func ExampleBackend_Stats() {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true})
	if err != nil {
		log.Fatal(err)
	}
	srv.Start()
	defer srv.WaitForShutdown()
	defer srv.Shutdown()
	if !srv.ReadyForConnections(10 * time.Second) {
		log.Fatal("NATS server not ready")
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	sub, err := nc.Subscribe(backend.DefaultSubject, func(m *nats.Msg) {
		_ = m.Respond([]byte(`{"specversion":"1.0","id":"1","source":"/example","type":"org.tinkerbell.dhcp.backend.response",
			"data":{"Error":{"Code":404,"Message":"no reservation"}}}`))
	})
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Unsubscribe()

	b, err := natsbackend.New(natsbackend.Config{Conn: nc})
	if err != nil {
		log.Fatal(err)
	}
	mac, _ := net.ParseMAC("52:54:00:66:ea:9a")
	for range 3 {
		_, _, _ = b.Lookup(context.Background(), backend.DHCPRequest{MACAddress: mac})
	}
	s := b.Stats()
	fmt.Println("not found:", s.Lookups[natsbackend.OutcomeNotFound], "code 404:", s.Codes[backend.CodeNotFound])
	fmt.Println("requests:", s.Requests, "hedges:", s.Hedges, "observed:", s.Latency.Count)
	// Output:
	// not found: 3 code 404: 3
	// requests: 3 hedges: 0 observed: 3
}
