package backend_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

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
		{"bad URL", backend.Message{Netboot: backend.Netboot{IPXEScriptURL: mustURL("mailto:a@b")}}, wantErr{"IPXEScriptURL", backend.ErrBadURL}},
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
