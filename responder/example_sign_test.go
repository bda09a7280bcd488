package responder_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/tinkerbell/backend"
	natsbackend "github.com/tinkerbell/backend/nats"
	"github.com/tinkerbell/backend/responder"
)

// A responder that signs its answers, and requesters that trust its key or
// another one.
func ExampleConfig_signingKey() {
	nc, stop := startNATS()
	defer stop()

	// In production: kp, err := nkeys.FromSeed(seedFromAFileOnlyTheResponderReads)
	kp, err := nkeys.CreateUser()
	if err != nil {
		panic(err)
	}
	srv, err := responder.New(responder.Config{Conn: nc, SigningKey: kp, Backend: Hosts{
		"52:54:00:66:ea:9a": {IPAddress: netip.MustParseAddr("198.18.0.10"), Hostname: "node-1"},
	}})
	if err != nil {
		panic(err)
	}
	go srv.Serve()
	defer srv.Shutdown(context.Background())

	pub, _ := kp.PublicKey() // what DHCP servers are configured with
	trusting, _ := natsbackend.New(natsbackend.Config{Conn: nc, TrustedKeys: []string{pub}})
	other, _ := nkeys.CreateUser()
	otherPub, _ := other.PublicKey()
	suspicious, _ := natsbackend.New(natsbackend.Config{Conn: nc, TrustedKeys: []string{otherPub}})

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	mac, _ := net.ParseMAC("52:54:00:66:ea:9a")
	d, _, err := trusting.Lookup(ctx, backend.DHCPRequest{MACAddress: mac})
	fmt.Println(d.Hostname, err)

	ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, _, err = suspicious.Lookup(ctx, backend.DHCPRequest{MACAddress: mac})
	fmt.Println(errors.Is(err, backend.ErrBadSignature))
	// Output:
	// node-1 <nil>
	// true
}
