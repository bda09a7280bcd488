package netnstest

import (
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func namespaces(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatalf("ip netns list: %v", err)
	}
	return string(out)
}

func TestPair(t *testing.T) {
	Require(t)
	var names []string
	t.Run("build", func(t *testing.T) {
		p := NewPair(t, PairConfig{
			AddrA: netip.MustParsePrefix("198.18.7.1/24"),
			AddrB: netip.MustParsePrefix("198.18.7.2/24"),
		})
		names = []string{p.A.NS.Name, p.B.NS.Name}
		if p.A.NS.Name == p.B.NS.Name || p.A.Name == p.B.Name {
			t.Fatalf("names not unique: %+v", p)
		}
		for _, l := range []Link{p.A, p.B} {
			if len(l.Name) > 15 {
				t.Errorf("interface name %q longer than 15 bytes", l.Name)
			}
			if len(l.HardwareAddr) != 6 || l.Index == 0 {
				t.Errorf("link %s: MAC %v, index %d", l.Name, l.HardwareAddr, l.Index)
			}
			if !strings.Contains(namespaces(t), l.NS.Name) {
				t.Errorf("namespace %s not listed", l.NS.Name)
			}
		}
		// The interfaces live in their namespaces, not here.
		if _, err := net.InterfaceByName(p.A.Name); err == nil {
			t.Errorf("interface %s visible in the test's own namespace", p.A.Name)
		}
		if out := p.B.NS.Run(t, "ip", "-o", "-4", "addr", "show", "dev", p.B.Name); !strings.Contains(out, "198.18.7.2/24") {
			t.Errorf("address of B: %q", out)
		}

		// Go code in B receives a datagram that a socket in A sends.
		var conn *net.UDPConn
		if err := p.B.NS.Do(func() error {
			var err error
			conn, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("198.18.7.2:0")))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		dst := conn.LocalAddr().(*net.UDPAddr).AddrPort()
		if err := p.A.NS.Do(func() error {
			c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(dst))
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte("hello"))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 16)
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if got := string(buf[:n]); got != "hello" || from.Addr() != netip.MustParseAddr("198.18.7.1") {
			t.Errorf("got %q from %v, want \"hello\" from 198.18.7.1", got, from)
		}
	})
	// Cleanup ran when the subtest ended.
	list := namespaces(t)
	for _, n := range names {
		if strings.Contains(list, n) {
			t.Errorf("namespace %s still exists after the test", n)
		}
	}
}

func TestCommand(t *testing.T) {
	Require(t)
	ns := NewNamespace(t)
	out, err := ns.Command(t.Context(), "ip", "-o", "link", "show").Output()
	if err != nil {
		t.Fatal(err)
	}
	// A fresh namespace has only its loopback interface, which is up.
	if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); len(lines) != 1 || !strings.Contains(lines[0], "lo:") || !strings.Contains(lines[0], "UP") {
		t.Errorf("links in a new namespace: %q", out)
	}
}

func TestDoError(t *testing.T) {
	ns := &Namespace{Name: "nt-does-not-exist"}
	called := false
	err := ns.Do(func() error { called = true; return nil })
	if err == nil || called {
		t.Errorf("Do in a missing namespace: err %v, f called %v", err, called)
	}
}

func TestUniqueNames(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		n := next()
		if seen[n] {
			t.Fatalf("duplicate name %q", n)
		}
		seen[n] = true
	}
}
