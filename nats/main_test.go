package nats_test

import (
	"context"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/internal/natstest"
	"github.com/tinkerbell/backend/internal/schematest"
	"github.com/tinkerbell/backend/internal/wire"
	natsbackend "github.com/tinkerbell/backend/nats"
)

func TestMain(m *testing.M) {
	if url := os.Getenv(envChildResponder); url != "" {
		childResponder(url)
		return
	}
	goleak.VerifyTestMain(m)
}

// cmpOpts compares the schema types.
var cmpOpts = cmp.Options{schematest.CmpOpts, cmpopts.EquateEmpty()}

var testMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0x66, 0xea, 0x9a}

// result is what a lookup returns, for comparisons.
type result struct {
	DHCP    backend.DHCP
	Netboot backend.Netboot
}

// fullMessage is a response with every field set.
func fullMessage(mac net.HardwareAddr) backend.Message {
	u := backend.URL("http://198.18.0.1/auto.ipxe")
	return backend.Message{
		DHCP: backend.DHCP{
			MACAddress:       mac,
			IPAddress:        netip.MustParseAddr("198.18.0.10"),
			SubnetMask:       backend.MaskFrom(24),
			DefaultGateway:   netip.MustParseAddr("198.18.0.1"),
			NameServers:      []netip.Addr{netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.3")},
			Hostname:         "node-1",
			DomainName:       "example.test",
			BroadcastAddress: netip.MustParseAddr("198.18.0.255"),
			NTPServers:       []netip.Addr{netip.MustParseAddr("198.18.0.4")},
			LeaseTime:        86400,
			DomainSearch:     []string{"example.test", "lab.example.test"},
		},
		Netboot: backend.Netboot{AllowNetboot: true, IPXEScriptURL: u},
	}
}

// responseEvent encodes m as a response event in our canonical form.
func responseEvent(m backend.Message) []byte {
	var ids wire.IDs
	a := wire.Attrs{Source: "/test/responder", Type: backend.ResponseEventType, Time: time.Now()}
	return wire.AppendResponse(nil, &a, &ids, &m)
}

// testEnv is an embedded server with one connection for the requester and
// one for the responders written in the tests.
type testEnv struct {
	srv       *natstest.Server
	req, resp *nats.Conn
}

func newEnv(t *testing.T, opts ...nats.Option) *testEnv {
	t.Helper()
	srv := natstest.Run(t, nil)
	return &testEnv{
		srv:  srv,
		req:  natstest.Connect(t, srv, opts...),
		resp: natstest.Connect(t, srv, opts...),
	}
}

// newBackend returns a Backend on nc with cfg.
func newBackend(t testing.TB, nc *nats.Conn, cfg natsbackend.Config) *natsbackend.Backend {
	t.Helper()
	cfg.Conn = nc
	b, err := natsbackend.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return b
}

// respond serves subject on nc with a plain subscription: each request gets
// the reply fn returns, or none when fn returns nil. fn runs in a NATS
// callback: it must not call t.Fatal.
func respond(t testing.TB, nc *nats.Conn, subject string, fn func(req *nats.Msg) *nats.Msg) {
	t.Helper()
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		if r := fn(m); r != nil {
			_ = m.RespondMsg(r) // a lost reply shows as a failed lookup
		}
	})
	if err != nil {
		t.Fatalf("subscribe %q: %v", subject, err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	// The requester uses another connection: make sure the server knows
	// the subscription before any request is sent.
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
}

// reply returns a reply message with body data and the Content-Type header.
func reply(data []byte) *nats.Msg {
	return &nats.Msg{Header: nats.Header{"Content-Type": {backend.ContentType}}, Data: data}
}

// budget returns the value of the timeout header of m.
func budget(m *nats.Msg) (time.Duration, error) {
	n, err := strconv.ParseInt(m.Header.Get(backend.HeaderTimeout), 10, 64)
	return time.Duration(n) * time.Millisecond, err
}

// lookupResult is a lookup's outcome, sent over a channel.
type lookupResult struct {
	result
	err error
}

// goLookup runs a lookup in a goroutine and returns the channel its result
// arrives on.
func goLookup(ctx context.Context, b backend.Backend, req backend.DHCPRequest) <-chan lookupResult {
	ch := make(chan lookupResult, 1)
	go func() {
		d, n, err := b.Lookup(ctx, req)
		ch <- lookupResult{result{d, n}, err}
	}()
	return ch
}

// atomicCounter counts events across goroutines.
type atomicCounter struct{ n atomic.Int64 }

func (c *atomicCounter) add() int64  { return c.n.Add(1) }
func (c *atomicCounter) load() int64 { return c.n.Load() }

// waitFor polls cond until it holds, failing the test if it does not hold
// within a generous time.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 10s")
		}
		<-tick.C
	}
}
