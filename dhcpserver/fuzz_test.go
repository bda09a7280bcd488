package dhcpserver

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

var update = flag.Bool("update", false, "rewrite the fuzz seed corpus in testdata/fuzz")

// seeds are requests that reach every branch of the handler.
func seeds() map[string][]byte {
	return map[string][]byte{
		"discover":       request(macKnown, dhcpv4.MessageTypeDiscover).ToBytes(),
		"request":        request(macKnown, dhcpv4.MessageTypeRequest, withIPOpt(54, serverIP), withIPOpt(50, clientIP)).ToBytes(),
		"renew":          request(macKnown, dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(clientIP.AsSlice())).ToBytes(),
		"inform":         request(macKnown, dhcpv4.MessageTypeInform, dhcpv4.WithClientIP(clientIP.AsSlice())).ToBytes(),
		"relayed":        request(macKnown, dhcpv4.MessageTypeDiscover, dhcpv4.WithRelay(relayIP.AsSlice()), withOpt(82, 1, 1, 'x')).ToBytes(),
		"pxe":            request(macKnown, dhcpv4.MessageTypeDiscover, pxe("PXEClient", 7)).ToBytes(),
		"ipxe":           request(macKnown, dhcpv4.MessageTypeDiscover, pxe("PXEClient", 7), withStrOpt(77, "Tinkerbell"), withOpt(175, 19, 1, 1)).ToBytes(),
		"httpclient":     request(macKnown, dhcpv4.MessageTypeDiscover, pxe("HTTPClient", 16)).ToBytes(),
		"big-search-57":  request(macBig, dhcpv4.MessageTypeDiscover, withOpt(57, 5, 0xdc), withOpt(55, 1, 119)).ToBytes(),
		"decline":        request(macKnown, dhcpv4.MessageTypeDecline, withIPOpt(50, clientIP)).ToBytes(),
		"release":        request(macKnown, dhcpv4.MessageTypeRelease).ToBytes(),
		"truncated":      request(macKnown, dhcpv4.MessageTypeDiscover).ToBytes()[:100],
		"oversize-opts":  request(macKnown, dhcpv4.MessageTypeDiscover, withOpt(61, make([]byte, 255)...), withOpt(82, make([]byte, 255)...)).ToBytes(),
		"not-found":      request(macNone, dhcpv4.MessageTypeDiscover).ToBytes(),
		"backend-error":  request(macError, dhcpv4.MessageTypeDiscover).ToBytes(),
		"zero-lease-nak": request(macLease0, dhcpv4.MessageTypeRequest, withIPOpt(50, otherIP)).ToBytes(),
	}
}

// TestFuzzCorpus keeps testdata/fuzz/FuzzHandlePacket in step with seeds
// (go test -run TestFuzzCorpus -update rewrites it).
func TestFuzzCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzHandlePacket")
	for name, b := range seeds() {
		file := filepath.Join(dir, name)
		want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if *update {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(file, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(file)
		if err != nil || string(got) != want {
			t.Errorf("corpus file %s is missing or stale (run go test -run TestFuzzCorpus -update): %v", file, err)
		}
	}
}

// FuzzHandlePacket feeds arbitrary bytes to the packet path (lower-layer
// header parsing, DHCP parsing, handling, reply building): it must never
// panic, and any reply must parse and respect the size limit.
func FuzzHandlePacket(f *testing.F) {
	s, err := New(testConfig(newMemBackend()))
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	sc := newScratch()
	frame := make([]byte, 0, readSize)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // a slow lookup (macSlow) returns at once
		r, req := s.handlePacket(ctx, sc, pkt)
		if r.payload != nil {
			if _, err := dhcpv4.FromBytes(r.payload); err != nil {
				t.Fatalf("reply does not parse: %v", err)
			}
			if limit := sizeLimit(req); len(r.payload) > limit {
				t.Fatalf("reply of %d bytes over the limit of %d", len(r.payload), limit)
			}
			if !r.dst.Addr.IsValid() {
				t.Fatalf("reply without a destination")
			}
		}
		// The same bytes as an Ethernet frame for raw mode.
		frame = append(frame[:0], pkt...)
		off, n, p := parseFrame(frame)
		if !p.malformed && (off < 0 || off+n > len(frame)) {
			t.Fatalf("parseFrame returned [%d:%d] of %d bytes", off, off+n, len(frame))
		}
	})
}
