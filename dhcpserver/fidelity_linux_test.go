package dhcpserver

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/internal/netnstest"
	"github.com/tinkerbell/backend/internal/testenv"
)

// runUdhcpc runs busybox udhcpc in the client namespace of a pair whose
// other end a raw-mode server serves with be, and returns the environment
// its script saw when it bound.
func runUdhcpc(t *testing.T, be func(mac []byte) backend.Backend, args ...string) map[string]string {
	t.Helper()
	testenv.Require(t, testenv.Netns, "udhcpc")
	udhcpc := testenv.Command(t, "udhcpc")
	p := netnstest.NewPair(t, netnstest.PairConfig{AddrA: serverPrefix})
	serveRaw(t, p.A, be(p.B.HardwareAddr))
	dir := t.TempDir()
	out := filepath.Join(dir, "bound.env")
	script := filepath.Join(dir, "script.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n[ \"$1\" = bound ] || exit 0\nenv > \""+out+"\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := p.B.NS.Command(ctx, udhcpc[0], append(append(udhcpc[1:], "-i", p.B.Name, "-n", "-q", "-f", "-t", "5", "-T", "1", "-s", script), args...)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("udhcpc: %v\n%s", err, b)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatalf("udhcpc did not bind: %v", err)
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			env[k] = v
		}
	}
	return env
}

// TestUdhcpcFidelity runs busybox udhcpc (which accepts 576 bytes) against
// a reply that does not fit its options field: the search list keeps the
// spelling of every name (compression only of identical bytes), options
// 58 and 59 arrive, and so does everything the server moved into the file
// and sname fields (option overload).
func TestUdhcpcFidelity(t *testing.T) {
	search := []string{"Lab.Example.Test", "b.lab.example.test"}
	for i := range 15 {
		search = append(search, fmt.Sprintf("zone%02d.tld%02d", i, i)) // no common suffix: no compression
	}
	be := func([]byte) backend.Backend {
		d := reservation()
		d.DomainSearch = search
		return fixed(d, backend.Netboot{})
	}
	// The reply udhcpc gets needs the file field (checked without a
	// socket, on the same request as udhcpc's).
	s := newTestServer(t, testConfig(be(nil)))
	r, _ := s.handlePacket(t.Context(), newScratch(), request(macKnown, 1, withOpt(55, 1, 3, 6, 12, 15, 28, 42, 119)).ToBytes())
	if p := r.payload; len(p) < 243 || p[240] != 52 || p[242]&1 == 0 {
		t.Fatalf("the reply does not overload the file field; the test does not test overload")
	}

	env := runUdhcpc(t, be, "-O", "search", "-O", "58", "-O", "59")
	got := map[string]string{}
	for _, k := range []string{"ip", "subnet", "router", "dns", "hostname", "domain", "broadcast", "ntpsrv", "lease", "search", "opt58", "opt59", "boot_file"} {
		if v, ok := env[k]; ok {
			got[k] = strings.TrimSpace(v)
		}
	}
	want := map[string]string{
		"ip": "198.18.0.10", "subnet": "255.255.255.0", "router": "198.18.0.1", "dns": "198.18.0.2 198.18.0.3",
		"hostname": "node-1", "domain": "example.test", "broadcast": "198.18.0.255", "ntpsrv": "198.18.0.4",
		"lease": "3600", "search": strings.Join(search, " "),
		"opt58": "00000708", "opt59": "00000c4e", // 1800 and 3150 s
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("what udhcpc read (-want +got):\n%s", diff)
	}
}

// TestUdhcpcScriptURLVerbatim: an iPXE script URL with iPXE settings
// reaches a real client byte for byte. udhcpc plays an iPXE built for
// Tinkerbell: a PXE client (options 60, 93, 94) with user class
// "Tinkerbell".
func TestUdhcpcScriptURLVerbatim(t *testing.T) {
	const url = "http://198.18.0.1:7080/${mac:hexhyp}/auto.ipxe?uuid=${uuid}&x=%41"
	be := func([]byte) backend.Backend {
		return fixed(reservation(), backend.Netboot{AllowNetboot: true, IPXEScriptURL: url})
	}
	env := runUdhcpc(t, be, "-V", "PXEClient:Arch:00007:UNDI:003016",
		"-x", "0x5d:0007", "-x", "0x5e:010310", "-x", "0x4d:"+fmt.Sprintf("%x", "Tinkerbell"))
	if got := env["boot_file"]; got != url {
		t.Errorf("boot file %q, want %q", got, url)
	}
}

// TestRawProxy runs the server in proxy mode on a raw socket across a veth
// pair: a PXE client's broadcast DISCOVER gets a proxy OFFER (boot
// information, no address) on the wire, and a plain DHCP client gets
// nothing.
func TestRawProxy(t *testing.T) {
	netnstest.Require(t)
	p := netnstest.NewPair(t, netnstest.PairConfig{AddrA: serverPrefix})
	cfg := testConfig(fixed(reservation(), backend.Netboot{AllowNetboot: true, IPXEScriptURL: scriptURL}))
	cfg.Proxy = true
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	serveConn(t, s, openRaw(t, p.A))
	c := newNClient(t, p.B)

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	offer, err := c.DiscoverOffer(ctx, pxe("PXEClient", 7), withStrOpt(77, "Tinkerbell"), dhcpv4.WithBroadcast(true))
	if err != nil {
		t.Fatalf("PXE DISCOVER: %v (stats %+v)", err, s.Stats())
	}
	got := summarize(offer, Destination{})
	want := &summary{Type: "OFFER", Flags: 0x8000, Ciaddr: "0.0.0.0", Yiaddr: "0.0.0.0", Siaddr: "198.18.0.1", Giaddr: "0.0.0.0",
		Sname: "198.18.0.1", File: "http://198.18.0.1/auto.ipxe",
		Options: map[uint8]string{53: "OFFER", 54: "198.18.0.1", 60: "PXEClient", 97: "00" + strings.Repeat("00", 16), 43: "060108ff"}}
	if diff := cmp.Diff(want, got, equate); diff != "" {
		t.Errorf("proxy OFFER (-want +got):\n%s", diff)
	}

	// A client that is not a netboot client gets nothing.
	quiet := newNClientTimeout(t, p.B, 300*time.Millisecond, 2)
	if o, err := quiet.DiscoverOffer(ctx, dhcpv4.WithBroadcast(true)); err == nil {
		t.Errorf("a plain DHCP client got an offer: %v", o.Summary())
	}
	if n := s.Stats().Dropped[DropNotPXE]; n == 0 {
		t.Errorf("no not-pxe drops counted: %v", s.Stats().Dropped)
	}
}

func newNClientTimeout(t *testing.T, link netnstest.Link, timeout time.Duration, retries int) *nclient4.Client {
	t.Helper()
	var c *nclient4.Client
	if err := link.NS.Do(func() error {
		var err error
		c, err = nclient4.New(link.Name, nclient4.WithTimeout(timeout), nclient4.WithRetry(retries))
		return err
	}); err != nil {
		t.Fatalf("nclient4: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
