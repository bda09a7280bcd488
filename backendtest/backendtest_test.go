package backendtest_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/backendtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	mac1 = net.HardwareAddr{0x52, 0x54, 0x00, 0x66, 0xea, 0x9a}
	mac2 = net.HardwareAddr{0x52, 0x54, 0x00, 0x66, 0xea, 0x9b}
)

func reservations() []backendtest.Reservation {
	u := backend.URL("http://198.18.0.1:8080/auto.ipxe?mac=${net0/mac}")
	return []backendtest.Reservation{
		{
			DHCP: backend.DHCP{
				MACAddress: slices.Clone(mac1), IPAddress: netip.MustParseAddr("198.18.0.10"), SubnetMask: backend.MaskFrom(24),
				DefaultGateway: netip.MustParseAddr("198.18.0.1"), NameServers: []netip.Addr{netip.MustParseAddr("198.18.0.2")},
				Hostname: "node-1", DomainSearch: []string{"lab.example"}, LeaseTime: 3600,
			},
			Netboot: backend.Netboot{AllowNetboot: true, IPXEScriptURL: u},
		},
		{DHCP: backend.DHCP{MACAddress: slices.Clone(mac2), IPAddress: netip.MustParseAddr("198.18.0.11")}},
	}
}

// table is a correct backend: it copies what it returns and honours ctx.
type table struct {
	mu    sync.RWMutex
	hosts map[string]backendtest.Reservation
}

func newTable(rs []backendtest.Reservation) *table {
	t := &table{hosts: map[string]backendtest.Reservation{}}
	for _, r := range rs {
		t.hosts[r.DHCP.MACAddress.String()] = r
	}
	return t
}

func (t *table) Lookup(ctx context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
	if err := ctx.Err(); err != nil {
		return backend.DHCP{}, backend.Netboot{}, err
	}
	t.mu.RLock()
	r, ok := t.hosts[req.MACAddress.String()]
	if req.IPAddress.IsValid() {
		for _, h := range t.hosts {
			if h.DHCP.IPAddress == req.IPAddress {
				r, ok = h, true
			}
		}
	}
	t.mu.RUnlock()
	if (len(req.MACAddress) == 0 && !req.IPAddress.IsValid()) || !ok {
		return backend.DHCP{}, backend.Netboot{}, backend.ErrNotFound
	}
	d, n := r.DHCP, r.Netboot
	d.MACAddress = slices.Clone(d.MACAddress)
	d.NameServers = slices.Clone(d.NameServers)
	d.NTPServers = slices.Clone(d.NTPServers)
	d.DomainSearch = slices.Clone(d.DomainSearch)
	return d, n, nil
}

func TestCorrectBackend(t *testing.T) {
	b := newTable(reservations())
	if err := backendtest.TestBackend(b, reservations()...); err != nil {
		t.Fatal(err)
	}
	backendtest.Run(t, b, reservations()...)
}

// TestSlowCorrectBackend: a backend that takes time but watches its context
// passes.
func TestSlowCorrectBackend(t *testing.T) {
	inner := newTable(reservations())
	b := backend.BackendFunc(func(ctx context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
		select {
		case <-time.After(2 * time.Millisecond):
		case <-ctx.Done():
			return backend.DHCP{}, backend.Netboot{}, ctx.Err()
		}
		return inner.Lookup(ctx, req)
	})
	c := backendtest.Config{Parallel: 4, Rounds: 3}
	if err := c.TestBackend(b, reservations()...); err != nil {
		t.Fatal(err)
	}
}

// wrap makes a broken backend from the correct one.
func wrap(f func(ctx context.Context, req backend.DHCPRequest, next backend.Backend) (backend.DHCP, backend.Netboot, error)) backend.Backend {
	next := newTable(reservations())
	return backend.BackendFunc(func(ctx context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
		return f(ctx, req, next)
	})
}

func TestBrokenBackends(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // lets the hung lookups return, for goleak
	shared := reservations()[0].DHCP

	tests := []struct {
		name string
		b    backend.Backend
		// want maps each check that must fail to a text its lines contain;
		// every other check must pass.
		want map[string]string
	}{
		{
			name: "wrong address",
			b: wrap(func(ctx context.Context, req backend.DHCPRequest, next backend.Backend) (backend.DHCP, backend.Netboot, error) {
				d, n, err := next.Lookup(ctx, req)
				if d.Hostname == "node-1" {
					d.IPAddress = netip.MustParseAddr("198.18.0.99")
				}
				return d, n, err
			}),
			want: map[string]string{
				"answers":    `52:54:00:66:ea:9a: wrong answer: IPAddress = "198.18.0.99", want "198.18.0.10"`,
				"concurrent": `wrong answer: IPAddress = "198.18.0.99"`,
				"by-ip":      `198.18.0.10: by IP: 52:54:00:66:ea:9a: wrong answer: IPAddress = "198.18.0.99"`,
				"ownership":  `the next answer differs`, // the answer differs anyway
			},
		},
		{
			name: "not found as a plain error",
			b: wrap(func(ctx context.Context, req backend.DHCPRequest, next backend.Backend) (backend.DHCP, backend.Netboot, error) {
				d, n, err := next.Lookup(ctx, req)
				if errors.Is(err, backend.ErrNotFound) {
					err = errors.New("no such host")
				}
				return d, n, err
			}),
			want: map[string]string{
				"not-found":  `00:00:5e:00:53:00: Lookup returned "no such host", which does not match backend.ErrNotFound (the responder would answer 500`,
				"concurrent": `does not match backend.ErrNotFound`,
				"by-ip":      `192.0.2.1: Lookup by IP returned "no such host"`,
			},
		},
		{
			name: "answers every MAC",
			b: wrap(func(ctx context.Context, req backend.DHCPRequest, next backend.Backend) (backend.DHCP, backend.Netboot, error) {
				d, n, err := next.Lookup(ctx, req)
				if err != nil {
					return backend.DHCP{IPAddress: netip.MustParseAddr("198.18.0.200")}, backend.Netboot{}, nil
				}
				return d, n, err
			}),
			want: map[string]string{
				"not-found":    `00:00:5e:00:53:00: answered an unknown MAC address (IPAddress 198.18.0.200)`,
				"concurrent":   `answered an unknown MAC address`,
				"odd-requests": `with no MAC address, Lookup answered with a reservation (IPAddress 198.18.0.200); want an error`,
				"by-ip":        `192.0.2.1: answered an address no reservation has`,
			},
		},
		{
			name: "ignores its context and hangs",
			b: wrap(func(ctx context.Context, req backend.DHCPRequest, next backend.Backend) (backend.DHCP, backend.Netboot, error) {
				if ctx.Err() != nil {
					<-release
				}
				return next.Lookup(context.Background(), req)
			}),
			want: map[string]string{
				"cancel":   `52:54:00:66:ea:9a: with a cancelled context, Lookup did not return within 50ms after the context was done`,
				"deadline": `with a deadline that has passed, Lookup did not return within 50ms`,
			},
		},
		{
			name: "context error not wrapped",
			b: wrap(func(ctx context.Context, req backend.DHCPRequest, next backend.Backend) (backend.DHCP, backend.Netboot, error) {
				if ctx.Err() != nil {
					return backend.DHCP{}, backend.Netboot{}, errors.New("db: query aborted")
				}
				return next.Lookup(ctx, req)
			}),
			want: map[string]string{
				"cancel":   `with a cancelled context, Lookup returned "db: query aborted", which wraps neither context canceled nor backend.ErrUnavailable (the responder would answer 500, not 503)`,
				"deadline": `with a deadline that has passed, Lookup returned "db: query aborted", which wraps neither context deadline exceeded`,
			},
		},
		{
			name: "panics",
			b: wrap(func(ctx context.Context, req backend.DHCPRequest, next backend.Backend) (backend.DHCP, backend.Netboot, error) {
				_ = req.MACAddress[5] // index out of range for short addresses
				return next.Lookup(ctx, req)
			}),
			want: map[string]string{
				"odd-requests": `with no MAC address, Lookup panicked: runtime error: index out of range [5] with length 0`,
				"by-ip":        `198.18.0.10: Lookup by IP panicked: runtime error: index out of range [5] with length 0`,
			},
		},
		{
			name: "returns its own slices",
			b: backend.BackendFunc(func(ctx context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
				switch req.MACAddress.String() {
				case mac1.String():
					return shared, reservations()[0].Netboot, nil
				case mac2.String():
					return reservations()[1].DHCP, backend.Netboot{}, nil
				}
				return backend.DHCP{}, backend.Netboot{}, backend.ErrNotFound
			}),
			want: map[string]string{
				"ownership": `52:54:00:66:ea:9a: after the caller modified the slices and URL of an answer, the next answer differs: Lookup must return copies, not its own data: 52:54:00:66:ea:9a: wrong answer: MACAddress = "ad:ab:ff:99:15:65"`,
			},
		},
		{
			name: "modifies the request",
			b: wrap(func(ctx context.Context, req backend.DHCPRequest, next backend.Backend) (backend.DHCP, backend.Netboot, error) {
				d, n, err := next.Lookup(ctx, req)
				if len(req.MACAddress) > 0 {
					req.MACAddress[0] = 0xaa
				}
				return d, n, err
			}),
			want: map[string]string{
				"ownership": `52:54:00:66:ea:9a: Lookup modified the request (now aa:54:00:66:ea:9a`,
			},
		},
		{
			name: "unsendable answer",
			b: wrap(func(ctx context.Context, req backend.DHCPRequest, next backend.Backend) (backend.DHCP, backend.Netboot, error) {
				d, n, err := next.Lookup(ctx, req)
				if d.Hostname == "node-1" {
					d.DefaultGateway = netip.MustParseAddr("2001:db8::1")
				}
				return d, n, err
			}),
			want: map[string]string{
				"answers":    `DefaultGateway = "2001:db8::1", want "198.18.0.1"`,
				"concurrent": `DefaultGateway = "2001:db8::1"`,
				"by-ip":      `DefaultGateway = "2001:db8::1"`,
				"ownership":  `the next answer differs`,
				"wire":       `52:54:00:66:ea:9a: the answer cannot be sent (the responder would answer 500): backend: invalid message: field "DefaultGateway" ("2001:db8::1"): not an IPv4 address`,
			},
		},
		{
			name: "answers by IP with another machine",
			b: wrap(func(ctx context.Context, req backend.DHCPRequest, next backend.Backend) (backend.DHCP, backend.Netboot, error) {
				if req.IPAddress == netip.MustParseAddr("198.18.0.10") {
					return next.Lookup(ctx, backend.DHCPRequest{MACAddress: mac2})
				}
				return next.Lookup(ctx, req)
			}),
			want: map[string]string{
				"by-ip": `198.18.0.10: by IP: 52:54:00:66:ea:9a: wrong answer: MACAddress = "52:54:00:66:ea:9b", want "52:54:00:66:ea:9a", IPAddress = "198.18.0.11", want "198.18.0.10"`,
			},
		},
		{
			name: "answers for another MAC",
			b: wrap(func(ctx context.Context, req backend.DHCPRequest, next backend.Backend) (backend.DHCP, backend.Netboot, error) {
				d, n, err := next.Lookup(ctx, req)
				if err == nil {
					d.MACAddress = slices.Clone(mac2)
				}
				return d, n, err
			}),
			want: map[string]string{
				"answers":    `52:54:00:66:ea:9a: wrong answer: MACAddress = "52:54:00:66:ea:9b", want "52:54:00:66:ea:9a"`,
				"concurrent": `MACAddress = "52:54:00:66:ea:9b"`,
				"by-ip":      `MACAddress = "52:54:00:66:ea:9b"`,
				"ownership":  `the next answer differs`,
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := backendtest.Config{Slack: 50 * time.Millisecond, Timeout: 2 * time.Second, Rounds: 3}
			err := c.TestBackend(tc.b, reservations()...)
			if err == nil {
				t.Fatal("TestBackend passed a broken backend")
			}
			got := map[string][]string{}
			for line := range strings.SplitSeq(err.Error(), "\n") {
				name, text, ok := strings.Cut(line, ": ")
				if ok && isCheck(name) {
					got[name] = append(got[name], text)
				}
			}
			if diff := cmp.Diff(sortedKeys(tc.want), sortedKeys(got)); diff != "" {
				t.Errorf("failing checks (-want +got):\n%s\nerror:\n%v", diff, err)
			}
			for name, text := range tc.want {
				if !slices.ContainsFunc(got[name], func(s string) bool { return strings.Contains(s, text) }) {
					t.Errorf("check %s: no line contains %q; got:\n%s", name, text, strings.Join(got[name], "\n"))
				}
			}
		})
	}
}

func isCheck(name string) bool {
	switch name {
	case "answers", "not-found", "cancel", "deadline", "concurrent", "ownership", "by-ip", "odd-requests", "wire":
		return true
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func TestInvalidConfig(t *testing.T) {
	good := newTable(reservations())
	tests := []struct {
		name string
		c    backendtest.Config
		b    backend.Backend
		rs   []backendtest.Reservation
		want string
	}{
		{"nil backend", backendtest.Config{}, nil, nil, "the backend is nil"},
		{"negative", backendtest.Config{Parallel: -1}, good, nil, "negative"},
		{"no MAC", backendtest.Config{}, good, []backendtest.Reservation{{}}, "reservation 0 has no MAC address"},
		{"twice", backendtest.Config{}, good, append(reservations(), reservations()[0]), "two reservations for 52:54:00:66:ea:9a"},
		{"unknown is reserved", backendtest.Config{Unknown: []net.HardwareAddr{mac2}}, good, reservations(), "52:54:00:66:ea:9b is both reserved and in Unknown"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.TestBackend(tc.b, tc.rs...)
			if !errors.Is(err, backend.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("TestBackend = %v, want an ErrInvalidConfig error containing %q", err, tc.want)
			}
		})
	}
}
