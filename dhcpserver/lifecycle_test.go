package dhcpserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/tinkerbell/backend"
)

// TestShutdownDeadline: Shutdown returns the context's error when the
// packets being handled outlast it, as http.Server does; Close then ends
// them, and Serve returns ErrServerClosed.
func TestShutdownDeadline(t *testing.T) {
	started := make(chan struct{})
	be := backend.BackendFunc(func(ctx context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
		close(started)
		<-ctx.Done() // until Close
		return backend.DHCP{}, backend.Netboot{}, ctx.Err()
	})
	s := newTestServer(t, testConfig(be))
	addr, errc := startLoopback(t, s)
	c := newClient(t, addr)
	c.send(request(macKnown, dhcpv4.MessageTypeDiscover).ToBytes())
	<-started
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	begin := time.Now()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(begin); d > 5*time.Second {
		t.Errorf("Shutdown returned %v after its deadline", d)
	}
	select {
	case err := <-errc:
		t.Fatalf("Serve returned %v while a packet was in flight", err)
	default:
	}
	s.Close()
	if err := <-errc; !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve = %v, want ErrServerClosed", err)
	}
	if err := s.Shutdown(t.Context()); err != nil {
		t.Errorf("Shutdown after Close = %v", err)
	}
}

// TestWaiterHonoursItsContext: a request waiting for a lookup that another
// request started returns when its own context ends; the lookup goes on
// for the others.
func TestWaiterHonoursItsContext(t *testing.T) {
	release := make(chan struct{})
	var calls sync.WaitGroup
	calls.Add(1)
	be := backend.BackendFunc(func(ctx context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
		calls.Done()
		select {
		case <-release:
			return reservation(), backend.Netboot{}, nil
		case <-ctx.Done():
			return backend.DHCP{}, backend.Netboot{}, ctx.Err()
		}
	})
	s := newTestServer(t, testConfig(be))
	first := make(chan *dhcpv4.DHCPv4, 1)
	go func() {
		p, _ := s.Handle(t.Context(), request(macKnown, dhcpv4.MessageTypeDiscover))
		first <- p
	}()
	calls.Wait()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if p, _ := s.Handle(ctx, request(macKnown, dhcpv4.MessageTypeDiscover)); p != nil {
		t.Errorf("a request whose context ended got %v", p.Summary())
	}
	if n := s.Stats().Dropped[DropCanceled]; n != 1 {
		t.Errorf("Dropped[%q] = %d, want 1", DropCanceled, n)
	}
	close(release)
	if p := <-first; p == nil || p.MessageType() != dhcpv4.MessageTypeOffer {
		t.Errorf("the first request got %v, want an OFFER", p)
	}
	if st := s.Stats(); st.Lookups != 1 {
		t.Errorf("Lookups = %d, want 1", st.Lookups)
	}
}

// TestLogsMACAsText: every log record that names a client has its MAC
// address as text under the key "mac", and errors under "error".
func TestLogsMACAsText(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	cfg := testConfig(newMemBackend())
	cfg.Logger = slog.New(slog.NewJSONHandler(lockedWriter{&mu, &buf}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := newTestServer(t, cfg)
	for _, req := range []*dhcpv4.DHCPv4{
		request(macError, dhcpv4.MessageTypeDiscover),                                         // Error: backend failed
		request(macKnown, dhcpv4.MessageTypeDecline, withIPOpt(50, clientIP)),                 // Warn: decline
		request(macKnown, dhcpv4.MessageTypeRelease, dhcpv4.WithClientIP(clientIP.AsSlice())), // Debug: release
		request(macKnown, dhcpv4.MessageTypeDiscover, bcast, pxe("PXEClient", 99)),            // Debug: unknown arch
	} {
		s.Handle(t.Context(), req)
	}
	s.handlePacket(t.Context(), newScratch(), request(macNone, dhcpv4.MessageTypeDiscover).ToBytes()) // Debug: no reply, as from a socket
	mu.Lock()
	defer mu.Unlock()
	var macs []string
	sawError := false
	for line := range strings.Lines(buf.String()) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if _, ok := rec["err"]; ok {
			t.Errorf("record uses the key err: %s", line)
		}
		if _, ok := rec["error"]; ok {
			sawError = true
		}
		if m, ok := rec["mac"]; ok {
			s, _ := m.(string)
			if _, err := net.ParseMAC(s); err != nil {
				t.Errorf("mac %v is not text: %s", m, line)
			}
			macs = append(macs, s)
		}
	}
	if !sawError {
		t.Error("no record carries the backend's error under the key error")
	}
	for _, want := range []string{macError.String(), macNone.String(), macKnown.String()} {
		if !strings.Contains(strings.Join(macs, " "), want) {
			t.Errorf("no record with mac %q; got %v", want, macs)
		}
	}
	if len(macs) < 5 {
		t.Errorf("%d records with a mac, want at least 5:\n%s", len(macs), buf.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestServerAddrDefault: ServerAddr defaults from UDPAddr when it names an
// address.
func TestServerAddrDefault(t *testing.T) {
	cfg := testConfig(newMemBackend())
	cfg.ServerAddr = netip.Addr{}
	cfg.UDPAddr = netip.MustParseAddrPort("198.18.0.1:67")
	s := newTestServer(t, cfg)
	reply, _ := s.Handle(t.Context(), request(macKnown, dhcpv4.MessageTypeDiscover))
	if diff := cmp.Diff("198.18.0.1", decodeOpt(54, reply.Options[54])); diff != "" {
		t.Errorf("option 54 (-want +got):\n%s", diff)
	}
}

// heldBackend holds its first call, whatever its context, until release
// is closed, then answers reservation(); started is closed when that call
// begins and returned when it ends.
type heldBackend struct{ started, release, returned chan struct{} }

func newHeldBackend() *heldBackend {
	return &heldBackend{started: make(chan struct{}), release: make(chan struct{}), returned: make(chan struct{})}
}

func (h *heldBackend) Lookup(context.Context, backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
	defer close(h.returned)
	close(h.started)
	<-h.release
	return reservation(), backend.Netboot{}, nil
}

// TestShutdownWaitsForLookups: a lookup whose request gave up still runs
// (others may share it); Shutdown waits for it, within its context.
func TestShutdownWaitsForLookups(t *testing.T) {
	be := newHeldBackend()
	s := newTestServer(t, testConfig(be))
	ctx, cancel := context.WithCancel(t.Context())
	gave := make(chan *dhcpv4.DHCPv4)
	go func() {
		p, _ := s.Handle(ctx, request(macKnown, dhcpv4.MessageTypeDiscover))
		gave <- p
	}()
	<-be.started
	cancel()
	if p := <-gave; p != nil {
		t.Fatalf("a request that gave up got %v", p.Summary())
	}
	short, cancelShort := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancelShort()
	if err := s.Shutdown(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown with the lookup running = %v, want context.DeadlineExceeded", err)
	}
	close(be.release)
	if err := s.Shutdown(t.Context()); err != nil {
		t.Errorf("Shutdown = %v", err)
	}
	if st := s.Stats(); st.InFlight != 0 || st.Lookups != 1 {
		t.Errorf("InFlight %d, Lookups %d; want 0, 1", st.InFlight, st.Lookups)
	}
}

// TestCloseWithHungBackend: Close ends Serve although a worker is inside a
// Backend call that ignores its context; the worker ends when the call
// returns.
func TestCloseWithHungBackend(t *testing.T) {
	be := newHeldBackend() // ignores its context
	s := newTestServer(t, testConfig(be))
	addr, errc := startLoopback(t, s)
	c := newClient(t, addr)
	c.send(request(macKnown, dhcpv4.MessageTypeDiscover).ToBytes())
	<-be.started
	s.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve = %v, want ErrServerClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("Serve did not return after Close while the Backend hung")
	}
	close(be.release)
	<-be.returned
}
