package responder_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/internal/natstest"
	"github.com/tinkerbell/backend/internal/wire"
	natsbackend "github.com/tinkerbell/backend/nats"
	"github.com/tinkerbell/backend/responder"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// pollTimeout bounds every wait for a condition.
const pollTimeout = 10 * time.Second

// waitFor polls cond until it holds, failing the test after pollTimeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(pollTimeout)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// conn starts an embedded NATS server and returns a connection to it, plus
// a function returning more connections to the same server.
func conn(t *testing.T) (*nats.Conn, func() *nats.Conn) {
	t.Helper()
	srv := natstest.Run(t, nil)
	more := func() *nats.Conn { return natstest.Connect(t, srv) }
	return more(), more
}

// running is a responder being served.
type running struct {
	*responder.Server
	served chan error // receives Serve's result
}

// serve creates a responder from cfg, runs Serve and, when the test ends,
// closes it and checks that Serve returned ErrServerClosed.
func serve(t *testing.T, cfg responder.Config) *running {
	t.Helper()
	srv, err := responder.New(cfg)
	if err != nil {
		t.Fatalf("responder.New: %v", err)
	}
	s := &running{Server: srv, served: make(chan error, 1)}
	go func() { s.served <- srv.Serve() }()
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := s.wait(t); !errors.Is(err, responder.ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return s
}

// wait returns what Serve returned, once and then again on later calls.
func (s *running) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-s.served:
		s.served <- err
		return err
	case <-time.After(pollTimeout):
		t.Fatal("Serve did not return")
		return nil
	}
}

// requester returns a natsbackend requester on nc.
func requester(t *testing.T, cfg natsbackend.Config) *natsbackend.Backend {
	t.Helper()
	b, err := natsbackend.New(cfg)
	if err != nil {
		t.Fatalf("natsbackend.New: %v", err)
	}
	return b
}

func mustMAC(t testing.TB, s string) net.HardwareAddr {
	t.Helper()
	mac, err := net.ParseMAC(s)
	if err != nil {
		t.Fatal(err)
	}
	return mac
}

// requestEvent returns a valid request event for mac.
func requestEvent(mac net.HardwareAddr, tp string) []byte {
	var ids wire.IDs
	a := wire.Attrs{Source: "/test", Type: backend.RequestEventType, Traceparent: tp}
	return wire.AppendRequest(nil, &a, &ids, &backend.DHCPRequest{MACAddress: mac, Traceparent: tp})
}

// rawRequest sends data with header h to subject over nc and returns the
// reply.
func rawRequest(t *testing.T, nc *nats.Conn, subject string, h nats.Header, data []byte) *nats.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	reply, err := nc.RequestMsgWithContext(ctx, &nats.Msg{Subject: subject, Header: h, Data: data})
	if err != nil {
		t.Fatalf("request to %s: %v", subject, err)
	}
	return reply
}

// logBuffer is a concurrency-safe log sink.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) contains(s string) bool { return strings.Contains(b.String(), s) }

func newLogger() (*slog.Logger, *logBuffer) {
	var b logBuffer
	return slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug})), &b
}
