package cache

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.uber.org/goleak"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/backendtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func mac(i int) net.HardwareAddr { return net.HardwareAddr{0x52, 0x54, 0, 0, byte(i >> 8), byte(i)} }

func answer(i int) (backend.DHCP, backend.Netboot) {
	u := backend.URL(fmt.Sprintf("http://198.18.0.1:8080/%d.ipxe", i))
	return backend.DHCP{
		MACAddress:  mac(i),
		IPAddress:   netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}),
		SubnetMask:  backend.MaskFrom(24),
		NameServers: []netip.Addr{netip.MustParseAddr("198.18.0.2")},
		Hostname:    fmt.Sprintf("node-%d", i),
	}, backend.Netboot{AllowNetboot: true, IPXEScriptURL: u, OSIE: backend.OSIE{KernelParams: []string{"console=ttyS0"}}}
}

// fake is a backend whose answer for each lookup the test sets: known MACs
// (by the last byte) are answered while err is nil.
type fake struct {
	known map[string]bool
	err   atomic.Pointer[error] // when set, every lookup fails with it
	calls atomic.Int64
}

func newFake(known ...int) *fake {
	f := &fake{known: map[string]bool{}}
	for _, i := range known {
		f.known[mac(i).String()] = true
	}
	return f
}

func (f *fake) fail(err error) {
	if err == nil {
		f.err.Store(nil)
		return
	}
	f.err.Store(&err)
}

func (f *fake) Lookup(ctx context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
	f.calls.Add(1)
	if e := f.err.Load(); e != nil {
		return backend.DHCP{}, backend.Netboot{}, *e
	}
	if !f.known[req.MACAddress.String()] {
		return backend.DHCP{}, backend.Netboot{}, backend.ErrNotFound
	}
	d, n := answer(int(req.MACAddress[4])<<8 | int(req.MACAddress[5]))
	return d, n, nil
}

// clock is a settable time for the cache's ages.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newCache(t *testing.T, cfg Config) (*Backend, *clock) {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	c.now = clk.now
	return c, clk
}

func lookup(t *testing.T, b backend.Backend, i int) (backend.DHCP, backend.Netboot, error) {
	t.Helper()
	return b.Lookup(t.Context(), backend.DHCPRequest{MACAddress: mac(i)})
}

var equate = cmp.Options{cmpopts.EquateComparable(netip.Addr{}, backend.Mask{}), cmpopts.EquateErrors()}

func TestConfig(t *testing.T) {
	f := newFake()
	tests := []struct {
		name string
		cfg  Config
		want error
	}{
		{"zero but Backend", Config{Backend: f}, nil},
		{"disabled pieces", Config{Backend: f, MaxAge: -1, NegativeTTL: -1}, nil},
		{"no Backend", Config{}, backend.ErrInvalidConfig},
		{"negative MaxEntries", Config{Backend: f, MaxEntries: -1}, backend.ErrInvalidConfig},
		{"negative Reserve", Config{Backend: f, Reserve: -time.Millisecond}, backend.ErrInvalidConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if diff := cmp.Diff(tt.want, err, cmpopts.EquateErrors()); diff != "" {
				t.Errorf("New (-want +got):\n%s", diff)
			}
		})
	}
}

// TestStaleWhenUnavailable: every kind of "unavailable" serves the last
// answer without netboot; other failures pass through.
func TestStaleWhenUnavailable(t *testing.T) {
	tests := []struct {
		name  string
		err   error
		stale bool
	}{
		{"no responders", fmt.Errorf("nats: %w", backend.ErrNoBackend), true},
		{"timeout", fmt.Errorf("%w: %w", backend.ErrUnavailable, context.DeadlineExceeded), true},
		{"bare deadline", context.DeadlineExceeded, true},
		{"remote 503", &backend.RemoteError{Code: backend.CodeUnavailable, Message: "db down"}, true},
		{"connection closed", fmt.Errorf("%w: nats: connection closed", backend.ErrUnavailable), true},
		{"remote 500", &backend.RemoteError{Code: backend.CodeInternal, Message: "bug"}, false},
		{"remote 400", &backend.RemoteError{Code: backend.CodeBadRequest, Message: "bad"}, false},
		{"local failure", errors.New("boom"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(1)
			c, clk := newCache(t, Config{Backend: f})
			if _, _, err := lookup(t, c, 1); err != nil {
				t.Fatal(err)
			}
			clk.advance(time.Hour)
			f.fail(tt.err)
			d, n, err := lookup(t, c, 1)
			wantD, wantN := answer(1)
			wantN.AllowNetboot = false
			var want struct {
				D   backend.DHCP
				N   backend.Netboot
				Err error
			}
			if tt.stale {
				want.D, want.N = wantD, wantN
			} else {
				want.Err = tt.err
			}
			got := want
			got.D, got.N, got.Err = d, n, err
			if diff := cmp.Diff(want, got, equate); diff != "" {
				t.Errorf("lookup while failing (-want +got):\n%s", diff)
			}
			s := c.Stats()
			wantStats := Stats{Lookups: 2, Fresh: 1, Entries: 1}
			if tt.stale {
				wantStats.StaleServes, wantStats.Hits = 1, 1
			} else {
				wantStats.Errors = 1
			}
			if diff := cmp.Diff(wantStats, s); diff != "" {
				t.Errorf("Stats (-want +got):\n%s", diff)
			}
		})
	}
}

// TestStaleRules: age limit, disabled stale answers, unknown MACs, the
// caller's own cancellation, and a not-found forgetting the old answer.
func TestStaleRules(t *testing.T) {
	unavailable := fmt.Errorf("%w: test", backend.ErrUnavailable)
	t.Run("too old", func(t *testing.T) {
		f := newFake(1)
		c, clk := newCache(t, Config{Backend: f, MaxAge: time.Minute})
		lookup(t, c, 1)
		clk.advance(time.Minute)
		f.fail(unavailable)
		if _, _, err := lookup(t, c, 1); !errors.Is(err, backend.ErrUnavailable) {
			t.Errorf("answer older than MaxAge: error %v, want ErrUnavailable", err)
		}
		if s := c.Stats(); s.StaleMisses != 1 || s.StaleServes != 0 {
			t.Errorf("Stats = %+v, want 1 stale miss and no stale serve", s)
		}
	})
	t.Run("disabled", func(t *testing.T) {
		f := newFake(1)
		c, _ := newCache(t, Config{Backend: f, MaxAge: -1})
		lookup(t, c, 1)
		f.fail(unavailable)
		if _, _, err := lookup(t, c, 1); !errors.Is(err, backend.ErrUnavailable) {
			t.Errorf("MaxAge < 0: error %v, want ErrUnavailable", err)
		}
	})
	t.Run("never answered", func(t *testing.T) {
		f := newFake(1)
		c, _ := newCache(t, Config{Backend: f})
		f.fail(unavailable)
		if _, _, err := lookup(t, c, 1); !errors.Is(err, backend.ErrUnavailable) {
			t.Errorf("unknown MAC: error %v, want ErrUnavailable", err)
		}
	})
	t.Run("caller cancelled", func(t *testing.T) {
		f := newFake(1)
		c, _ := newCache(t, Config{Backend: f})
		lookup(t, c, 1)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		f.fail(fmt.Errorf("%w: %w", backend.ErrUnavailable, context.Canceled))
		if _, _, err := c.Lookup(ctx, backend.DHCPRequest{MACAddress: mac(1)}); err == nil {
			t.Error("a caller that gave up got a stale answer")
		}
	})
	t.Run("not found forgets", func(t *testing.T) {
		f := newFake(1)
		c, clk := newCache(t, Config{Backend: f})
		lookup(t, c, 1)
		delete(f.known, mac(1).String()) // the reservation is removed
		if _, _, err := lookup(t, c, 1); !errors.Is(err, backend.ErrNotFound) {
			t.Fatalf("removed reservation: %v", err)
		}
		clk.advance(time.Hour) // past the negative TTL
		f.fail(unavailable)
		if _, _, err := lookup(t, c, 1); !errors.Is(err, backend.ErrUnavailable) {
			t.Errorf("after a not-found, an outage served %v, want ErrUnavailable (never stale)", err)
		}
	})
}

func TestNegativeCache(t *testing.T) {
	f := newFake(1)
	c, clk := newCache(t, Config{Backend: f, NegativeTTL: 10 * time.Second})
	for range 5 {
		if _, _, err := lookup(t, c, 2); !errors.Is(err, backend.ErrNotFound) {
			t.Fatalf("unknown MAC: %v", err)
		}
	}
	if n := f.calls.Load(); n != 1 {
		t.Errorf("5 lookups of an unknown MAC within the TTL made %d backend calls, want 1", n)
	}
	clk.advance(10 * time.Second)
	f.known[mac(2).String()] = true // a new reservation is seen after the TTL
	if _, _, err := lookup(t, c, 2); err != nil {
		t.Errorf("after the TTL: %v, want the new reservation", err)
	}
	want := Stats{Lookups: 6, Fresh: 1, NotFound: 1, NegativeHits: 4, Hits: 4, Entries: 1}
	if diff := cmp.Diff(want, c.Stats()); diff != "" {
		t.Errorf("Stats (-want +got):\n%s", diff)
	}

	t.Run("disabled", func(t *testing.T) {
		f := newFake()
		c, _ := newCache(t, Config{Backend: f, NegativeTTL: -1})
		for range 3 {
			lookup(t, c, 2)
		}
		if n, e := f.calls.Load(), c.Stats().Entries; n != 3 || e != 0 {
			t.Errorf("NegativeTTL < 0: %d backend calls and %d entries, want 3 and 0", n, e)
		}
	})
}

// TestEviction: the cache never holds more than MaxEntries, and evicts the
// least recently used.
func TestEviction(t *testing.T) {
	f := newFake(1, 2, 3, 4, 5)
	c, _ := newCache(t, Config{Backend: f, MaxEntries: 3})
	for i := 1; i <= 3; i++ {
		lookup(t, c, i)
	}
	lookup(t, c, 1) // 1 is now the most recently used; 2 the least
	lookup(t, c, 4) // evicts 2
	lookup(t, c, 5) // evicts 3
	lookup(t, c, 6) // not found, remembered: evicts 1
	if s := c.Stats(); s.Entries != 3 || s.Evictions != 3 {
		t.Errorf("Stats = %+v, want 3 entries and 3 evictions", s)
	}
	f.fail(backend.ErrNoBackend)
	var served []int
	for i := 1; i <= 5; i++ {
		if _, _, err := lookup(t, c, i); err == nil {
			served = append(served, i)
		}
	}
	if diff := cmp.Diff([]int{4, 5}, served); diff != "" {
		t.Errorf("MACs served stale after eviction (-want +got):\n%s", diff)
	}

	t.Run("many", func(t *testing.T) {
		f := &fake{}
		all := backend.BackendFunc(func(ctx context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
			f.calls.Add(1)
			return backend.DHCP{IPAddress: netip.MustParseAddr("198.18.0.1")}, backend.Netboot{}, nil
		})
		c, _ := newCache(t, Config{Backend: all, MaxEntries: 100})
		for i := range 10_000 {
			lookup(t, c, i)
		}
		if s := c.Stats(); s.Entries != 100 || s.Evictions != 9_900 || len(c.entries) != 100 || c.lru.Len() != 100 {
			t.Errorf("after 10,000 MACs: %+v, map %d, list %d; want 100 entries, 9,900 evictions", s, len(c.entries), c.lru.Len())
		}
	})
}

// TestReserve: with an answer to fall back on, a backend that takes all the
// time it is given still leaves time to serve it before the caller's
// deadline; without one, the backend gets the caller's whole deadline.
func TestReserve(t *testing.T) {
	var innerDeadline atomic.Pointer[time.Time]
	hang := atomic.Bool{}
	b := backend.BackendFunc(func(ctx context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
		d, _ := ctx.Deadline()
		innerDeadline.Store(&d)
		if hang.Load() {
			<-ctx.Done() // honours its context, and nothing more
			return backend.DHCP{}, backend.Netboot{}, fmt.Errorf("%w: %w", backend.ErrUnavailable, ctx.Err())
		}
		return backend.DHCP{IPAddress: netip.MustParseAddr("198.18.0.1")}, backend.Netboot{AllowNetboot: true}, nil
	})
	c, err := New(Config{Backend: b, Reserve: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}

	// Unknown MAC: the whole deadline goes to the backend.
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	callerDeadline, _ := ctx.Deadline()
	if _, _, err := c.Lookup(ctx, backend.DHCPRequest{MACAddress: mac(1)}); err != nil {
		t.Fatal(err)
	}
	if got := *innerDeadline.Load(); !got.Equal(callerDeadline) {
		t.Errorf("first lookup: backend deadline %v before the caller's, want none", callerDeadline.Sub(got))
	}

	// Known MAC, hanging backend: the stale answer comes before the
	// caller's deadline.
	hang.Store(true)
	for range 5 {
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		deadline, _ := ctx.Deadline()
		d, n, err := c.Lookup(ctx, backend.DHCPRequest{MACAddress: mac(1)})
		returned := time.Now()
		cancel()
		if err != nil || d.IPAddress.String() != "198.18.0.1" || n.AllowNetboot {
			t.Fatalf("stale lookup = %v %+v %v, want 198.18.0.1 without netboot", d.IPAddress, n, err)
		}
		if got := *innerDeadline.Load(); deadline.Sub(got) != 20*time.Millisecond {
			t.Errorf("backend deadline %v before the caller's, want the 20ms reserve", deadline.Sub(got))
		}
		// The reserve makes the answer come before the deadline; a loaded
		// machine may wake us late, so the bound has generous slack.
		if over := returned.Sub(deadline); over > 100*time.Millisecond {
			t.Errorf("stale answer returned %v after the caller's deadline", over)
		}
	}
	if s := c.Stats(); s.StaleServes != 5 {
		t.Errorf("StaleServes = %d, want 5", s.StaleServes)
	}

	// A short deadline keeps most of itself for the backend: the reserve
	// is at most a quarter of the time left.
	ctx, cancel = context.WithTimeout(t.Context(), 40*time.Millisecond)
	defer cancel()
	deadline, _ := ctx.Deadline()
	c.Lookup(ctx, backend.DHCPRequest{MACAddress: mac(1)})
	if r := deadline.Sub(*innerDeadline.Load()); r > 10*time.Millisecond || r <= 0 {
		t.Errorf("40ms deadline: reserve %v, want (0, 10ms]", r)
	}
}

// TestOwnership: neither the caller's changes to an answer nor the wrapped
// backend's reuse of what it returned reach a later stale answer.
func TestOwnership(t *testing.T) {
	shared, sharedN := answer(1) // the backend returns the same slices every time (it must not, but)
	var down atomic.Bool
	b := backend.BackendFunc(func(context.Context, backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
		if down.Load() {
			return backend.DHCP{}, backend.Netboot{}, backend.ErrNoBackend
		}
		return shared, sharedN, nil
	})
	c, _ := newCache(t, Config{Backend: b})
	d, n, _ := lookup(t, c, 1)
	d.NameServers[0] = netip.MustParseAddr("203.0.113.1")
	d.MACAddress[0] = 0xff
	n.OSIE.KernelParams[0] = "evil"
	down.Store(true)
	got, gotN, err := lookup(t, c, 1)
	if err != nil {
		t.Fatal(err)
	}
	want, wantN := answer(1)
	wantN.AllowNetboot = false
	if diff := cmp.Diff(want, got, equate); diff != "" {
		t.Errorf("stale DHCP after the caller changed its copy (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantN, gotN); diff != "" {
		t.Errorf("stale Netboot (-want +got):\n%s", diff)
	}
}

// TestCloneCoversEveryField fills every field of DHCP and Netboot by
// reflection and checks that the clones share no memory with the
// original: a field added to the schema without a line in cloneDHCP or
// cloneNetboot fails here.
func TestCloneCoversEveryField(t *testing.T) {
	var d backend.DHCP
	var n backend.Netboot
	fill(reflect.ValueOf(&d).Elem())
	fill(reflect.ValueOf(&n).Elem())
	cd, cn := cloneDHCP(d), cloneNetboot(n)
	for _, p := range []struct {
		name      string
		orig, dup reflect.Value
	}{{"DHCP", reflect.ValueOf(d), reflect.ValueOf(cd)}, {"Netboot", reflect.ValueOf(n), reflect.ValueOf(cn)}} {
		for i := range p.orig.NumField() {
			f := p.orig.Type().Field(i)
			if shared(p.orig.Field(i), p.dup.Field(i)) {
				t.Errorf("%s.%s: the clone shares memory with the original; copy it in cache/cache.go", p.name, f.Name)
			}
		}
	}
}

// fill sets every settable field reachable from v to a non-zero value.
func fill(v reflect.Value) {
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i))
			}
		}
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 1, 1)
		fill(s.Index(0))
		v.Set(s)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		fill(p.Elem())
		v.Set(p)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(k)
		fill(e)
		m.SetMapIndex(k, e)
		v.Set(m)
	case reflect.String:
		v.SetString("x")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(1)
	}
}

// shared reports whether a and b (same type) point to the same memory
// anywhere in their exported structure.
func shared(a, b reflect.Value) bool {
	switch a.Kind() {
	case reflect.Slice:
		if a.Len() > 0 && b.Len() > 0 && a.Pointer() == b.Pointer() {
			return true
		}
		for i := range min(a.Len(), b.Len()) {
			if shared(a.Index(i), b.Index(i)) {
				return true
			}
		}
	case reflect.Pointer, reflect.Map:
		if !a.IsNil() && a.Pointer() == b.Pointer() {
			return true
		}
		if a.Kind() == reflect.Pointer && !a.IsNil() && !b.IsNil() {
			return shared(a.Elem(), b.Elem())
		}
	case reflect.Struct:
		for i := range a.NumField() {
			if a.Type().Field(i).IsExported() && shared(a.Field(i), b.Field(i)) {
				return true
			}
		}
	}
	return false
}

// TestConcurrent hammers one cache from many goroutines while the backend
// flips between up and down: run with -race.
func TestConcurrent(t *testing.T) {
	f := newFake(1, 2, 3, 4, 5, 6, 7, 8)
	c, err := New(Config{Backend: f, MaxEntries: 5})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				if g == 0 && i%50 == 0 {
					if i%100 == 0 {
						f.fail(backend.ErrNoBackend)
					} else {
						f.fail(nil)
					}
				}
				d, n, err := lookup(t, c, (g+i)%10)
				if err == nil && d.IPAddress.As4()[3] != byte((g+i)%10) {
					t.Errorf("MAC %d got %v", (g+i)%10, d.IPAddress)
				}
				_ = n
			}
		})
	}
	wg.Wait()
	if s := c.Stats(); s.Entries > 5 || s.Lookups != 4000 {
		t.Errorf("Stats = %+v, want ≤ 5 entries and 4000 lookups", s)
	}
}

// TestConformance: the cache keeps the backend contract (backendtest).
func TestConformance(t *testing.T) {
	f := newFake(1, 2)
	c, err := New(Config{Backend: f})
	if err != nil {
		t.Fatal(err)
	}
	var rs []backendtest.Reservation
	for _, i := range []int{1, 2} {
		d, n := answer(i)
		rs = append(rs, backendtest.Reservation{DHCP: d, Netboot: n})
	}
	backendtest.Run(t, c, rs...)
}
