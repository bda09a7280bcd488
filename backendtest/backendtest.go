package backendtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/internal/wire"
)

// Reservation is what a backend should answer for one MAC address:
// DHCP.MACAddress, which is required, and the rest of the answer.
type Reservation struct {
	DHCP    backend.DHCP
	Netboot backend.Netboot
}

// Defaults of [Config].
const (
	DefaultParallel = 8
	DefaultRounds   = 25
	DefaultTimeout  = 5 * time.Second
	DefaultSlack    = time.Second
)

// DefaultUnknown are the MAC addresses that [Config.Unknown] defaults to:
// addresses of the range RFC 7042 reserves for documentation, which no
// real machine has.
var DefaultUnknown = []net.HardwareAddr{
	{0x00, 0x00, 0x5e, 0x00, 0x53, 0x00},
	{0x00, 0x00, 0x5e, 0x00, 0x53, 0x01},
	{0x00, 0x00, 0x5e, 0x00, 0x53, 0xff},
}

// Config tunes the checks. The zero value is ready to use: every zero field
// takes the default its comment names.
type Config struct {
	// Unknown are MAC addresses the backend holds no reservation for;
	// default [DefaultUnknown]. None may be the MAC address of a
	// reservation.
	Unknown []net.HardwareAddr

	// Parallel is the number of goroutines that look up at once in the
	// concurrency check; default [DefaultParallel].
	Parallel int

	// Rounds is the number of lookups of every reservation and unknown MAC
	// address each of those goroutines makes; default [DefaultRounds].
	Rounds int

	// Timeout is the deadline of the context of each lookup whose answer
	// is checked; default [DefaultTimeout].
	Timeout time.Duration

	// Slack is how long Lookup may take to return once its context is
	// done; default [DefaultSlack]. Raise it for a backend that must finish
	// a network round trip before it can notice.
	Slack time.Duration
}

// TestBackend checks b against the contract of [backend.Backend], given the
// reservations it holds, with the zero [Config]. It returns nil when b
// passes, otherwise an error listing every problem, one per line, each
// starting with the name of the check.
func TestBackend(b backend.Backend, reservations ...Reservation) error {
	var c Config
	return c.TestBackend(b, reservations...)
}

// Run runs the checks of [TestBackend] as subtests of t, one per check,
// with the zero [Config].
func Run(t *testing.T, b backend.Backend, reservations ...Reservation) {
	t.Helper()
	var c Config
	c.Run(t, b, reservations...)
}

// TestBackend is [TestBackend] with the settings of c. An invalid c or
// invalid reservations are reported as an error wrapping
// [backend.ErrInvalidConfig].
func (c *Config) TestBackend(b backend.Backend, reservations ...Reservation) error {
	k, err := c.checker(b, reservations)
	if err != nil {
		return err
	}
	var errs []error
	for _, ch := range checks {
		for _, p := range ch.run(k) {
			errs = append(errs, fmt.Errorf("%s: %s", ch.name, p))
		}
	}
	return errors.Join(errs...)
}

// Run is [Run] with the settings of c.
func (c *Config) Run(t *testing.T, b backend.Backend, reservations ...Reservation) {
	t.Helper()
	k, err := c.checker(b, reservations)
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range checks {
		t.Run(ch.name, func(t *testing.T) {
			for _, p := range ch.run(k) {
				t.Error(p)
			}
		})
	}
}

// checks are run in this order.
var checks = []struct {
	name string
	run  func(*checker) []string
}{
	{"answers", (*checker).answers},
	{"not-found", (*checker).notFound},
	{"cancel", (*checker).cancel},
	{"deadline", (*checker).deadline},
	{"concurrent", (*checker).concurrent},
	{"ownership", (*checker).ownership},
	{"by-ip", (*checker).byIP},
	{"odd-requests", (*checker).oddRequests},
	{"wire", (*checker).wire},
}

// checker holds a validated configuration.
type checker struct {
	b        backend.Backend
	res      []Reservation
	unknown  []net.HardwareAddr
	parallel int
	rounds   int
	timeout  time.Duration
	slack    time.Duration
}

func (c *Config) checker(b backend.Backend, reservations []Reservation) (*checker, error) {
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("%w: backendtest: "+format, append([]any{backend.ErrInvalidConfig}, args...)...)
	}
	if b == nil {
		return nil, invalid("the backend is nil")
	}
	k := &checker{
		b: b, unknown: c.Unknown,
		parallel: c.Parallel, rounds: c.Rounds, timeout: c.Timeout, slack: c.Slack,
	}
	if k.parallel < 0 || k.rounds < 0 || k.timeout < 0 || k.slack < 0 {
		return nil, invalid("negative Parallel, Rounds, Timeout or Slack")
	}
	if k.unknown == nil {
		k.unknown = DefaultUnknown
	}
	if k.parallel == 0 {
		k.parallel = DefaultParallel
	}
	if k.rounds == 0 {
		k.rounds = DefaultRounds
	}
	if k.timeout == 0 {
		k.timeout = DefaultTimeout
	}
	if k.slack == 0 {
		k.slack = DefaultSlack
	}
	seen := map[string]bool{}
	for i, r := range reservations {
		// Our own copy: a backend that returns the caller's slices must
		// not change what the checks expect when they scribble on them.
		k.res = append(k.res, clone(r))
		if len(r.DHCP.MACAddress) == 0 {
			return nil, invalid("reservation %d has no MAC address", i)
		}
		mac := r.DHCP.MACAddress.String()
		if seen[mac] {
			return nil, invalid("two reservations for %s", mac)
		}
		seen[mac] = true
	}
	for _, u := range k.unknown {
		if len(u) == 0 {
			return nil, invalid("an empty MAC address in Unknown")
		}
		if seen[u.String()] {
			return nil, invalid("%s is both reserved and in Unknown", u)
		}
	}
	return k, nil
}

// result is what one Lookup returned.
type result struct {
	d     backend.DHCP
	n     backend.Netboot
	err   error
	panic string // the recovered value and stack, if Lookup panicked
}

// call runs one Lookup in its own goroutine and waits until it returns, or
// until ctx is done and the slack has passed; ok is false then. Every ctx
// given to call has a deadline.
func (k *checker) call(ctx context.Context, req backend.DHCPRequest) (r result, ok bool) {
	ch := make(chan result, 1) // a hung Lookup's goroutine exits once it returns
	go func() {
		var r result
		defer func() {
			if v := recover(); v != nil {
				r = result{panic: fmt.Sprintf("%v\n%s", v, debug.Stack())}
			}
			ch <- r
		}()
		r.d, r.n, r.err = k.b.Lookup(ctx, req)
	}()
	select {
	case r := <-ch:
		return r, true
	case <-ctx.Done():
	}
	t := time.NewTimer(k.slack)
	defer t.Stop()
	select {
	case r := <-ch:
		return r, true
	case <-t.C:
		return result{}, false
	}
}

// lookup is call with a fresh context of k.timeout, reporting a panic or a
// hang as a problem.
func (k *checker) lookup(mac net.HardwareAddr) (result, string) {
	ctx, cancel := context.WithTimeout(context.Background(), k.timeout)
	defer cancel()
	r, ok := k.call(ctx, backend.DHCPRequest{MACAddress: slices.Clone(mac)})
	switch {
	case !ok:
		return r, fmt.Sprintf("%s: Lookup did not return within %v of its context's deadline (%v)", mac, k.slack, k.timeout)
	case r.panic != "":
		return r, fmt.Sprintf("%s: Lookup panicked: %s", mac, r.panic)
	}
	return r, ""
}

// compare returns what differs between the answer r and the reservation
// want, or "".
func compare(want Reservation, r result) string {
	mac := want.DHCP.MACAddress
	if r.err != nil {
		return fmt.Sprintf("%s: Lookup returned an error: %v (the responder would answer %d)", mac, r.err, backend.CodeOf(r.err))
	}
	got := backend.Message{DHCP: r.d, Netboot: r.n}
	if len(got.MACAddress) == 0 {
		got.MACAddress = mac
	}
	return diff(backend.Message{DHCP: want.DHCP, Netboot: want.Netboot}, got, mac.String())
}

// diff compares two messages field by field in their canonical wire form,
// the terms in which backend authors and other languages see them.
func diff(want, got backend.Message, mac string) string {
	w, g := fields(&want), fields(&got)
	var out []string
	for _, key := range keyOrder(&want) {
		if !bytes.Equal(w[key], g[key]) {
			out = append(out, fmt.Sprintf("%s = %s, want %s", key, g[key], w[key]))
		}
	}
	if out == nil {
		return ""
	}
	return mac + ": wrong answer: " + strings.Join(out, ", ")
}

func fields(m *backend.Message) map[string]json.RawMessage {
	var f map[string]json.RawMessage
	_ = json.Unmarshal(m.AppendJSON(nil), &f) // the canonical form is an object
	return f
}

// keyOrder returns the keys of the canonical form of m in their order.
func keyOrder(m *backend.Message) []string {
	d := json.NewDecoder(bytes.NewReader(m.AppendJSON(nil)))
	var keys []string
	_, _ = d.Token() // {
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			break
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		_ = d.Decode(&skip)
	}
	return keys
}

func (k *checker) answers() []string {
	var out []string
	for _, want := range k.res {
		r, p := k.lookup(want.DHCP.MACAddress)
		if p == "" {
			p = compare(want, r)
		}
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

// notFoundProblem reports an outcome for an unknown MAC address other than
// an error matching backend.ErrNotFound.
func notFoundProblem(mac net.HardwareAddr, r result) string {
	switch {
	case r.err == nil:
		return fmt.Sprintf("%s: answered an unknown MAC address (IPAddress %v); want an error matching backend.ErrNotFound", mac, r.d.IPAddress)
	case !errors.Is(r.err, backend.ErrNotFound):
		return fmt.Sprintf("%s: Lookup returned %q, which does not match backend.ErrNotFound (the responder would answer %d, and the DHCP server log a failure)",
			mac, r.err, backend.CodeOf(r.err))
	}
	return ""
}

func (k *checker) notFound() []string {
	var out []string
	for _, mac := range k.unknown {
		r, p := k.lookup(mac)
		if p == "" {
			p = notFoundProblem(mac, r)
		}
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

// probe is the MAC address the context checks look up: a reservation's,
// when there is one, since a backend does its real work for those.
func (k *checker) probe() net.HardwareAddr {
	if len(k.res) > 0 {
		return k.res[0].DHCP.MACAddress
	}
	return k.unknown[0]
}

// contextProblem reports a Lookup that ran with a context that is done and
// did not return in time, panicked, or returned an error that does not
// match the context's error.
func (k *checker) contextProblem(what string, ctx context.Context, r result, ok bool) string {
	mac := k.probe()
	switch {
	case !ok:
		return fmt.Sprintf("%s: with %s, Lookup did not return within %v after the context was done", mac, what, k.slack)
	case r.panic != "":
		return fmt.Sprintf("%s: with %s, Lookup panicked: %s", mac, what, r.panic)
	case r.err == nil, errors.Is(r.err, backend.ErrNotFound):
		return "" // answered before it noticed: fine
	case errors.Is(r.err, ctx.Err()), errors.Is(r.err, backend.ErrUnavailable):
		return ""
	}
	return fmt.Sprintf("%s: with %s, Lookup returned %q, which wraps neither %v nor backend.ErrUnavailable (the responder would answer %d, not %d)",
		mac, what, r.err, ctx.Err(), backend.CodeOf(r.err), backend.CodeUnavailable)
}

func (k *checker) cancel() []string {
	var out []string
	ctx, cancel := context.WithTimeout(context.Background(), k.timeout)
	cancel()
	r, ok := k.call(ctx, backend.DHCPRequest{MACAddress: slices.Clone(k.probe())})
	if p := k.contextProblem("a cancelled context", ctx, r, ok); p != "" {
		out = append(out, p)
	}

	ctx, cancel = context.WithTimeout(context.Background(), k.timeout)
	stop := time.AfterFunc(time.Millisecond, cancel)
	defer stop.Stop()
	r, ok = k.call(ctx, backend.DHCPRequest{MACAddress: slices.Clone(k.probe())})
	cancel()
	if p := k.contextProblem("a context cancelled during the call", ctx, r, ok); p != "" {
		out = append(out, p)
	}
	return out
}

func (k *checker) deadline() []string {
	var out []string
	for _, d := range []time.Duration{0, 5 * time.Millisecond} {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		r, ok := k.call(ctx, backend.DHCPRequest{MACAddress: slices.Clone(k.probe())})
		cancel()
		what := "a deadline that has passed"
		if d > 0 {
			what = fmt.Sprintf("a deadline %v away", d)
		}
		if p := k.contextProblem(what, ctx, r, ok); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// maxConcurrentProblems bounds the problems the concurrency check reports.
const maxConcurrentProblems = 5

func (k *checker) concurrent() []string {
	var (
		mu      sync.Mutex
		out     []string
		dropped int
		wg      sync.WaitGroup
	)
	report := func(p string) {
		mu.Lock()
		defer mu.Unlock()
		if len(out) < maxConcurrentProblems {
			out = append(out, p)
		} else {
			dropped++
		}
	}
	for g := range k.parallel {
		wg.Go(func() {
			for i := range k.rounds {
				n := len(k.res) + len(k.unknown)
				for step := range n {
					// Each goroutine walks the MAC addresses from a
					// different start, so that different ones overlap.
					j := (step + g + i) % n
					if j < len(k.res) {
						want := k.res[j]
						r, p := k.lookup(want.DHCP.MACAddress)
						if p == "" {
							p = compare(want, r)
						}
						if p != "" {
							report(p)
							return
						}
						continue
					}
					mac := k.unknown[j-len(k.res)]
					r, p := k.lookup(mac)
					if p == "" {
						p = notFoundProblem(mac, r)
					}
					if p != "" {
						report(p)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if dropped > 0 {
		out = append(out, fmt.Sprintf("and %d more problems", dropped))
	}
	for i := range out {
		out[i] = fmt.Sprintf("with %d goroutines: %s", k.parallel, out[i])
	}
	return out
}

func (k *checker) ownership() []string {
	var out []string
	for _, want := range k.res {
		mac := want.DHCP.MACAddress
		req := backend.DHCPRequest{MACAddress: slices.Clone(mac), Traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
		ctx, cancel := context.WithTimeout(context.Background(), k.timeout)
		r, ok := k.call(ctx, req)
		cancel()
		if !ok || r.panic != "" || r.err != nil {
			continue // reported by the answers check
		}
		if !bytes.Equal(req.MACAddress, mac) || req.Traceparent != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" {
			out = append(out, fmt.Sprintf("%s: Lookup modified the request (now %s, %q)", mac, req.MACAddress, req.Traceparent))
		}
		// The caller owns the answer: scribble over everything it points
		// to, then ask again.
		scribble(&r.d, &r.n)
		r2, p := k.lookup(mac)
		if p == "" {
			p = compare(want, r2)
		}
		if p != "" {
			out = append(out, fmt.Sprintf("%s: after the caller modified the slices and URL of an answer, the next answer differs: Lookup must return copies, not its own data: %s", mac, p))
		}
	}
	return out
}

func clone(r Reservation) Reservation {
	r.DHCP.MACAddress = slices.Clone(r.DHCP.MACAddress)
	r.DHCP.NameServers = slices.Clone(r.DHCP.NameServers)
	r.DHCP.NTPServers = slices.Clone(r.DHCP.NTPServers)
	r.DHCP.DomainSearch = slices.Clone(r.DHCP.DomainSearch)
	r.DHCP.ClasslessStaticRoutes = slices.Clone(r.DHCP.ClasslessStaticRoutes)
	r.Netboot.OSIE.KernelParams = slices.Clone(r.Netboot.OSIE.KernelParams)
	return r
}

// scribble modifies everything an answer points to.
func scribble(d *backend.DHCP, n *backend.Netboot) {
	for i := range d.MACAddress {
		d.MACAddress[i] ^= 0xff
	}
	for i := range d.NameServers {
		d.NameServers[i] = d.NameServers[i].Next()
	}
	for i := range d.NTPServers {
		d.NTPServers[i] = d.NTPServers[i].Next()
	}
	for i := range d.DomainSearch {
		d.DomainSearch[i] = "x" + d.DomainSearch[i]
	}
	for i := range d.ClasslessStaticRoutes {
		d.ClasslessStaticRoutes[i].Router = d.ClasslessStaticRoutes[i].Router.Next()
	}
	for i := range n.OSIE.KernelParams {
		n.OSIE.KernelParams[i] = "x" + n.OSIE.KernelParams[i]
	}
}

// unknownIP is an address no reservation has: TEST-NET-1 (RFC 5737).
var unknownIP = netip.MustParseAddr("192.0.2.1")

// byIP looks up every reservation by its IP address: a backend answers
// with that reservation, or says it cannot answer by IP (an error matching
// backend.ErrNotFound or backend.ErrInvalidMessage); never another machine.
func (k *checker) byIP() []string {
	var out []string
	ask := func(ip netip.Addr) (result, string) {
		ctx, cancel := context.WithTimeout(context.Background(), k.timeout)
		defer cancel()
		r, ok := k.call(ctx, backend.DHCPRequest{IPAddress: ip})
		switch {
		case !ok:
			return r, fmt.Sprintf("%s: Lookup by IP did not return within %v of its context's deadline (%v)", ip, k.slack, k.timeout)
		case r.panic != "":
			return r, fmt.Sprintf("%s: Lookup by IP panicked: %s", ip, r.panic)
		case r.err != nil && !errors.Is(r.err, backend.ErrNotFound) && !errors.Is(r.err, backend.ErrInvalidMessage):
			return r, fmt.Sprintf("%s: Lookup by IP returned %q; want an answer, or an error matching backend.ErrNotFound or backend.ErrInvalidMessage (the responder would answer %d)",
				ip, r.err, backend.CodeOf(r.err))
		}
		return r, ""
	}
	for _, want := range k.res {
		ip := want.DHCP.IPAddress
		if !ip.IsValid() {
			continue
		}
		r, p := ask(ip)
		switch {
		case p != "":
		case r.err != nil:
			// Cannot answer by IP: allowed.
		case len(r.d.MACAddress) == 0:
			p = fmt.Sprintf("%s: the answer by IP names no MACAddress: the DHCP server cannot tell which machine it is", ip)
		default:
			if p = compare(want, r); p != "" {
				p = fmt.Sprintf("%s: by IP: %s", ip, p)
			}
		}
		if p != "" {
			out = append(out, p)
		}
	}
	r, p := ask(unknownIP)
	if p == "" && r.err == nil {
		p = fmt.Sprintf("%s: answered an address no reservation has (MACAddress %s); want an error matching backend.ErrNotFound", unknownIP, r.d.MACAddress)
	}
	if p != "" {
		out = append(out, p)
	}
	return out
}

// oddRequests are requests a backend may not expect.
var oddRequests = []struct {
	name   string
	req    backend.DHCPRequest
	noMAC  bool // must not be answered with a reservation
	repeat bool
}{
	{name: "no MAC address", req: backend.DHCPRequest{}, noMAC: true},
	{name: "an empty MAC address", req: backend.DHCPRequest{MACAddress: net.HardwareAddr{}}, noMAC: true},
	{name: "an 8-byte hardware address", req: backend.DHCPRequest{MACAddress: net.HardwareAddr{0x02, 0, 0x5e, 0x10, 0, 0, 0, 1}}},
	{name: "a 20-byte hardware address", req: backend.DHCPRequest{MACAddress: make(net.HardwareAddr, 20)}},
	{name: "the broadcast address", req: backend.DHCPRequest{MACAddress: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}},
	{name: "the zero address", req: backend.DHCPRequest{MACAddress: make(net.HardwareAddr, 6)}},
	{name: "a malformed traceparent", req: backend.DHCPRequest{MACAddress: DefaultUnknown[0], Traceparent: "00-not-a-trace-context\x00\xff"}},
}

func (k *checker) oddRequests() []string {
	var out []string
	for _, tc := range oddRequests {
		req := tc.req
		req.MACAddress = slices.Clone(req.MACAddress)
		ctx, cancel := context.WithTimeout(context.Background(), k.timeout)
		r, ok := k.call(ctx, req)
		cancel()
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("with %s, Lookup did not return within %v of its context's deadline (%v)", tc.name, k.slack, k.timeout))
		case r.panic != "":
			out = append(out, fmt.Sprintf("with %s, Lookup panicked: %s", tc.name, r.panic))
		case r.err == nil && tc.noMAC:
			out = append(out, fmt.Sprintf("with %s, Lookup answered with a reservation (IPAddress %v); want an error", tc.name, r.d.IPAddress))
		case r.err == nil && len(r.d.MACAddress) != 0 && !bytes.Equal(r.d.MACAddress, tc.req.MACAddress):
			out = append(out, fmt.Sprintf("with %s, Lookup answered for another MAC address, %s", tc.name, r.d.MACAddress))
		}
	}
	return out
}

func (k *checker) wire() []string {
	var (
		out []string
		ids wire.IDs
	)
	for _, want := range k.res {
		mac := want.DHCP.MACAddress
		r, p := k.lookup(mac)
		if p != "" || r.err != nil {
			continue // reported by the answers check
		}
		m := backend.Message{DHCP: r.d, Netboot: r.n}
		if len(m.MACAddress) == 0 {
			m.MACAddress = mac
		}
		if err := m.Validate(); err != nil {
			out = append(out, fmt.Sprintf("%s: the answer cannot be sent (the responder would answer 500): %v", mac, err))
			continue
		}
		a := wire.Attrs{Source: "/backendtest", Type: backend.ResponseEventType}
		ev := wire.AppendResponse(nil, &a, &ids, &m)
		if len(ev) > backend.MaxEventSize {
			out = append(out, fmt.Sprintf("%s: the answer's event has %d bytes, over the limit of %d (the responder would answer 500)", mac, len(ev), backend.MaxEventSize))
			continue
		}
		_, back, err := wire.DecodeResponse(ev)
		if err != nil {
			out = append(out, fmt.Sprintf("%s: the answer's event does not decode: %v", mac, err))
			continue
		}
		if p := diff(m, back, mac.String()); p != "" {
			out = append(out, strings.Replace(p, "wrong answer", "changed by a round trip through the wire form", 1))
		}
		if m.IPXEScriptURL != back.IPXEScriptURL {
			out = append(out, fmt.Sprintf("%s: IPXEScriptURL %q does not survive the wire form", mac, m.IPXEScriptURL))
		}
	}
	return out
}
