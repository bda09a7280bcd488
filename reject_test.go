package backend_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tinkerbell/backend"
)

// wantErr describes an expected decoding error: a *FieldError for Field
// with reason Reason, or a *SyntaxError when Field is "".
type wantErr struct {
	Field  string
	Reason error
}

func checkErr(t *testing.T, err error, want wantErr) {
	t.Helper()
	if !errors.Is(err, backend.ErrInvalidMessage) {
		t.Fatalf("error %v does not match ErrInvalidMessage", err)
	}
	if want.Field == "" {
		var se *backend.SyntaxError
		if !errors.As(err, &se) {
			t.Fatalf("error %v (%T) is not a *SyntaxError", err, err)
		}
		return
	}
	var fe *backend.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v (%T) is not a *FieldError", err, err)
	}
	if fe.Field != want.Field {
		t.Errorf("FieldError.Field = %q, want %q (error: %v)", fe.Field, want.Field, err)
	}
	if want.Reason != nil && !errors.Is(err, want.Reason) {
		t.Errorf("error %v does not match reason %v", err, want.Reason)
	}
}

func TestRequestRejects(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want wantErr
	}{
		{"empty input", ``, wantErr{}},
		{"not an object", `[]`, wantErr{}},
		{"truncated", `{"MACAddress":"52:54:00:66:ea:9a"`, wantErr{}},
		{"trailing data", `{"MACAddress":"52:54:00:66:ea:9a"} x`, wantErr{}},
		{"missing MAC", `{"Traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}`, wantErr{"MACAddress", backend.ErrMissing}},
		{"null MAC", `{"MACAddress":null}`, wantErr{"MACAddress", backend.ErrMissing}},
		{"empty MAC", `{"MACAddress":""}`, wantErr{"MACAddress", backend.ErrMissing}},
		{"malformed MAC", `{"MACAddress":"52:54:00:66:ea"}`, wantErr{"MACAddress", backend.ErrBadMAC}},
		{"base64 of 4 bytes", `{"MACAddress":"AQIDBA=="}`, wantErr{"MACAddress", backend.ErrBadMAC}},
		{"MAC as number", `{"MACAddress":5}`, wantErr{"MACAddress", backend.ErrWrongType}},
		{"MAC and IP", `{"MACAddress":"52:54:00:66:ea:9a","IPAddress":"198.18.0.10"}`, wantErr{"IPAddress", backend.ErrConflict}},
		{"IP null", `{"IPAddress":null}`, wantErr{"MACAddress", backend.ErrMissing}},
		{"IP empty", `{"IPAddress":""}`, wantErr{"MACAddress", backend.ErrMissing}},
		{"IP v6", `{"IPAddress":"2001:db8::1"}`, wantErr{"IPAddress", backend.ErrNotIPv4}},
		{"IP garbage", `{"IPAddress":"node-1"}`, wantErr{"IPAddress", backend.ErrNotIPv4}},
		{"IP as number", `{"IPAddress":3323068426}`, wantErr{"IPAddress", backend.ErrWrongType}},
		{"MAC as array", `{"MACAddress":[82,84,0,102,234,154]}`, wantErr{"MACAddress", backend.ErrWrongType}},
		{"traceparent as object", `{"MACAddress":"52:54:00:66:ea:9a","Traceparent":{}}`, wantErr{"Traceparent", backend.ErrWrongType}},
		{"bad escape", `{"MACAddress":"52:54:00:66:ea:9a","Traceparent":"\x"}`, wantErr{}},
		{"control character", "{\"MACAddress\":\"52:54:00:66:ea:9a\",\"Traceparent\":\"a\x01\"}", wantErr{}},
		{"deep nesting", `{"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`, wantErr{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var req backend.DHCPRequest
			err := req.UnmarshalJSON([]byte(tt.in))
			if err == nil {
				t.Fatalf("decoded %q without error: %+v", tt.in, req)
			}
			checkErr(t, err, tt.want)
		})
	}
}

// TestDecodeErrorsOwnTheirText: a decoding error must not change when the
// caller reuses the input buffer afterwards, as json.Decoder does with
// its own buffer between values.
func TestDecodeErrorsOwnTheirText(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		decode func([]byte) error
	}{
		{"request old key", `{"MacAddress":5}`, func(b []byte) error { return new(backend.DHCPRequest).UnmarshalJSON(b) }},
		{"request lower-case key", `{"mac_address":"zz"}`, func(b []byte) error { return new(backend.DHCPRequest).UnmarshalJSON(b) }},
		{"request traceparent", `{"MACAddress":"52:54:00:66:ea:9a","traceparent":{}}`, func(b []byte) error { return new(backend.DHCPRequest).UnmarshalJSON(b) }},
		{"message", `{"ipaddress":"zz"}`, func(b []byte) error { return new(backend.Message).UnmarshalJSON(b) }},
		{"DHCP", `{"hostname":1}`, func(b []byte) error { return new(backend.DHCP).UnmarshalJSON(b) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			buf := []byte(tt.in)
			err := tt.decode(buf)
			if err == nil {
				t.Fatalf("decoded %q without error", tt.in)
			}
			want := err.Error()
			for i := range buf {
				buf[i] = 'X'
			}
			if got := err.Error(); got != want {
				t.Errorf("error changed with the input buffer: %q, was %q", got, want)
			}
		})
	}
}

func TestMessageRejects(t *testing.T) {
	long := strings.Repeat("a", 256)
	tests := []struct {
		name string
		in   string
		want wantErr
	}{
		{"not JSON", `hello`, wantErr{}},
		{"string", `"x"`, wantErr{}},
		{"unterminated string", `{"Hostname":"abc`, wantErr{}},
		{"bad number", `{"LeaseTime":01}`, wantErr{}},
		{"duplicate comma", `{"LeaseTime":1,,"Hostname":""}`, wantErr{}},
		{"MAC malformed", `{"MACAddress":"zz:54:00:66:ea:9a"}`, wantErr{"MACAddress", backend.ErrBadMAC}},
		{"IPv6 address", `{"IPAddress":"2001:db8::1"}`, wantErr{"IPAddress", backend.ErrNotIPv4}},
		{"address garbage", `{"IPAddress":"198.18.0.300"}`, wantErr{"IPAddress", backend.ErrNotIPv4}},
		{"address with zone", `{"DefaultGateway":"fe80::1%eth0"}`, wantErr{"DefaultGateway", backend.ErrNotIPv4}},
		{"address as number", `{"BroadcastAddress":3232236035}`, wantErr{"BroadcastAddress", backend.ErrWrongType}},
		{"name server IPv6", `{"NameServers":["198.18.0.2","::1"]}`, wantErr{"NameServers", backend.ErrNotIPv4}},
		{"name servers not a list", `{"NameServers":"198.18.0.2"}`, wantErr{"NameServers", backend.ErrWrongType}},
		{"NTP server garbage", `{"NTPServers":["ntp.example.test"]}`, wantErr{"NTPServers", backend.ErrNotIPv4}},
		{"mask not contiguous", `{"SubnetMask":"255.0.255.0"}`, wantErr{"SubnetMask", backend.ErrBadMask}},
		{"mask IPv6", `{"SubnetMask":"ffff:ffff::"}`, wantErr{"SubnetMask", backend.ErrNotIPv4}},
		{"mask base64 not contiguous", `{"SubnetMask":"/wD/AA=="}`, wantErr{"SubnetMask", backend.ErrBadMask}},
		{"mask base64 wrong length", `{"SubnetMask":"//8="}`, wantErr{"SubnetMask", backend.ErrNotIPv4}},
		{"mask garbage", `{"SubnetMask":"!!"}`, wantErr{"SubnetMask", backend.ErrNotIPv4}},
		{"hostname too long", `{"Hostname":"` + long + `"}`, wantErr{"Hostname", backend.ErrTooLong}},
		{"domain name too long", `{"DomainName":"` + long + `"}`, wantErr{"DomainName", backend.ErrTooLong}},
		{"hostname as bool", `{"Hostname":true}`, wantErr{"Hostname", backend.ErrWrongType}},
		{"search domain empty label", `{"DomainSearch":["a..b"]}`, wantErr{"DomainSearch", backend.ErrBadName}},
		{"search domain long label", `{"DomainSearch":["` + strings.Repeat("a", 64) + `.test"]}`, wantErr{"DomainSearch", backend.ErrBadName}},
		{"search domain with space", `{"DomainSearch":["a b.test"]}`, wantErr{"DomainSearch", backend.ErrBadName}},
		{"search domain element number", `{"DomainSearch":[1]}`, wantErr{"DomainSearch", backend.ErrWrongType}},
		{"lease negative", `{"LeaseTime":-1}`, wantErr{"LeaseTime", backend.ErrOutOfRange}},
		{"lease too large", `{"LeaseTime":4294967296}`, wantErr{"LeaseTime", backend.ErrOutOfRange}},
		{"lease fraction", `{"LeaseTime":1.5}`, wantErr{"LeaseTime", backend.ErrOutOfRange}},
		{"lease string", `{"LeaseTime":"3600"}`, wantErr{"LeaseTime", backend.ErrWrongType}},
		{"netboot string", `{"AllowNetboot":"yes"}`, wantErr{"AllowNetboot", backend.ErrWrongType}},
		{"URL relative", `{"IPXEScriptURL":"/auto.ipxe"}`, wantErr{"IPXEScriptURL", backend.ErrBadURL}},
		{"URL scheme", `{"IPXEScriptURL":"ftp://198.18.0.1/auto.ipxe"}`, wantErr{"IPXEScriptURL", backend.ErrBadURL}},
		{"URL no host", `{"IPXEScriptURL":"http:///auto.ipxe"}`, wantErr{"IPXEScriptURL", backend.ErrBadURL}},
		{"URL unparsable", `{"IPXEScriptURL":"http://[::1"}`, wantErr{"IPXEScriptURL", backend.ErrBadURL}},
		{"URL object bad scheme", `{"IPXEScriptURL":{"Scheme":"file","Path":"/etc/passwd"}}`, wantErr{"IPXEScriptURL", backend.ErrBadURL}},
		{"URL number", `{"IPXEScriptURL":1}`, wantErr{"IPXEScriptURL", backend.ErrWrongType}},
		{"error code string", `{"Error":{"Code":"404"}}`, wantErr{"Error.Code", backend.ErrWrongType}},
		{"error code huge", `{"Error":{"Code":99999999999}}`, wantErr{"Error.Code", backend.ErrOutOfRange}},
		{"error message number", `{"Error":{"Message":1}}`, wantErr{"Error.Message", backend.ErrWrongType}},
		{"error not object", `{"Error":"boom"}`, wantErr{}},
		{"nested DHCP not object", `{"DHCP":[]}`, wantErr{}},
		{"nested field invalid", `{"DHCP":{"IPAddress":"::1"}}`, wantErr{"IPAddress", backend.ErrNotIPv4}},
		{"nested netboot invalid", `{"Netboot":{"IPXEScriptURL":"x"}}`, wantErr{"IPXEScriptURL", backend.ErrBadURL}},
		{"URL setting without scheme", `{"IPXEScriptURL":"${next-server}/auto.ipxe"}`, wantErr{"IPXEScriptURL", backend.ErrBadURL}},
		{"URL with space in host", `{"IPXEScriptURL":"http://a b/auto.ipxe"}`, wantErr{"IPXEScriptURL", backend.ErrBadURL}},
		{"URL with control byte", `{"IPXEScriptURL":"http://198.18.0.1/a\u0000.ipxe"}`, wantErr{"IPXEScriptURL", backend.ErrBadURL}},
		{"VLAN zero", `{"VLANID":"0"}`, wantErr{"VLANID", backend.ErrOutOfRange}},
		{"VLAN too big", `{"VLANID":"4095"}`, wantErr{"VLANID", backend.ErrOutOfRange}},
		{"VLAN number too big", `{"VLANID":4095}`, wantErr{"VLANID", backend.ErrOutOfRange}},
		{"VLAN negative", `{"VLANID":-1}`, wantErr{"VLANID", backend.ErrOutOfRange}},
		{"VLAN text", `{"VLANID":"vlan10"}`, wantErr{"VLANID", backend.ErrOutOfRange}},
		{"VLAN leading zero", `{"VLANID":"010"}`, wantErr{"VLANID", backend.ErrOutOfRange}},
		{"VLAN bool", `{"VLANID":true}`, wantErr{"VLANID", backend.ErrWrongType}},
		{"TFTP server name too long", `{"TFTPServerName":"` + long + `"}`, wantErr{"TFTPServerName", backend.ErrTooLong}},
		{"boot file name too long", `{"BootFileName":"` + long + `"}`, wantErr{"BootFileName", backend.ErrTooLong}},
		{"disabled string", `{"Disabled":"true"}`, wantErr{"Disabled", backend.ErrWrongType}},
		{"routes not a list", `{"ClasslessStaticRoutes":{}}`, wantErr{"ClasslessStaticRoutes", backend.ErrWrongType}},
		{"route not an object", `{"ClasslessStaticRoutes":["10.0.0.0/8"]}`, wantErr{"ClasslessStaticRoutes", backend.ErrWrongType}},
		{"route host bits", `{"ClasslessStaticRoutes":[{"Destination":"10.0.0.1/8","Router":"198.18.0.1"}]}`, wantErr{"ClasslessStaticRoutes", backend.ErrBadPrefix}},
		{"route IPv6", `{"ClasslessStaticRoutes":[{"Destination":"2001:db8::/32","Router":"198.18.0.1"}]}`, wantErr{"ClasslessStaticRoutes", backend.ErrNotIPv4}},
		{"route no router", `{"ClasslessStaticRoutes":[{"Destination":"10.0.0.0/8"}]}`, wantErr{"ClasslessStaticRoutes", backend.ErrNotIPv4}},
		{"route no destination", `{"ClasslessStaticRoutes":[{"Router":"198.18.0.1"}]}`, wantErr{"ClasslessStaticRoutes", backend.ErrNotIPv4}},
		{"route bad prefix", `{"ClasslessStaticRoutes":[{"Destination":"10.0.0.0/33","Router":"198.18.0.1"}]}`, wantErr{"ClasslessStaticRoutes", backend.ErrNotIPv4}},
		{"route naive no mask", `{"ClasslessStaticRoutes":[{"Dest":{"IP":"10.0.0.0"},"Router":"198.18.0.1"}]}`, wantErr{"ClasslessStaticRoutes", backend.ErrMissing}},
		{"binary with slash", `{"IPXEBinary":"../ipxe.efi"}`, wantErr{"IPXEBinary", backend.ErrBadFileName}},
		{"binary dot dot", `{"IPXEBinary":".."}`, wantErr{"IPXEBinary", backend.ErrBadFileName}},
		{"binary with space", `{"IPXEBinary":"ipxe .efi"}`, wantErr{"IPXEBinary", backend.ErrBadFileName}},
		{"binary too long", `{"IPXEBinary":"` + strings.Repeat("a", 101) + `"}`, wantErr{"IPXEBinary", backend.ErrBadFileName}},
		{"script number", `{"IPXEScript":1}`, wantErr{"IPXEScript", backend.ErrWrongType}},
		{"OSIE not object", `{"OSIE":"http://198.18.0.1/osie"}`, wantErr{"OSIE", backend.ErrWrongType}},
		{"OSIE bad URL", `{"OSIE":{"BaseURL":"/osie"}}`, wantErr{"OSIE.BaseURL", backend.ErrBadURL}},
		{"OSIE params not list", `{"OSIE":{"KernelParams":"console=ttyS0"}}`, wantErr{"OSIE.KernelParams", backend.ErrWrongType}},
		{"ISO bad URL", `{"Isoboot":{"SourceISO":"file:///hook.iso"}}`, wantErr{"Isoboot.SourceISO", backend.ErrBadURL}},
		{"ISO not object", `{"Isoboot":[]}`, wantErr{"Isoboot", backend.ErrWrongType}},
		{"nested smee field invalid", `{"Netboot":{"OSIE":{"BaseURL":"x"}}}`, wantErr{"OSIE.BaseURL", backend.ErrBadURL}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m backend.Message
			err := m.UnmarshalJSON([]byte(tt.in))
			if err == nil {
				t.Fatalf("decoded %q without error: %+v", tt.in, m)
			}
			checkErr(t, err, tt.want)
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		m    backend.Message
		want wantErr
	}{
		{"short MAC", backend.Message{DHCP: backend.DHCP{MACAddress: []byte{1, 2, 3}}}, wantErr{"MACAddress", backend.ErrBadMAC}},
		{"IPv6 gateway", backend.Message{DHCP: backend.DHCP{DefaultGateway: netip.MustParseAddr("::1")}}, wantErr{"DefaultGateway", backend.ErrNotIPv4}},
		{"IPv6 name server", backend.Message{DHCP: backend.DHCP{NameServers: []netip.Addr{{}}}}, wantErr{"NameServers", backend.ErrNotIPv4}},
		{"IPv6 NTP server", backend.Message{DHCP: backend.DHCP{NTPServers: []netip.Addr{netip.IPv6Loopback()}}}, wantErr{"NTPServers", backend.ErrNotIPv4}},
		{"bad URL", backend.Message{Netboot: backend.Netboot{IPXEScriptURL: "mailto:a@b"}}, wantErr{"IPXEScriptURL", backend.ErrBadURL}},
		{"bad VLAN", backend.Message{DHCP: backend.DHCP{VLANID: "4095"}}, wantErr{"VLANID", backend.ErrOutOfRange}},
		{"route IPv6 router", backend.Message{DHCP: backend.DHCP{ClasslessStaticRoutes: []backend.Route{
			{Destination: netip.MustParsePrefix("10.0.0.0/8"), Router: netip.IPv6Loopback()},
		}}}, wantErr{"ClasslessStaticRoutes", backend.ErrNotIPv4}},
		{"route host bits", backend.Message{DHCP: backend.DHCP{ClasslessStaticRoutes: []backend.Route{
			{Destination: netip.MustParsePrefix("10.1.0.0/8"), Router: netip.MustParseAddr("198.18.0.1")},
		}}}, wantErr{"ClasslessStaticRoutes", backend.ErrBadPrefix}},
		{"bad binary", backend.Message{Netboot: backend.Netboot{IPXEBinary: "a/b"}}, wantErr{"IPXEBinary", backend.ErrBadFileName}},
		{"bad OSIE URL", backend.Message{Netboot: backend.Netboot{OSIE: backend.OSIE{BaseURL: "osie"}}}, wantErr{"OSIE.BaseURL", backend.ErrBadURL}},
		{"bad ISO URL", backend.Message{Netboot: backend.Netboot{Isoboot: backend.Isoboot{SourceISO: "ftp://x/y.iso"}}}, wantErr{"Isoboot.SourceISO", backend.ErrBadURL}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkErr(t, tt.m.Validate(), tt.want)
		})
	}
	full := fullMessage()
	if err := full.Validate(); err != nil {
		t.Errorf("valid message: %v", err)
	}
}

func TestMask(t *testing.T) {
	for bits := 0; bits <= 32; bits++ {
		m := backend.MaskFrom(bits)
		if !m.IsValid() || m.Bits() != bits {
			t.Fatalf("MaskFrom(%d) = %v bits %d", bits, m, m.Bits())
		}
		p, err := backend.ParseMask(m.String())
		if err != nil || p != m {
			t.Fatalf("ParseMask(%q) = %v, %v", m.String(), p, err)
		}
		ones, size := m.IPMask().Size()
		if ones != bits || size != 32 {
			t.Fatalf("IPMask().Size() = %d, %d", ones, size)
		}
	}
	for _, bad := range []int{-1, 33} {
		if m := backend.MaskFrom(bad); m.IsValid() {
			t.Errorf("MaskFrom(%d) is valid", bad)
		}
	}
	var zero backend.Mask
	if zero.IsValid() || zero.Bits() != -1 || zero.String() != "" || zero.IPMask() != nil || zero.As4() != [4]byte{} {
		t.Errorf("zero Mask is not unset: %v", zero)
	}
	if _, err := backend.ParseMask("255.255.0.255"); !errors.Is(err, backend.ErrBadMask) {
		t.Errorf("ParseMask(non-contiguous) error = %v", err)
	}
	if _, err := backend.ParseMask("::"); !errors.Is(err, backend.ErrNotIPv4) {
		t.Errorf("ParseMask(IPv6) error = %v", err)
	}
	var m backend.Mask
	if err := m.UnmarshalText([]byte("255.255.255.128")); err != nil || m.Bits() != 25 {
		t.Errorf("UnmarshalText = %v, %v", m, err)
	}
	if err := m.UnmarshalText(nil); err != nil || m.IsValid() {
		t.Errorf("UnmarshalText(empty) = %v, %v", m, err)
	}
}

func TestErrorsAcrossTheWire(t *testing.T) {
	tests := []struct {
		err      error
		code     int
		matchers []error
	}{
		{nil, backend.CodeOK, nil},
		{backend.ErrNotFound, backend.CodeNotFound, []error{backend.ErrNotFound}},
		{fmt.Errorf("lookup 52:54:00:66:ea:9a: %w", backend.ErrNotFound), backend.CodeNotFound, []error{backend.ErrNotFound}},
		{&backend.FieldError{Field: "MACAddress", Err: backend.ErrMissing}, backend.CodeBadRequest, []error{backend.ErrInvalidMessage}},
		{backend.ErrUnavailable, backend.CodeUnavailable, []error{backend.ErrUnavailable}},
		{context.DeadlineExceeded, backend.CodeUnavailable, []error{backend.ErrUnavailable}},
		{fmt.Errorf("x: %w", context.Canceled), backend.CodeUnavailable, []error{backend.ErrUnavailable}},
		{errors.New("database is down"), backend.CodeInternal, nil},
		{&backend.RemoteError{Code: 418, Message: "teapot"}, 418, nil},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.err), func(t *testing.T) {
			if got := backend.CodeOf(tt.err); got != tt.code {
				t.Fatalf("CodeOf = %d, want %d", got, tt.code)
			}
			wire := backend.StatusOf(tt.err)
			if wire.Code != tt.code {
				t.Fatalf("StatusOf code = %d, want %d", wire.Code, tt.code)
			}
			back := wire.Err()
			if tt.err == nil {
				if back != nil {
					t.Fatalf("Err() = %v, want nil", back)
				}
				return
			}
			var re *backend.RemoteError
			if !errors.As(back, &re) || re.Code != tt.code || re.Message != tt.err.Error() {
				t.Fatalf("Err() = %#v", back)
			}
			for _, m := range tt.matchers {
				if !errors.Is(back, m) {
					t.Errorf("remote error %v does not match %v", back, m)
				}
			}
			for _, other := range []error{backend.ErrNotFound, backend.ErrUnavailable, backend.ErrInvalidMessage} {
				matched := false
				for _, m := range tt.matchers {
					matched = matched || m == other
				}
				if !matched && errors.Is(back, other) {
					t.Errorf("remote error %v wrongly matches %v", back, other)
				}
			}
		})
	}
	if !errors.Is(backend.ErrTooLarge, backend.ErrInvalidMessage) {
		t.Error("ErrTooLarge does not match ErrInvalidMessage")
	}
}

func TestBackendFunc(t *testing.T) {
	var b backend.Backend = backend.BackendFunc(func(_ context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
		return backend.DHCP{MACAddress: req.MACAddress}, backend.Netboot{AllowNetboot: true}, nil
	})
	mac := mustMAC("52:54:00:66:ea:9a")
	d, n, err := b.Lookup(t.Context(), backend.DHCPRequest{MACAddress: mac})
	if err != nil || d.MACAddress.String() != mac.String() || !n.AllowNetboot {
		t.Fatalf("Lookup = %v, %v, %v", d, n, err)
	}
}

func TestRequestValidateAndMatch(t *testing.T) {
	mac := mustMAC("52:54:00:66:ea:9a")
	other := mustMAC("52:54:00:66:ea:9b")
	ip := netip.MustParseAddr("198.18.0.10")
	tests := []struct {
		name     string
		req      backend.DHCPRequest
		valid    wantErr // zero: valid
		answer   backend.DHCP
		mismatch string // the field Match names, "" when the answer matches
	}{
		{name: "by MAC, MAC echoed", req: backend.DHCPRequest{MACAddress: mac}, answer: backend.DHCP{MACAddress: mac, IPAddress: ip}},
		{name: "by MAC, no MAC in answer", req: backend.DHCPRequest{MACAddress: mac}, answer: backend.DHCP{IPAddress: ip}},
		{name: "by MAC, other MAC", req: backend.DHCPRequest{MACAddress: mac}, answer: backend.DHCP{MACAddress: other}, mismatch: "MACAddress"},
		{name: "by IP, same IP", req: backend.DHCPRequest{IPAddress: ip}, answer: backend.DHCP{MACAddress: other, IPAddress: ip}},
		{name: "by IP, other IP", req: backend.DHCPRequest{IPAddress: ip}, answer: backend.DHCP{MACAddress: mac, IPAddress: netip.MustParseAddr("198.18.0.11")}, mismatch: "IPAddress"},
		{name: "by IP, no IP in answer", req: backend.DHCPRequest{IPAddress: ip}, answer: backend.DHCP{MACAddress: mac}, mismatch: "IPAddress"},
		{name: "neither", req: backend.DHCPRequest{Traceparent: "x"}, valid: wantErr{"MACAddress", backend.ErrMissing}},
		{name: "both", req: backend.DHCPRequest{MACAddress: mac, IPAddress: ip}, valid: wantErr{"IPAddress", backend.ErrConflict}},
		{name: "IPv6", req: backend.DHCPRequest{IPAddress: netip.IPv6Loopback()}, valid: wantErr{"IPAddress", backend.ErrNotIPv4}},
		{name: "short MAC", req: backend.DHCPRequest{MACAddress: mac[:3]}, valid: wantErr{"MACAddress", backend.ErrBadMAC}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.req.Validate()
			if tt.valid.Field != "" {
				checkErr(t, err, tt.valid)
				// The wire form of an invalid request does not decode either.
				var back backend.DHCPRequest
				checkErr(t, back.UnmarshalJSON(tt.req.AppendJSON(nil)), tt.valid)
				return
			}
			if err != nil {
				t.Fatalf("Validate: %v", err)
			}
			err = tt.req.Match(&tt.answer)
			if tt.mismatch == "" {
				if err != nil {
					t.Fatalf("Match: %v", err)
				}
				return
			}
			checkErr(t, err, wantErr{tt.mismatch, backend.ErrUnexpected})
		})
	}
}

// TestURLVerbatim checks that URL text survives decoding and encoding byte
// for byte, whatever net/url would make of it.
func TestURLVerbatim(t *testing.T) {
	for _, s := range []string{
		"http://198.18.0.1/${mac:hexhyp}.ipxe",
		"http://${next-server}/boot.ipxe",
		"tftp://198.18.0.1:69/${net0/mac}/undionly.kpxe",
		"https://boot.example.test/a%2Fb/c d.ipxe?x=${uuid}&y=%zz",
		"HTTP://198.18.0.1/Auto.IPXE",
		"http://198.18.0.1/${unterminated",
	} {
		t.Run(s, func(t *testing.T) {
			u, err := backend.ParseURL(s)
			if err != nil || string(u) != s || !u.IsValid() {
				t.Fatalf("ParseURL = %q, %v", u, err)
			}
			in := backend.Netboot{IPXEScriptURL: u, OSIE: backend.OSIE{BaseURL: u}, Isoboot: backend.Isoboot{SourceISO: u}}
			raw, err := json.Marshal(in)
			if err != nil {
				t.Fatal(err)
			}
			var out backend.Netboot
			if err := json.Unmarshal(raw, &out); err != nil {
				t.Fatalf("decode %s: %v", raw, err)
			}
			if diff := cmp.Diff(in, out); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
	for _, s := range []string{"/auto.ipxe", "${base}/auto.ipxe", "ftp://h/x", "http://", "http://[::1", "http://198.18.0.1/\x00", "mailto:a@b"} {
		if _, err := backend.ParseURL(s); !errors.Is(err, backend.ErrBadURL) {
			t.Errorf("ParseURL(%q) error = %v, want ErrBadURL", s, err)
		}
	}
	if u, err := backend.ParseURL(""); err != nil || u != "" || u.IsValid() {
		t.Errorf("ParseURL(\"\") = %q, %v", u, err)
	}
	if backend.URLFrom(nil) != "" {
		t.Error("URLFrom(nil) is set")
	}
}
