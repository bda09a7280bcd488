//go:build linux

// Package netnstest builds throw-away Linux network namespaces for tests:
// two namespaces joined by a veth pair, addresses from 198.18.0.0/15 only,
// commands and Go code run inside a namespace, and everything removed by
// t.Cleanup, also when the test fails.
//
// Creating namespaces needs root. Call [Require] (or [testenv.Require] with
// [testenv.Netns] and the programs the test runs) first, before any setup:
// it skips the test when namespaces cannot be created, unless the
// environment variable BACKEND_REQUIRE_NETNS=1 is set (CI sets it), in
// which case it fails the test, so that a CI run never passes by silently
// skipping.
//
// Names are unique per process and call (process id + counter): namespaces
// are called "nt<pid>-<n>" and veth interfaces "nt<pid>a<n>" and
// "nt<pid>b<n>", at most 15 bytes as Linux requires.
package netnstest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/tinkerbell/backend/internal/testenv"
)

// EnvRequire is the environment variable that turns [Require]'s skip into a
// failure when set to "1"; it is [testenv.EnvRequire].
const EnvRequire = testenv.EnvRequire

// TestNet is the only address block this package hands out (RFC 2544
// benchmarking addresses, never routed on the Internet).
var TestNet = netip.MustParsePrefix("198.18.0.0/15")

var counter atomic.Uint32

func next() string {
	return strconv.Itoa(os.Getpid()) + "-" + strconv.FormatUint(uint64(counter.Add(1)), 10)
}

// Require skips tb unless this process can create network namespaces
// (root, the ip command, a working "ip netns add"). When [EnvRequire] is
// "1", it fails tb instead of skipping. It is testenv.Require(tb,
// testenv.Netns); tests that need more (udhcpc, python3) call
// [testenv.Require] with everything at once.
func Require(tb testing.TB) {
	tb.Helper()
	testenv.Require(tb, testenv.Netns)
}

// Namespace is a named network namespace created by [NewNamespace].
type Namespace struct {
	Name string // as shown by "ip netns list"
}

// NewNamespace creates a uniquely named network namespace with its loopback
// interface up, and deletes it when tb ends.
func NewNamespace(tb testing.TB) *Namespace {
	tb.Helper()
	ns := &Namespace{Name: "nt" + next()}
	run(tb, "ip", "netns", "add", ns.Name)
	tb.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns.Name).CombinedOutput(); err != nil {
			tb.Errorf("netnstest: ip netns del %s: %v: %s", ns.Name, err, bytes.TrimSpace(out))
		}
	})
	ns.Run(tb, "ip", "link", "set", "lo", "up")
	return ns
}

// Command returns a command that runs name with args inside ns (through
// "ip netns exec"). It is killed when ctx is done.
func (ns *Namespace) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Run runs name with args inside ns, fails tb if it does not succeed, and
// returns its standard output.
func (ns *Namespace) Run(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	return run(tb, "ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Do runs f inside ns and returns its error, or the error of entering ns.
//
// f runs on a goroutine of its own, locked to an OS thread that is moved
// into ns and never unlocked: the thread ends with the goroutine, so no
// other code ever runs in ns by accident. Sockets opened by f stay in ns
// and may be used from any goroutine after f returns. Goroutines that f
// starts run in the original namespace (Go starts new threads from a clean
// template thread); f may block as long as it likes (for example in a
// server's Serve method).
func (ns *Namespace) Do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // deliberately never unlocked; see above
		h, err := netns.GetFromName(ns.Name)
		if err != nil {
			errc <- fmt.Errorf("netnstest: open namespace %s: %w", ns.Name, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- fmt.Errorf("netnstest: enter namespace %s: %w", ns.Name, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// Interface returns the interface called name inside ns.
func (ns *Namespace) Interface(name string) (*net.Interface, error) {
	var ifi *net.Interface
	err := ns.Do(func() error {
		var err error
		ifi, err = net.InterfaceByName(name)
		return err
	})
	return ifi, err
}

// Link is one end of a veth pair.
type Link struct {
	NS           *Namespace
	Name         string           // interface name inside NS
	Index        int              // interface index inside NS
	HardwareAddr net.HardwareAddr // MAC address
	Addr         netip.Prefix     // address assigned to it; invalid when none
}

// Pair is two namespaces joined by a veth pair, both ends up.
type Pair struct {
	A, B Link
}

// PairConfig says which addresses to assign to the two ends of a [Pair].
// A zero prefix leaves that end without an address (a DHCP client before
// it has a lease). Addresses must lie in [TestNet].
type PairConfig struct {
	AddrA, AddrB netip.Prefix
}

// NewPair creates two namespaces joined by a veth pair, assigns the
// configured addresses, brings every link up and removes it all when tb
// ends.
func NewPair(tb testing.TB, cfg PairConfig) *Pair {
	tb.Helper()
	for _, p := range []netip.Prefix{cfg.AddrA, cfg.AddrB} {
		if p.IsValid() && !(TestNet.Contains(p.Addr()) && p.Bits() >= TestNet.Bits()) {
			tb.Fatalf("netnstest: address %v outside %v", p, TestNet)
		}
	}
	a, b := NewNamespace(tb), NewNamespace(tb)
	n := next()
	p := &Pair{
		A: Link{NS: a, Name: "nt" + replaceDash(n, 'a'), Addr: cfg.AddrA},
		B: Link{NS: b, Name: "nt" + replaceDash(n, 'b'), Addr: cfg.AddrB},
	}
	run(tb, "ip", "link", "add", "name", p.A.Name, "netns", a.Name, "type", "veth", "peer", "name", p.B.Name, "netns", b.Name)
	for _, l := range []*Link{&p.A, &p.B} {
		if l.Addr.IsValid() {
			l.NS.Run(tb, "ip", "addr", "add", l.Addr.String(), "dev", l.Name)
		}
		l.NS.Run(tb, "ip", "link", "set", l.Name, "up")
		ifi, err := l.NS.Interface(l.Name)
		if err != nil {
			tb.Fatalf("netnstest: %v", err)
		}
		l.Index, l.HardwareAddr = ifi.Index, ifi.HardwareAddr
	}
	return p
}

func replaceDash(s string, c byte) string {
	b := []byte(s)
	for i := range b {
		if b[i] == '-' {
			b[i] = c
		}
	}
	return string(b)
}

func run(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		tb.Fatalf("netnstest: %s %v: %v: %s", name, args, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.String()
}
