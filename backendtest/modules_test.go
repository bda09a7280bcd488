package backendtest_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/backendtest"
	"github.com/tinkerbell/backend/cache"
	"github.com/tinkerbell/backend/hostsfile"
)

// TestModuleBackends: the backends of this module pass the kit.
func TestModuleBackends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hosts.yaml")
	if err := os.WriteFile(path, []byte(`hosts:
  "52:54:00:66:ea:9a":
    IPAddress: 198.18.0.10
    SubnetMask: 255.255.255.0
    DefaultGateway: 198.18.0.1
    NameServers: [198.18.0.2]
    Hostname: node-1
    LeaseTime: 3600
    DomainSearch: [lab.example]
    AllowNetboot: true
    IPXEScriptURL: http://198.18.0.1:8080/auto.ipxe?mac=${net0/mac}
  "52:54:00:66:ea:9b":
    IPAddress: 198.18.0.11
`), 0o644); err != nil {
		t.Fatal(err)
	}
	hosts, err := hostsfile.New(hostsfile.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	want := []backendtest.Reservation{
		{
			DHCP: backend.DHCP{
				MACAddress: mac1, IPAddress: netip.MustParseAddr("198.18.0.10"), SubnetMask: backend.MaskFrom(24),
				DefaultGateway: netip.MustParseAddr("198.18.0.1"), NameServers: []netip.Addr{netip.MustParseAddr("198.18.0.2")},
				Hostname: "node-1", DomainSearch: []string{"lab.example"}, LeaseTime: 3600,
			},
			Netboot: backend.Netboot{AllowNetboot: true, IPXEScriptURL: "http://198.18.0.1:8080/auto.ipxe?mac=${net0/mac}"},
		},
		{DHCP: backend.DHCP{MACAddress: mac2, IPAddress: netip.MustParseAddr("198.18.0.11")}},
	}
	t.Run("hostsfile", func(t *testing.T) { backendtest.Run(t, hosts, want...) })

	cached, err := cache.New(cache.Config{Backend: hosts})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("cache", func(t *testing.T) { backendtest.Run(t, cached, want...) })
}
