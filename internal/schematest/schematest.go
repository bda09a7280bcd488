// Package schematest holds what tests of the wire schema share: go-cmp
// options for the schema types and a fully populated response.
package schematest

import (
	"net"
	"net/netip"
	"net/url"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/tinkerbell/backend"
)

// CmpOpts compares schema values: netip.Addr, netip.Prefix and backend.Mask with ==,
// URLs by their text.
var CmpOpts = cmp.Options{
	cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{}, backend.Mask{}),
	cmp.Comparer(func(a, b *url.URL) bool {
		if a == nil || b == nil {
			return a == b
		}
		return a.String() == b.String()
	}),
}

// MustMAC parses a MAC address or panics.
func MustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// MustURL parses a URL or panics.
func MustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

// FullMessage is the value of testdata/response/full.json: every field set.
func FullMessage() backend.Message {
	a := netip.MustParseAddr
	return backend.Message{
		DHCP: backend.DHCP{
			MACAddress:       MustMAC("52:54:00:66:ea:9a"),
			IPAddress:        a("198.18.0.10"),
			SubnetMask:       backend.MaskFrom(24),
			DefaultGateway:   a("198.18.0.1"),
			NameServers:      []netip.Addr{a("198.18.0.2"), a("198.18.0.3")},
			Hostname:         "node-1",
			DomainName:       "example.test",
			BroadcastAddress: a("198.18.0.255"),
			NTPServers:       []netip.Addr{a("198.18.0.4")},
			LeaseTime:        86400,
			DomainSearch:     []string{"example.test", "lab.example.test"},
		},
		Netboot: backend.Netboot{AllowNetboot: true, IPXEScriptURL: "http://198.18.0.1:8080/auto.ipxe"},
	}
}

// Golden compares got with the golden file at path or, when update is set,
// rewrites the file with got.
func Golden(t testing.TB, path string, got []byte, update bool) {
	t.Helper()
	if update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
	}
}
