package dhcpserver

import (
	"bytes"
	"context"
	"maps"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"go.opentelemetry.io/otel/trace"
)

// with returns a copy of m with the changes kv (code, value; "" deletes).
func with(m map[uint8]string, kv ...any) map[uint8]string {
	out := maps.Clone(m)
	for i := 0; i < len(kv); i += 2 {
		code := uint8(kv[i].(int))
		if v := kv[i+1].(string); v == "" {
			delete(out, code)
		} else {
			out[code] = v
		}
	}
	return out
}

var baseOptions = map[uint8]string{
	53: "OFFER", 54: "198.18.0.1", 51: "3600", 58: "1800", 59: "3150",
	1: "255.255.255.0", 3: "198.18.0.1", 6: "198.18.0.2,198.18.0.3",
	12: "node-1", 15: "example.test", 28: "198.18.0.255", 42: "198.18.0.4",
	119: "example.test,lab.example.test",
}

var (
	toClient    = Destination{Addr: netip.MustParseAddrPort("198.18.0.10:68"), Link: LinkClient}
	toBroadcast = Destination{Addr: netip.MustParseAddrPort("255.255.255.255:68"), Link: LinkBroadcast}
	toCiaddr    = Destination{Addr: netip.MustParseAddrPort("198.18.0.10:68"), Link: LinkSource}
	toRelay     = Destination{Addr: netip.MustParseAddrPort("198.18.5.1:67"), Link: LinkSource}
	relayIP     = netip.MustParseAddr("198.18.5.1")
	otherIP     = netip.MustParseAddr("198.18.0.99")
	traceID     = trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36}
	spanID      = trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7}
)

func offer(dst Destination, kv ...any) *summary {
	return &summary{Type: "OFFER", Ciaddr: "0.0.0.0", Yiaddr: "198.18.0.10", Siaddr: "0.0.0.0", Giaddr: "0.0.0.0",
		Options: with(baseOptions, kv...), Dest: dst}
}

func ack(dst Destination, kv ...any) *summary {
	s := offer(dst, append([]any{53, "ACK"}, kv...)...)
	s.Type = "ACK"
	return s
}

func nak(dst Destination) *summary {
	return &summary{Type: "NAK", Ciaddr: "0.0.0.0", Yiaddr: "0.0.0.0", Siaddr: "0.0.0.0", Giaddr: "0.0.0.0",
		Options: map[uint8]string{53: "NAK", 54: "198.18.0.1"}, Dest: dst}
}

func netbootOffer(file string, kv ...any) *summary {
	s := offer(toBroadcast, append([]any{43, "060108ff"}, kv...)...)
	s.Flags, s.File, s.Siaddr = 0x8000, file, "198.18.0.1"
	return s
}

func set[T any](p *T, f func(*T)) *T { f(p); return p }

var bcast = dhcpv4.WithBroadcast(true)

func TestHandle(t *testing.T) {
	pxeFile := func(arch uint16) dhcpv4.Modifier { return pxe("PXEClient", arch) }
	tests := []struct {
		name string
		req  *dhcpv4.DHCPv4
		ctx  context.Context // nil = t.Context()
		cfg  func(*Config)
		want *summary // nil = silence
		drop DropReason
	}{
		// DISCOVER and reply addressing.
		{name: "discover broadcast flag", req: request(macKnown, dhcpv4.MessageTypeDiscover, bcast),
			want: set(offer(toBroadcast), func(s *summary) { s.Flags = 0x8000 })},
		{name: "discover unicast to yiaddr at chaddr", req: request(macKnown, dhcpv4.MessageTypeDiscover),
			want: offer(toClient)},
		{name: "discover relayed, option 82 echoed", req: request(macKnown, dhcpv4.MessageTypeDiscover,
			dhcpv4.WithRelay(relayIP.AsSlice()), withOpt(82, 1, 4, 'e', 't', 'h', '0', 2, 2, 0xab, 0xcd)),
			want: set(offer(toRelay, 82, "0104657468300202abcd"), func(s *summary) { s.Giaddr = "198.18.5.1" })},
		{name: "discover with client identifier echoed", req: request(macKnown, dhcpv4.MessageTypeDiscover, withOpt(61, 1, 0x52, 0x54, 0, 0x66, 0xea, 0x9a)),
			want: offer(toClient, 61, "0152540066ea9a")},
		{name: "zero lease gets the default and T1/T2 from it", req: request(macLease0, dhcpv4.MessageTypeDiscover),
			want: set(offer(toClient, 51, "86400", 58, "43200", 59, "75600"), func(s *summary) {
				s.Dest.Addr = netip.AddrPortFrom(clientIP, 68)
			})},
		{name: "configured default lease", req: request(macLease0, dhcpv4.MessageTypeDiscover),
			cfg:  func(c *Config) { c.DefaultLeaseTime = 2 * time.Hour },
			want: offer(toClient, 51, "7200", 58, "3600", 59, "6300")},

		// REQUEST in each state of RFC 2131 §4.3.2.
		{name: "request selecting ours", req: request(macKnown, dhcpv4.MessageTypeRequest,
			withIPOpt(54, serverIP), withIPOpt(50, clientIP)),
			want: ack(toClient)},
		{name: "request selecting another server", req: request(macKnown, dhcpv4.MessageTypeRequest,
			withIPOpt(54, otherIP), withIPOpt(50, clientIP)), drop: DropOtherServer},
		{name: "request selecting wrong address", req: request(macKnown, dhcpv4.MessageTypeRequest,
			withIPOpt(54, serverIP), withIPOpt(50, otherIP)), want: nak(toBroadcast)},
		{name: "request init-reboot right address", req: request(macKnown, dhcpv4.MessageTypeRequest, withIPOpt(50, clientIP), bcast),
			want: set(ack(toBroadcast), func(s *summary) { s.Flags = 0x8000 })},
		{name: "request init-reboot wrong address", req: request(macKnown, dhcpv4.MessageTypeRequest, withIPOpt(50, otherIP)),
			want: nak(toBroadcast)},
		{name: "request renewing right ciaddr", req: request(macKnown, dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(clientIP.AsSlice())),
			want: set(ack(toCiaddr), func(s *summary) { s.Ciaddr = "198.18.0.10" })},
		{name: "request rebinding wrong ciaddr", req: request(macKnown, dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(otherIP.AsSlice())),
			want: nak(toBroadcast)},
		{name: "request relayed wrong address: NAK to relay with broadcast bit", req: request(macKnown, dhcpv4.MessageTypeRequest,
			withIPOpt(50, otherIP), dhcpv4.WithRelay(relayIP.AsSlice())),
			want: set(nak(toRelay), func(s *summary) { s.Flags, s.Giaddr = 0x8000, "198.18.5.1" })},
		{name: "request in no state", req: request(macKnown, dhcpv4.MessageTypeRequest), drop: DropNoReply},

		// Other message types.
		{name: "inform: configuration, no yiaddr, no lease", req: request(macKnown, dhcpv4.MessageTypeInform, dhcpv4.WithClientIP(clientIP.AsSlice())),
			want: set(ack(toCiaddr, 51, "", 58, "", 59, ""), func(s *summary) { s.Yiaddr, s.Ciaddr = "0.0.0.0", "198.18.0.10" })},
		{name: "release", req: request(macKnown, dhcpv4.MessageTypeRelease, dhcpv4.WithClientIP(clientIP.AsSlice())), drop: DropNoReply},
		{name: "decline", req: request(macKnown, dhcpv4.MessageTypeDecline, withIPOpt(50, clientIP)), drop: DropNoReply},
		{name: "release to another server", req: request(macKnown, dhcpv4.MessageTypeRelease, dhcpv4.WithClientIP(clientIP.AsSlice()), withIPOpt(54, otherIP)), drop: DropOtherServer},
		{name: "decline to another server: not our conflict", req: request(macKnown, dhcpv4.MessageTypeDecline, withIPOpt(50, clientIP), withIPOpt(54, otherIP)), drop: DropOtherServer},
		{name: "offer from a client", req: request(macKnown, dhcpv4.MessageTypeOffer), drop: DropMessageType},
		{name: "no message type", req: request(macKnown, dhcpv4.MessageTypeDiscover, dhcpv4.WithoutOption(dhcpv4.OptionDHCPMessageType)), drop: DropMessageType},
		{name: "bootreply", req: request(macKnown, dhcpv4.MessageTypeDiscover, func(d *dhcpv4.DHCPv4) { d.OpCode = dhcpv4.OpcodeBootReply }), drop: DropNotRequest},
		{name: "not ethernet", req: request(macKnown, dhcpv4.MessageTypeDiscover, func(d *dhcpv4.DHCPv4) { d.HWType = 6 }), drop: DropHardware},
		{name: "short hardware address", req: request(macKnown[:4], dhcpv4.MessageTypeDiscover), drop: DropHardware},

		// The Backend.
		{name: "not found: silent", req: request(macNone, dhcpv4.MessageTypeDiscover), drop: DropNotFound},
		{name: "backend error: silent", req: request(macError, dhcpv4.MessageTypeDiscover), drop: DropBackend},
		{name: "backend timeout: silent", req: request(macSlow, dhcpv4.MessageTypeDiscover),
			cfg: func(c *Config) { c.LookupTimeout = 50 * time.Millisecond }, drop: DropBackend},

		// Netboot.
		{name: "pxe bios", req: request(macKnown, dhcpv4.MessageTypeDiscover, bcast, pxeFile(0)),
			want: netbootOffer("undionly.kpxe")},
		{name: "pxe x86-64 uefi", req: request(macKnown, dhcpv4.MessageTypeDiscover, bcast, pxeFile(7)),
			want: netbootOffer("ipxe.efi")},
		{name: "pxe arm64 uefi", req: request(macKnown, dhcpv4.MessageTypeDiscover, bcast, pxeFile(11)),
			want: netbootOffer("snp-arm64.efi")},
		{name: "pxe binary map override", req: request(macKnown, dhcpv4.MessageTypeDiscover, bcast, pxeFile(11)),
			cfg:  func(c *Config) { c.Netboot.Binaries = map[iana.Arch]string{11: "custom-arm.efi"} },
			want: netbootOffer("custom-arm.efi")},
		{name: "pxe next-server configured", req: request(macKnown, dhcpv4.MessageTypeDiscover, bcast, pxeFile(0)),
			cfg:  func(c *Config) { c.Netboot.NextServer = netip.MustParseAddr("198.18.0.7") },
			want: set(netbootOffer("undionly.kpxe"), func(s *summary) { s.Siaddr = "198.18.0.7" })},
		{name: "stock ipxe gets the binary by tftp", req: request(macKnown, dhcpv4.MessageTypeDiscover, bcast, pxeFile(7), withStrOpt(77, "iPXE")),
			cfg:  func(c *Config) { c.Netboot.TFTPBaseURL = mustURL("tftp://198.18.0.1:69") },
			want: netbootOffer("tftp://198.18.0.1:69/52:54:00:66:ea:9a/ipxe.efi", 175, "b00101")},
		{name: "stock ipxe gets the binary by http without tftp", req: request(macKnown, dhcpv4.MessageTypeDiscover, bcast, pxeFile(7), withStrOpt(77, "iPXE")),
			want: netbootOffer("http://198.18.0.1:8080/ipxe/52:54:00:66:ea:9a/ipxe.efi", 175, "b00101")},
		{name: "ipxe recognised by option 175", req: request(macKnown, dhcpv4.MessageTypeDiscover, bcast, pxeFile(7), withOpt(175, 19, 1, 1)),
			want: netbootOffer("http://198.18.0.1:8080/ipxe/52:54:00:66:ea:9a/ipxe.efi", 175, "b00101")},
		{name: "tinkerbell user class gets the script", req: request(macKnown, dhcpv4.MessageTypeDiscover, bcast, pxeFile(7), withStrOpt(77, "Tinkerbell")),
			want: netbootOffer("http://198.18.0.1/auto.ipxe", 175, "b00101")},
		{name: "user class in RFC 3004 form", req: request(macKnown, dhcpv4.MessageTypeDiscover, bcast, pxeFile(7), withOpt(77, append([]byte{10}, "Tinkerbell"...)...)),
			want: netbootOffer("http://198.18.0.1/auto.ipxe", 175, "b00101")},
		{name: "custom user class configured", req: request(macKnown, dhcpv4.MessageTypeDiscover, bcast, pxeFile(7), withStrOpt(77, "Lab")),
			cfg:  func(c *Config) { c.Netboot.UserClass = "Lab" },
			want: netbootOffer("http://198.18.0.1/auto.ipxe", 175, "b00101")},
		{name: "script from the config when the backend has none", req: request(macNoURL, dhcpv4.MessageTypeDiscover, bcast, pxeFile(7), withStrOpt(77, "Tinkerbell")),
			cfg:  func(c *Config) { c.Netboot.IPXEScriptURL = "http://198.18.0.1/default.ipxe" },
			want: netbootOffer("http://198.18.0.1/default.ipxe", 175, "b00101")},
		{name: "no script anywhere: no boot file", req: request(macNoURL, dhcpv4.MessageTypeDiscover, bcast, pxeFile(7), withStrOpt(77, "Tinkerbell")),
			want: set(offer(toBroadcast), func(s *summary) { s.Flags = 0x8000 })},
		{name: "uefi http boot", req: request(macKnown, dhcpv4.MessageTypeDiscover, bcast, pxe("HTTPClient", 16)),
			want: netbootOffer("http://198.18.0.1:8080/ipxe/52:54:00:66:ea:9a/ipxe.efi", 60, "HTTPClient")},
		{name: "netboot not allowed: address and the not-allowed boot file", req: request(macNoBoot, dhcpv4.MessageTypeDiscover, bcast, pxeFile(7)),
			want: set(offer(toBroadcast), func(s *summary) { s.Flags, s.File = 0x8000, "/netboot-not-allowed" })},
		{name: "netboot not allowed, http client: option 60 still echoed", req: request(macNoBoot, dhcpv4.MessageTypeDiscover, bcast, pxe("HTTPClient", 16)),
			want: set(offer(toBroadcast, 60, "HTTPClient"), func(s *summary) { s.Flags, s.File = 0x8000, "/netboot-not-allowed" })},
		{name: "unknown architecture: the not-allowed boot file", req: request(macKnown, dhcpv4.MessageTypeDiscover, bcast, pxeFile(99)),
			want: set(offer(toBroadcast), func(s *summary) { s.Flags, s.File = 0x8000, "/netboot-not-allowed" })},
		{name: "not a pxe client: address only", req: request(macKnown, dhcpv4.MessageTypeDiscover, bcast, withStrOpt(60, "MSFT 5.0")),
			want: set(offer(toBroadcast), func(s *summary) { s.Flags = 0x8000 })},
		{name: "pxe with a malformed uuid: address only", req: request(macKnown, dhcpv4.MessageTypeDiscover, bcast, pxeFile(7), withOpt(97, 1, 2, 3)),
			want: set(offer(toBroadcast), func(s *summary) { s.Flags = 0x8000 })},
		{name: "pxe request gets the boot file too", req: request(macKnown, dhcpv4.MessageTypeRequest, bcast, pxeFile(0), withIPOpt(54, serverIP), withIPOpt(50, clientIP)),
			want: set(netbootOffer("undionly.kpxe", 53, "ACK"), func(s *summary) { s.Type = "ACK" })},
		{name: "traceparent in option 43.69", req: request(macKnown, dhcpv4.MessageTypeDiscover, bcast, pxeFile(0)),
			ctx: trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
				TraceID: traceID, SpanID: spanID, TraceFlags: trace.FlagsSampled})),
			want: netbootOffer("undionly.kpxe", 43, "060108451a00"+"4bf92f3577b34da6a3ce929d0e0e4736"+"00f067aa0ba902b7"+"01ff")},

		// Size limits.
		{name: "large reply fits 576 bytes with option overload", req: request(macBig, dhcpv4.MessageTypeDiscover),
			want: offer(toClient, 119, bigSearch)},
		{name: "option 57 allows the large reply", req: request(macBig, dhcpv4.MessageTypeDiscover, withOpt(57, 0x05, 0xdc)),
			want: offer(toClient, 119, bigSearch)},
		{name: "requested option 119 kept, unrequested dropped instead", req: request(macBig, dhcpv4.MessageTypeDiscover, withOpt(55, 1, 3, 6, 119)),
			want: offer(toClient, 119, bigSearch)}, // the others in file and sname (option overload)
		{name: "mandatory options too large: silent", req: request(macKnown, dhcpv4.MessageTypeDiscover,
			withOpt(61, make([]byte, 255)...), withOpt(82, make([]byte, 255)...)), drop: DropTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(newMemBackend())
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			s := newTestServer(t, cfg)
			ctx := tt.ctx
			if ctx == nil {
				ctx = t.Context()
			}
			reply, dst := s.Handle(ctx, tt.req)
			got := summarize(reply, dst)
			if got != nil && tt.want != nil {
				// The size on the wire (Handle's reply has overloaded
				// options moved back into Options).
				if r, _ := s.handlePacket(ctx, newScratch(), tt.req.ToBytes()); r.payload != nil {
					got.Size = len(r.payload)
				}
				if got.Size > 576-28 && !tt.req.Options.Has(dhcpv4.OptionMaximumDHCPMessageSize) {
					t.Errorf("reply of %d bytes exceeds 548", got.Size)
				}
				tt.want.Size = got.Size
				if xid := reply.TransactionID; xid != tt.req.TransactionID {
					t.Errorf("xid %v, want %v", xid, tt.req.TransactionID)
				}
				if !bytes.Equal(reply.ClientHWAddr, tt.req.ClientHWAddr) {
					t.Errorf("chaddr %v, want %v", reply.ClientHWAddr, tt.req.ClientHWAddr)
				}
			}
			if diff := cmp.Diff(tt.want, got, equate); diff != "" {
				t.Errorf("reply (-want +got):\n%s", diff)
			}
			if tt.want == nil {
				if n := s.Stats().Dropped[tt.drop]; n != 1 {
					t.Errorf("Stats().Dropped[%q] = %d, want 1 (all: %v)", tt.drop, n, s.Stats().Dropped)
				}
			}
		})
	}
}

var bigSearch = func() string {
	s := []string{"example.test", "lab.example.test"}
	for i := range bigZones {
		s = append(s, "zone"+string(rune('0'+i/10))+string(rune('0'+i%10))+".region.example.test")
	}
	return strings.Join(s, ",")
}()

// TestReplyWire checks what the decoded comparison cannot see: option
// order (53 and 54 first, 82 last), the BOOTP minimum length, and that the
// domain search list is compressed.
func TestReplyWire(t *testing.T) {
	s := newTestServer(t, testConfig(newMemBackend()))
	req := request(macKnown, dhcpv4.MessageTypeDiscover, dhcpv4.WithRelay(relayIP.AsSlice()), withOpt(82, 1, 1, 'x'), withOpt(61, 1, 2, 3))
	sc := newScratch()
	r, _ := s.handlePacket(t.Context(), sc, req.ToBytes())
	if r.payload == nil {
		t.Fatalf("no reply: %v", r.drop)
	}
	got := optionOrder(r.payload)
	want := []uint8{53, 54, 1, 3, 6, 12, 15, 28, 42, 51, 58, 59, 61, 119, 82}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("option order (-want +got):\n%s", diff)
	}
	if len(r.payload) < 300 {
		t.Errorf("reply of %d bytes, below the BOOTP minimum of 300", len(r.payload))
	}
	// "example.test" (14 bytes), then "lab" and a pointer to offset 0.
	wantSearch := []byte("\x07example\x04test\x00\x03lab\xc0\x00")
	if p, _ := dhcpv4.FromBytes(r.payload); !bytes.Equal(p.Options[119], wantSearch) {
		t.Errorf("option 119 = %q, want %q", p.Options[119], wantSearch)
	}
}

func TestDomainSearchEncoding(t *testing.T) {
	tests := []struct {
		in   []string
		want string
	}{
		{nil, ""},
		{[]string{"example.test."}, "\x07example\x04test\x00"},
		{[]string{"a.example.test", "b.example.test", "example.test"}, "\x01a\x07example\x04test\x00\x01b\xc0\x02\xc0\x02"},
		// No pointer to a sequence that ends in a pointer.
		{[]string{"x.example.test", "y.x.example.test", "z.y.x.example.test"}, "\x01x\x07example\x04test\x00\x01y\xc0\x00\x01z\x01y\xc0\x00"},
		// Names that are not valid DNS names are left out rather than sent
		// as different names (an empty label would end the name early).
		{[]string{"a..example.test", ".example.test", strings.Repeat("x", 64) + ".test", strings.Repeat("abcdefg.", 32) + "test", "example.test"}, "\x07example\x04test\x00"},
	}
	for _, tt := range tests {
		sc := newScratch()
		sc.addSearch(0, tt.in)
		got := ""
		if len(sc.opts) == 1 {
			got = string(sc.arena[sc.opts[0].off:sc.opts[0].end])
		}
		if got != tt.want {
			t.Errorf("search %q = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestHandleOddStructs: Handle takes any *dhcpv4.DHCPv4, also ones that no
// parser would produce.
func TestHandleOddStructs(t *testing.T) {
	s := newTestServer(t, testConfig(newMemBackend()))
	for _, req := range []*dhcpv4.DHCPv4{
		nil,
		{},
		{OpCode: dhcpv4.OpcodeBootRequest, HWType: 1, ClientHWAddr: macKnown},
		{OpCode: dhcpv4.OpcodeBootRequest, HWType: 1, ClientHWAddr: macKnown, Options: dhcpv4.Options{53: {byte(dhcpv4.MessageTypeInform)}}},
		{OpCode: dhcpv4.OpcodeBootRequest, HWType: 1, ClientHWAddr: macKnown, ClientIPAddr: []byte{1, 2, 3},
			Options: dhcpv4.Options{53: {byte(dhcpv4.MessageTypeRequest)}, 50: {1, 2}}},
		{OpCode: dhcpv4.OpcodeBootRequest, HWType: 1, ClientHWAddr: macKnown, Options: dhcpv4.Options{53: {byte(dhcpv4.MessageTypeDiscover)}, 57: {0}}},
	} {
		reply, _ := s.Handle(t.Context(), req) // must not panic
		if reply != nil && reply.MessageType() == dhcpv4.MessageTypeNone {
			t.Errorf("reply without a message type to %v", req)
		}
	}
}
