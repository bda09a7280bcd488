package backend_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/internal/schematest"
)

var update = flag.Bool("update", false, "rewrite golden files and the fuzz seed corpus")

var (
	cmpOpts     = schematest.CmpOpts
	mustMAC     = schematest.MustMAC
	mustURL     = schematest.MustURL
	fullMessage = schematest.FullMessage
)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// golden compares got with the golden file, or rewrites it with -update.
func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	schematest.Golden(t, path, got, *update)
}

// writeSeed stores input as a fuzz seed corpus file of fuzz target name.
func writeSeed(t *testing.T, name, file string, input []byte) {
	t.Helper()
	if !*update {
		return
	}
	dir := filepath.Join("testdata", "fuzz", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", input)
	if err := os.WriteFile(filepath.Join(dir, file), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func inputs(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", dir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden inputs in testdata/%s: %v", dir, err)
	}
	return files
}

func TestGoldenRequests(t *testing.T) {
	for _, in := range inputs(t, "request") {
		t.Run(filepath.Base(in), func(t *testing.T) {
			raw, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			writeSeed(t, "FuzzDHCPRequest", strings.TrimSuffix(filepath.Base(in), ".json"), raw)
			var req backend.DHCPRequest
			if err := json.Unmarshal(raw, &req); err != nil {
				t.Fatalf("decode: %v", err)
			}
			got, err := json.Marshal(req)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, strings.TrimSuffix(in, ".json")+".golden", append(got, '\n'))
			if !bytes.Equal(got, req.AppendJSON(nil)) {
				t.Errorf("json.Marshal and AppendJSON differ")
			}
		})
	}
}

func TestGoldenResponses(t *testing.T) {
	for _, in := range inputs(t, "response") {
		t.Run(filepath.Base(in), func(t *testing.T) {
			raw, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			writeSeed(t, "FuzzMessage", strings.TrimSuffix(filepath.Base(in), ".json"), raw)
			var m backend.Message
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatalf("decode: %v", err)
			}
			got, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, strings.TrimSuffix(in, ".json")+".golden", append(got, '\n'))
			// The canonical form decodes to the same value.
			var again backend.Message
			if err := json.Unmarshal(got, &again); err != nil {
				t.Fatalf("decode canonical: %v", err)
			}
			if diff := cmp.Diff(m, again, cmpOpts); diff != "" {
				t.Errorf("canonical form decodes differently (-first +second):\n%s", diff)
			}
		})
	}
}

func TestDecodedValues(t *testing.T) {
	naive := fullMessage()
	naive.DomainName, naive.BroadcastAddress, naive.NTPServers, naive.DomainSearch = "", netip.Addr{}, nil, nil
	naive.NameServers = []netip.Addr{addr("198.18.0.2")}
	naive.LeaseTime = 3600
	naive.IPXEScriptURL = "http://198.18.0.1:8080/auto.ipxe?mac=52:54:00:66:ea:9a"

	tests := []struct {
		file string
		want backend.Message
	}{
		{"seed_flat.json", backend.Message{DHCP: backend.DHCP{IPAddress: addr("192.168.2.3")}}},
		{"seed_nested.json", backend.Message{}},
		{"full.json", fullMessage()},
		{"nested_full.json", fullMessage()},
		{"naive_go.json", naive},
		{"nulls.json", backend.Message{}},
		{"empty.json", backend.Message{}},
		{"unknown_fields.json", backend.Message{DHCP: backend.DHCP{IPAddress: addr("198.18.0.10")}}},
		{"lowercase_keys.json", backend.Message{
			DHCP:    backend.DHCP{MACAddress: mustMAC("52:54:00:66:ea:9a"), IPAddress: addr("198.18.0.10"), SubnetMask: backend.MaskFrom(16)},
			Netboot: backend.Netboot{AllowNetboot: true},
		}},
		{"mapped_ipv4.json", backend.Message{DHCP: backend.DHCP{
			IPAddress: addr("198.18.0.10"), NameServers: []netip.Addr{addr("198.18.0.2")}, SubnetMask: backend.MaskFrom(30),
		}}},
		{"error_404.json", backend.Message{Error: backend.Status{Code: 404, Message: "no reservation for 52:54:00:66:ea:9a"}}},
		// The seed's Go structs embed Error with `json:",inline"`, which
		// encoding/json ignores: Code and Message come flat.
		{"seed_structs_flat_error.json", backend.Message{Error: backend.Status{Code: 404, Message: "not found"}}},
		{"error_500_escaped.json", backend.Message{Error: backend.Status{Code: 500, Message: "db said: \"boom\"\n\tat line 1"}}},
		{"smee_full.json", smeeMessage()},
		{"smee_nested_naive.json", backend.Message{
			DHCP: backend.DHCP{
				MACAddress: mustMAC("52:54:00:66:ea:9a"), IPAddress: addr("198.18.0.10"), VLANID: "42",
				ClasslessStaticRoutes: []backend.Route{{Destination: netip.MustParsePrefix("10.0.0.0/8"), Router: addr("198.18.0.1")}},
			},
			Netboot: backend.Netboot{
				AllowNetboot: true, IPXEScriptURL: "http://198.18.0.1/auto.ipxe",
				OSIE: backend.OSIE{BaseURL: "https://198.18.0.1/hook"},
			},
		}},
		// URLs are kept byte for byte: iPXE settings, escapes, fragment.
		{"ipxe_settings_url.json", backend.Message{
			DHCP: backend.DHCP{IPAddress: addr("198.18.0.10")},
			Netboot: backend.Netboot{
				AllowNetboot:  true,
				IPXEScriptURL: "http://${next-server}:7080/${mac:hexhyp}.ipxe?uuid=${uuid}&x=%41#${hostname}",
			},
		}},
		{"ip_answer.json", backend.Message{
			DHCP: backend.DHCP{
				MACAddress: mustMAC("52:54:00:66:ea:9a"), IPAddress: addr("198.18.0.10"), SubnetMask: backend.MaskFrom(24),
				Hostname: "node-1", Arch: "x86_64",
			},
			Netboot: backend.Netboot{AllowNetboot: true, Facility: "lab1"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("testdata", "response", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			var got backend.Message
			if err := json.Unmarshal(raw, &got); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if diff := cmp.Diff(tt.want, got, cmpOpts); diff != "" {
				t.Errorf("decoded message mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodedRequests(t *testing.T) {
	mac := mustMAC("52:54:00:66:ea:9a")
	tests := []struct {
		file string
		want backend.DHCPRequest
	}{
		{"seed.json", backend.DHCPRequest{MACAddress: mac, Traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}},
		{"old_key.json", backend.DHCPRequest{MACAddress: mac}},
		{"base64_mac.json", backend.DHCPRequest{MACAddress: mac}},
		{"extra_fields.json", backend.DHCPRequest{MACAddress: mac}},
		{"ip.json", backend.DHCPRequest{IPAddress: addr("198.18.0.10"), Traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}},
		{"ip_mapped_lowercase.json", backend.DHCPRequest{IPAddress: addr("198.18.0.10")}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("testdata", "request", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			var got backend.DHCPRequest
			if err := json.Unmarshal(raw, &got); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if diff := cmp.Diff(tt.want, got, cmpOpts); diff != "" {
				t.Errorf("decoded request mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestNaiveGoEncoderInterop checks that what encoding/json makes of the
// seed's original structs (net.HardwareAddr and net.IPMask as base64,
// url.URL as an object) decodes to the intended values.
func TestNaiveGoEncoderInterop(t *testing.T) {
	type naiveDHCP struct {
		MACAddress     net.HardwareAddr `json:"MACAddress"`
		IPAddress      net.IP           `json:"IPAddress"`
		SubnetMask     net.IPMask       `json:"SubnetMask"`
		DefaultGateway net.IP           `json:"DefaultGateway"`
		NameServers    []net.IP         `json:"NameServers"`
		LeaseTime      uint32           `json:"LeaseTime"`
		AllowNetboot   bool             `json:"AllowNetboot"`
		IPXEScriptURL  *url.URL         `json:"IPXEScriptURL"`
	}
	for _, mask := range []net.IPMask{net.CIDRMask(24, 32), net.IPv4Mask(255, 255, 255, 0), net.IPMask(net.IP(net.IPv4Mask(255, 255, 255, 0)).To16())} {
		in := naiveDHCP{
			MACAddress: mustMAC("52:54:00:66:ea:9a"), IPAddress: net.ParseIP("198.18.0.10"), SubnetMask: mask,
			DefaultGateway: net.ParseIP("198.18.0.1").To4(), NameServers: []net.IP{net.ParseIP("198.18.0.2")},
			LeaseTime: 60, AllowNetboot: true, IPXEScriptURL: mustURL("https://boot.example.test/x.ipxe?a=b#c"),
		}
		raw, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		var got backend.Message
		if err := json.Unmarshal(raw, &got); err != nil {
			t.Fatalf("decode %s: %v", raw, err)
		}
		want := backend.Message{
			DHCP: backend.DHCP{
				MACAddress: in.MACAddress, IPAddress: addr("198.18.0.10"), SubnetMask: backend.MaskFrom(24),
				DefaultGateway: addr("198.18.0.1"), NameServers: []netip.Addr{addr("198.18.0.2")}, LeaseTime: 60,
			},
			Netboot: backend.Netboot{AllowNetboot: true, IPXEScriptURL: backend.URLFrom(in.IPXEScriptURL)},
		}
		if diff := cmp.Diff(want, got, cmpOpts); diff != "" {
			t.Errorf("mask %v: (-want +got):\n%s", mask, diff)
		}
	}
}

// TestEncodingJSON checks the types behave inside other structs and with
// json.Marshal, as users of encoding/json expect.
func TestEncodingJSON(t *testing.T) {
	type envelope struct {
		Req  backend.DHCPRequest
		Msg  *backend.Message
		DHCP backend.DHCP
		Boot backend.Netboot
		Mask backend.Mask
	}
	m := fullMessage()
	in := envelope{Req: backend.DHCPRequest{MACAddress: m.MACAddress}, Msg: &m, DHCP: m.DHCP, Boot: m.Netboot, Mask: backend.MaskFrom(20)}
	raw, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), `"Mask":"255.255.240.0"`) {
		t.Errorf("Mask not a dotted quad in %s", raw)
	}
	var out envelope
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(in, out, cmpOpts); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	// Decoding an error into a struct field surfaces our typed error.
	err = json.Unmarshal([]byte(`{"Msg":{"IPAddress":"::1"}}`), &out)
	var fe *backend.FieldError
	if !errors.As(err, &fe) || fe.Field != "IPAddress" || !errors.Is(err, backend.ErrNotIPv4) {
		t.Errorf("error = %v, want a FieldError for IPAddress", err)
	}
}

// smeeMessage is the value of testdata/response/smee_full.json: every field
// of the Tinkerbell hardware model that the seed's schema lacks.
func smeeMessage() backend.Message {
	return backend.Message{
		DHCP: backend.DHCP{
			MACAddress:     mustMAC("52:54:00:66:ea:9a"),
			IPAddress:      addr("198.18.0.10"),
			SubnetMask:     backend.MaskFrom(24),
			DefaultGateway: addr("198.18.0.1"),
			NameServers:    []netip.Addr{addr("198.18.0.2")},
			Hostname:       "node-1",
			DomainName:     "example.test",
			LeaseTime:      86400,
			VLANID:         "42",
			TFTPServerName: "198.18.0.5",
			BootFileName:   "pxelinux.0",
			Arch:           "aarch64",
			ClasslessStaticRoutes: []backend.Route{
				{Destination: netip.MustParsePrefix("10.0.0.0/8"), Router: addr("198.18.0.1")},
				{Destination: netip.MustParsePrefix("172.16.0.0/12"), Router: addr("198.18.0.20")},
				{Destination: netip.MustParsePrefix("0.0.0.0/0"), Router: addr("198.18.0.1")},
			},
			Disabled: true,
		},
		Netboot: backend.Netboot{
			AllowNetboot:  true,
			IPXEScriptURL: "http://198.18.0.1:7080/ipxe/script/${mac:hexhyp}/auto.ipxe",
			IPXEScript:    "#!ipxe\nchain --autofree http://198.18.0.1/boot.ipxe?mac=${net0/mac}\n",
			IPXEBinary:    "snp-arm64.efi",
			Console:       "ttyAMA0,115200",
			Facility:      "lab1",
			OSIE: backend.OSIE{
				BaseURL:      "http://198.18.0.1:7080/hook/${buildarch}",
				Kernel:       "vmlinuz-arm64",
				Initrd:       "initramfs-arm64",
				KernelParams: []string{"console=ttyAMA0", "tink_worker_image=quay.io/tinkerbell/tink-agent"},
			},
			Isoboot: backend.Isoboot{SourceISO: "https://198.18.0.1/hook-arm64.iso"},
		},
	}
}
