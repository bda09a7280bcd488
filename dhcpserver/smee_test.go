package dhcpserver

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/tinkerbell/backend"
)

// fixed is a Backend that answers every MAC address with d and n.
func fixed(d backend.DHCP, n backend.Netboot) backend.Backend {
	return backend.BackendFunc(func(_ context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
		d.MACAddress = req.MACAddress
		return d, n, nil
	})
}

var macPi = net.HardwareAddr{0xd8, 0x3a, 0xdd, 0x01, 0x02, 0x03}

// TestSmeeFields checks the fields of Tinkerbell's hardware model that the
// DHCP server honours: Disabled, VLANID (43.116), ClasslessStaticRoutes
// (121), TFTPServerName and BootFileName (66/67), IPXEBinary; and smee's
// netboot conventions: the architecture map, the MAC address in binary
// URLs, Raspberry Pi detection, option 7.
func TestSmeeFields(t *testing.T) {
	pxeFile := func(arch uint16) dhcpv4.Modifier { return pxe("PXEClient", arch) }
	allow := backend.Netboot{AllowNetboot: true, IPXEScriptURL: scriptURL}
	withD := func(f func(*backend.DHCP)) backend.DHCP { d := reservation(); f(&d); return d }
	routes := []backend.Route{
		{Destination: netip.MustParsePrefix("10.0.0.0/8"), Router: netip.MustParseAddr("198.18.0.1")},
		{Destination: netip.MustParsePrefix("172.16.0.0/12"), Router: netip.MustParseAddr("198.18.0.20")},
		{Destination: netip.MustParsePrefix("0.0.0.0/0"), Router: netip.MustParseAddr("198.18.0.1")},
	}
	tests := []struct {
		name string
		d    backend.DHCP
		n    backend.Netboot
		mac  net.HardwareAddr // nil = macKnown
		req  []dhcpv4.Modifier
		typ  dhcpv4.MessageType // 0 = DISCOVER
		cfg  func(*Config)
		want *summary // nil = silence
		drop DropReason
	}{
		{name: "disabled: silent", d: withD(func(d *backend.DHCP) { d.Disabled = true }), n: allow, drop: DropDisabled},
		{name: "disabled: silent to a request", d: withD(func(d *backend.DHCP) { d.Disabled = true }), n: allow,
			typ: dhcpv4.MessageTypeRequest, req: []dhcpv4.Modifier{withIPOpt(54, serverIP), withIPOpt(50, clientIP)}, drop: DropDisabled},
		{name: "disabled: silent to inform", d: withD(func(d *backend.DHCP) { d.Disabled = true }), n: allow,
			typ: dhcpv4.MessageTypeInform, req: []dhcpv4.Modifier{dhcpv4.WithClientIP(clientIP.AsSlice())}, drop: DropDisabled},

		{name: "classless static routes, option 3 kept", d: withD(func(d *backend.DHCP) { d.ClasslessStaticRoutes = routes }),
			want: offer(toClient, 121, "080ac6120001"+"0cac10c6120014"+"00c6120001")},
		{name: "syslog server", cfg: func(c *Config) { c.SyslogServer = netip.MustParseAddr("198.18.0.9") }, d: reservation(),
			want: offer(toClient, 7, "c6120009")},

		{name: "vlan in option 43.116", d: withD(func(d *backend.DHCP) { d.VLANID = "42" }), n: allow, req: []dhcpv4.Modifier{bcast, pxeFile(0)},
			want: netbootOffer("undionly.kpxe", 43, "060108"+"74023432"+"ff")},
		{name: "vlan not sent without netboot", d: withD(func(d *backend.DHCP) { d.VLANID = "42" }), n: allow,
			want: offer(toClient)},

		{name: "66/67 replace the netboot logic", d: withD(func(d *backend.DHCP) { d.TFTPServerName, d.BootFileName = "198.18.0.5", "pxelinux.0" }),
			n: allow, req: []dhcpv4.Modifier{bcast, pxeFile(7)},
			want: set(offer(toBroadcast, 66, "3139382e31382e302e35", 67, "pxelinux.0"), func(s *summary) {
				s.Flags, s.File, s.Siaddr = 0x8000, "pxelinux.0", "198.18.0.5"
			})},
		{name: "66/67 for a client that is not a netboot client", d: withD(func(d *backend.DHCP) { d.TFTPServerName, d.BootFileName = "tftp.lab.example", "boot/grubx64.efi" }),
			n:    allow,
			want: set(offer(toClient, 66, "746674702e6c61622e6578616d706c65", 67, "boot/grubx64.efi"), func(s *summary) { s.File = "boot/grubx64.efi" })},
		{name: "66/67 not sent when netboot is not allowed", d: withD(func(d *backend.DHCP) { d.TFTPServerName, d.BootFileName = "198.18.0.5", "pxelinux.0" }),
			want: offer(toClient)},

		{name: "IPXEBinary overrides the map", n: backend.Netboot{AllowNetboot: true, IPXEBinary: "snp-x86_64.efi"}, d: reservation(),
			req: []dhcpv4.Modifier{bcast, pxeFile(7)}, want: netbootOffer("snp-x86_64.efi")},
		{name: "IPXEBinary for an architecture without a binary", n: backend.Netboot{AllowNetboot: true, IPXEBinary: "snp-x86_64.efi"}, d: reservation(),
			req: []dhcpv4.Modifier{bcast, pxeFile(99)}, want: netbootOffer("snp-x86_64.efi")},
		{name: "IPXEBinary in the http url", n: backend.Netboot{AllowNetboot: true, IPXEBinary: "ipxe-custom.efi"}, d: reservation(),
			req:  []dhcpv4.Modifier{bcast, pxe("HTTPClient", 16)},
			want: netbootOffer("http://198.18.0.1:8080/ipxe/52:54:00:66:ea:9a/ipxe-custom.efi", 60, "HTTPClient")},

		{name: "script URL verbatim", n: backend.Netboot{AllowNetboot: true, IPXEScriptURL: "http://198.18.0.1/${mac:hexhyp}/auto.ipxe?u=${uuid}"}, d: reservation(),
			req:  []dhcpv4.Modifier{bcast, pxeFile(7), withStrOpt(77, "Tinkerbell")},
			want: netbootOffer("http://198.18.0.1/${mac:hexhyp}/auto.ipxe?u=${uuid}", 175, "b00101")},

		{name: "configured script URL verbatim", n: backend.Netboot{AllowNetboot: true}, d: reservation(),
			cfg:  func(c *Config) { c.Netboot.IPXEScriptURL = "http://${next-server}/${mac}.ipxe" },
			req:  []dhcpv4.Modifier{bcast, pxeFile(7), withStrOpt(77, "Tinkerbell")},
			want: netbootOffer("http://${next-server}/${mac}.ipxe", 175, "b00101")},
		{name: "mac format dot", n: allow, d: reservation(), cfg: func(c *Config) { c.Netboot.MACFormat = MACDot },
			req:  []dhcpv4.Modifier{bcast, pxe("HTTPClient", 16)},
			want: netbootOffer("http://198.18.0.1:8080/ipxe/5254.0066.ea9a/ipxe.efi", 60, "HTTPClient")},
		{name: "mac format dash", n: allow, d: reservation(), cfg: func(c *Config) { c.Netboot.MACFormat = MACDash },
			req:  []dhcpv4.Modifier{bcast, pxe("HTTPClient", 16)},
			want: netbootOffer("http://198.18.0.1:8080/ipxe/52-54-00-66-ea-9a/ipxe.efi", 60, "HTTPClient")},
		{name: "mac format no delimiter", n: allow, d: reservation(), cfg: func(c *Config) { c.Netboot.MACFormat = MACNoDelimiter },
			req:  []dhcpv4.Modifier{bcast, pxe("HTTPClient", 16)},
			want: netbootOffer("http://198.18.0.1:8080/ipxe/52540066ea9a/ipxe.efi", 60, "HTTPClient")},
		{name: "mac format empty", n: allow, d: reservation(), cfg: func(c *Config) { c.Netboot.MACFormat = MACEmpty },
			req:  []dhcpv4.Modifier{bcast, pxe("HTTPClient", 16)},
			want: netbootOffer("http://198.18.0.1:8080/ipxe/ipxe.efi", 60, "HTTPClient")},

		{name: "raspberry pi by MAC prefix: arm binary and option 43.9/10", n: allow, d: reservation(), mac: macPi,
			req: []dhcpv4.Modifier{bcast, pxeFile(0)},
			want: set(netbootOffer("snp-arm64.efi", 43, "060108"+"0914"+hex.EncodeToString([]byte("\x00\x00\x11Raspberry Pi Boot"))+"0a04"+"00505845"+"ff"),
				func(s *summary) { s.Dest.Addr = toBroadcast.Addr })},
	}
	for arch, bin := range map[uint16]string{1: "undionly.kpxe", 2: "undionly.kpxe", 3: "undionly.kpxe", 4: "undionly.kpxe", 5: "undionly.kpxe",
		8: "ipxe.efi", 10: "snp-arm64.efi", 18: "snp-arm64.efi", 20: "undionly.kpxe"} {
		tests = append(tests, struct {
			name string
			d    backend.DHCP
			n    backend.Netboot
			mac  net.HardwareAddr
			req  []dhcpv4.Modifier
			typ  dhcpv4.MessageType
			cfg  func(*Config)
			want *summary
			drop DropReason
		}{name: fmt.Sprintf("arch %d", arch), d: reservation(), n: allow, req: []dhcpv4.Modifier{bcast, pxeFile(arch)}, want: netbootOffer(bin)})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(fixed(tt.d, tt.n))
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			s := newTestServer(t, cfg)
			mac, typ := tt.mac, tt.typ
			if mac == nil {
				mac = macKnown
			}
			if typ == 0 {
				typ = dhcpv4.MessageTypeDiscover
			}
			req := request(mac, typ, tt.req...)
			reply, dst := s.Handle(t.Context(), req)
			got := summarize(reply, dst)
			if tt.want == nil {
				if got != nil {
					t.Fatalf("reply %+v, want silence", got)
				}
				if n := s.Stats().Dropped[tt.drop]; n != 1 {
					t.Errorf("Stats().Dropped[%q] = %d, want 1 (all: %v)", tt.drop, n, s.Stats().Dropped)
				}
				return
			}
			if typ == dhcpv4.MessageTypeRequest {
				tt.want.Type, tt.want.Options[53] = "ACK", "ACK"
			}
			if diff := cmpDiff(tt.want, got); diff != "" {
				t.Errorf("reply (-want +got):\n%s", diff)
			}
		})
	}
}

// TestFit checks how a reply that does not fit the client's limit is
// built: option overload (RFC 2132 §9.3) first, then the least important
// options left out, and every option that still fits kept.
func TestFit(t *testing.T) {
	zones := func(n int) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf("zone%02d.tld%02d", i, i)) // no common suffix: no compression
		}
		return out
	}
	udhcpc := withOpt(55, 1, 3, 6, 12, 15, 28, 42, 119) // no 58/59, as busybox asks
	tests := []struct {
		name     string
		d        backend.DHCP
		n        backend.Netboot
		req      []dhcpv4.Modifier
		overload byte   // option 52 expected on the wire; 0 = none
		absent   []byte // options left out
	}{
		{name: "fits: no overload", d: reservation()},
		{name: "119 in the options field, small options in the file field", d: withSearch(zones(17)), req: []dhcpv4.Modifier{udhcpc}, overload: 1},
		{name: "boot file set: only sname carries options", d: withSearch(zones(17)), n: backend.Netboot{AllowNetboot: true},
			req: []dhcpv4.Modifier{udhcpc, pxe("PXEClient", 0)}, overload: 2},
		{name: "119 too large for anything: left out, 58 and 59 kept", d: withSearch(zones(30)), req: []dhcpv4.Modifier{udhcpc}, absent: []byte{119}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, testConfig(fixed(tt.d, tt.n)))
			req := request(macKnown, dhcpv4.MessageTypeDiscover, tt.req...)
			r, _ := s.handlePacket(t.Context(), newScratch(), req.ToBytes())
			if r.payload == nil {
				t.Fatalf("no reply: %v", r.drop)
			}
			if len(r.payload) > 576-28 {
				t.Errorf("reply of %d bytes, over 548", len(r.payload))
			}
			p, err := dhcpv4.FromBytes(r.payload)
			if err != nil {
				t.Fatal(err)
			}
			var got byte
			if v := p.Options[52]; len(v) == 1 {
				got = v[0]
			}
			if got != tt.overload {
				t.Errorf("option 52 = %d, want %d", got, tt.overload)
			}
			unoverload(p, r.payload)
			want := []byte{1, 3, 6, 12, 15, 28, 42, 51, 53, 54, 58, 59, 119}
			for _, code := range want {
				_, ok := p.Options[code]
				if ok == slices.Contains(tt.absent, code) {
					t.Errorf("option %d present = %v", code, ok)
				}
			}
			if !slices.Contains(tt.absent, 119) {
				if got := decodeOpt(119, p.Options[119]); got != strings.Join(tt.d.DomainSearch, ",") {
					t.Errorf("option 119 = %s", got)
				}
			}
		})
	}
}

func withSearch(s []string) backend.DHCP {
	d := reservation()
	d.DomainSearch = s
	return d
}

// TestProxy checks proxyDHCP mode: boot information only, for netboot
// clients only.
func TestProxy(t *testing.T) {
	pxeFile := func(arch uint16) dhcpv4.Modifier { return pxe("PXEClient", arch) }
	uuid := "00" + strings.Repeat("00", 16)
	proxyReply := func(typ, file string, kv ...any) *summary {
		opts := map[uint8]string{53: typ, 54: "198.18.0.1", 60: "PXEClient", 97: uuid, 43: "060108ff"}
		return &summary{Type: typ, Flags: 0x8000, Ciaddr: "0.0.0.0", Yiaddr: "0.0.0.0", Siaddr: "198.18.0.1", Giaddr: "0.0.0.0",
			Sname: "198.18.0.1", File: file, Options: with(opts, kv...), Dest: toBroadcast}
	}
	allow := backend.Netboot{AllowNetboot: true, IPXEScriptURL: scriptURL}
	tests := []struct {
		name string
		d    backend.DHCP
		n    backend.Netboot
		mac  net.HardwareAddr // nil = macKnown
		typ  dhcpv4.MessageType
		req  []dhcpv4.Modifier
		cfg  func(*Config)
		want *summary
		drop DropReason
	}{
		{name: "pxe bios discover", d: reservation(), n: allow, req: []dhcpv4.Modifier{bcast, pxeFile(0)},
			want: proxyReply("OFFER", "undionly.kpxe")},
		{name: "pxe request gets an ack", d: reservation(), n: allow, typ: dhcpv4.MessageTypeRequest,
			req:  []dhcpv4.Modifier{bcast, pxeFile(7), withIPOpt(54, otherIP), withIPOpt(50, clientIP)},
			want: proxyReply("ACK", "ipxe.efi")},
		{name: "no broadcast flag: still broadcast, no yiaddr to send to", d: reservation(), n: allow, req: []dhcpv4.Modifier{pxeFile(0)},
			want: set(proxyReply("OFFER", "undionly.kpxe"), func(s *summary) { s.Flags = 0 })},
		{name: "uefi http boot", d: reservation(), n: allow, req: []dhcpv4.Modifier{bcast, pxe("HTTPClient", 16)},
			want: proxyReply("OFFER", "http://198.18.0.1:8080/ipxe/52:54:00:66:ea:9a/ipxe.efi", 60, "HTTPClient")},
		{name: "tinkerbell ipxe gets the reservation's script, no 175", d: reservation(), n: allow,
			req:  []dhcpv4.Modifier{bcast, pxeFile(7), withStrOpt(77, "Tinkerbell")},
			want: proxyReply("OFFER", "http://198.18.0.1/auto.ipxe")},
		{name: "no uuid: none echoed", d: reservation(), n: allow, req: []dhcpv4.Modifier{bcast, pxeFile(0), dhcpv4.WithoutOption(dhcpv4.OptionClientMachineIdentifier)},
			want: proxyReply("OFFER", "undionly.kpxe", 97, "")},
		{name: "not allowed: the mac's not-allowed file", d: reservation(), n: backend.Netboot{}, req: []dhcpv4.Modifier{bcast, pxeFile(0)},
			want: proxyReply("OFFER", "/52:54:00:66:ea:9a/netboot-not-allowed")},
		{name: "relayed", d: reservation(), n: allow, req: []dhcpv4.Modifier{pxeFile(0), dhcpv4.WithRelay(relayIP.AsSlice())},
			want: set(proxyReply("OFFER", "undionly.kpxe"), func(s *summary) { s.Flags, s.Giaddr, s.Dest = 0, "198.18.5.1", toRelay })},
		{name: "vlan and raspberry pi in 43", d: withVLAN("7"), n: allow, mac: macPi, req: []dhcpv4.Modifier{bcast, pxeFile(0)},
			want: proxyReply("OFFER", "snp-arm64.efi", 43, "060108"+"0914"+hex.EncodeToString([]byte("\x00\x00\x11Raspberry Pi Boot"))+"0a0400505845"+"740137"+"ff")},

		{name: "not a netboot client: nothing", d: reservation(), n: allow, req: []dhcpv4.Modifier{bcast}, drop: DropNotPXE},
		{name: "unknown architecture: nothing", d: reservation(), n: allow, req: []dhcpv4.Modifier{bcast, pxeFile(99)}, drop: DropNotPXE},
		{name: "no url for the boot method: nothing", d: reservation(), n: allow, req: []dhcpv4.Modifier{bcast, pxe("HTTPClient", 16)},
			cfg: func(c *Config) { c.Netboot.HTTPBaseURL = nil }, drop: DropNotPXE},
		{name: "disabled: nothing", d: withDisabled(), n: allow, req: []dhcpv4.Modifier{bcast, pxeFile(0)}, drop: DropDisabled},
		{name: "inform: nothing", d: reservation(), n: allow, typ: dhcpv4.MessageTypeInform, req: []dhcpv4.Modifier{pxeFile(0)}, drop: DropNoReply},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(fixed(tt.d, tt.n))
			cfg.Proxy = true
			cfg.SyslogServer = netip.MustParseAddr("198.18.0.9") // not sent in proxy mode
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			s := newTestServer(t, cfg)
			mac, typ := tt.mac, tt.typ
			if mac == nil {
				mac = macKnown
			}
			if typ == 0 {
				typ = dhcpv4.MessageTypeDiscover
			}
			reply, dst := s.Handle(t.Context(), request(mac, typ, tt.req...))
			got := summarize(reply, dst)
			if tt.want == nil {
				if got != nil {
					t.Fatalf("reply %+v, want silence", got)
				}
				if n := s.Stats().Dropped[tt.drop]; n != 1 {
					t.Errorf("Stats().Dropped[%q] = %d, want 1 (all: %v)", tt.drop, n, s.Stats().Dropped)
				}
				return
			}
			if diff := cmpDiff(tt.want, got); diff != "" {
				t.Errorf("reply (-want +got):\n%s", diff)
			}
		})
	}
	// A backend that does not know the client: nothing.
	s := newTestServer(t, Config{Backend: newMemBackend(), ServerAddr: serverIP, Proxy: true})
	if reply, _ := s.Handle(t.Context(), request(macNone, dhcpv4.MessageTypeDiscover, pxeFile(0))); reply != nil || s.Stats().Dropped[DropNotFound] != 1 {
		t.Errorf("unknown client: reply %v, drops %v", reply, s.Stats().Dropped)
	}
}

func withVLAN(v string) backend.DHCP { d := reservation(); d.VLANID = v; return d }

func withDisabled() backend.DHCP { d := reservation(); d.Disabled = true; return d }

func TestSmeeConfig(t *testing.T) {
	for name, mod := range map[string]func(*Config){
		"script URL not absolute": func(c *Config) { c.Netboot.IPXEScriptURL = "/auto.ipxe" },
		"script URL scheme":       func(c *Config) { c.Netboot.IPXEScriptURL = "ftp://198.18.0.1/auto.ipxe" },
		"unknown MAC format":      func(c *Config) { c.Netboot.MACFormat = "upper" },
		"syslog server IPv6":      func(c *Config) { c.SyslogServer = netip.IPv6Loopback() },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig(newMemBackend())
			mod(&cfg)
			if _, err := New(cfg); !errors.Is(err, backend.ErrInvalidConfig) {
				t.Errorf("New: %v, want ErrInvalidConfig", err)
			}
		})
	}
}
