package nats_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"

	"github.com/tinkerbell/backend"
	natsbackend "github.com/tinkerbell/backend/nats"
)

// The two response data examples of the seed's README, verbatim.
const (
	seedFlat = `{
    "MACAddress":null,
    "IPAddress":"192.168.2.3",
    "SubnetMask":null,
    "DefaultGateway":"",
    "NameServers":null,
    "Hostname":"",
    "DomainName":"",
    "BroadcastAddress":"",
    "NTPServers":null,
    "LeaseTime":0,
    "DomainSearch":null,
    "AllowNetboot":false,
    "IPXEScriptURL":null,
    "Error": {
        "Code":0,
        "Message":""
    }
}`
	seedNested = `{
    "DHCP": {
        "MACAddress":"",
        "IPAddress":"",
        "SubnetMask":"",
        "DefaultGateway":"",
        "NameServers": [],
        "Hostname":"",
        "DomainName":"",
        "BroadcastAddress":"",
        "NTPServers": [],
        "LeaseTime":0,
        "DomainSearch": []
    },
    "Netboot": {
        "AllowNetboot":false,
        "IPXEScriptURL":""
    },
    "Error": {
        "Code":0,
        "Message":""
    }
}`
)

// seedEnvelope wraps data (raw JSON) in an envelope shaped like the seed's
// CloudEvent example: extra attributes and extensions included.
func seedEnvelope(data string) []byte {
	return []byte(`{
    "specversion" : "1.0",
    "type" : "` + backend.ResponseEventType + `",
    "source" : "https://github.com/cloudevents/spec/pull",
    "subject" : "123",
    "id" : "A234-1234-1234",
    "time" : "2018-04-05T17:31:00Z",
    "comexampleextension1" : "value",
    "comexampleothervalue" : 5,
    "datacontenttype" : "application/json",
    "data" : ` + data + `
}`)
}

// Types as a responder written naively against the seed's Go structs would
// declare them: encoding/json writes the MAC address and the mask in
// base64 and the URL as an object. The seed tags the embedded structs
// `json:",inline"`, which encoding/json ignores; seedMessage nests Error,
// as the seed's JSON examples show, seedMessageInline does as the seed's
// Go code does.
type (
	seedDHCP struct {
		MACAddress       net.HardwareAddr
		IPAddress        netip.Addr
		SubnetMask       net.IPMask
		DefaultGateway   netip.Addr
		NameServers      []net.IP
		Hostname         string
		DomainName       string
		BroadcastAddress netip.Addr
		NTPServers       []net.IP
		LeaseTime        uint32
		DomainSearch     []string
	}
	seedNetboot struct {
		AllowNetboot  bool
		IPXEScriptURL *url.URL
	}
	seedError struct {
		Code    int
		Message string
	}
	seedMessage struct {
		seedDHCP
		seedNetboot
		Error seedError
	}
	// seedMessageInline embeds Error too, exactly as the seed declares it:
	// Code and Message come out flat at the top level.
	seedMessageInline struct {
		seedDHCP    `json:",inline"`
		seedNetboot `json:",inline"`
		seedError   `json:",inline"`
	}
)

func naiveSeedMessage(m backend.Message) seedMessage {
	ips := func(as []netip.Addr) []net.IP {
		var out []net.IP
		for _, a := range as {
			out = append(out, net.IP(a.AsSlice()))
		}
		return out
	}
	return seedMessage{
		seedDHCP: seedDHCP{
			MACAddress:       m.MACAddress,
			IPAddress:        m.IPAddress,
			SubnetMask:       net.CIDRMask(m.SubnetMask.Bits(), 32),
			DefaultGateway:   m.DefaultGateway,
			NameServers:      ips(m.NameServers),
			Hostname:         m.Hostname,
			DomainName:       m.DomainName,
			BroadcastAddress: m.BroadcastAddress,
			NTPServers:       ips(m.NTPServers),
			LeaseTime:        m.LeaseTime,
			DomainSearch:     m.DomainSearch,
		},
		seedNetboot: seedNetboot{AllowNetboot: m.AllowNetboot, IPXEScriptURL: mustParseURL(m.IPXEScriptURL.String())},
		Error:       seedError{Code: m.Error.Code, Message: m.Error.Message},
	}
}

// sdkEvent builds a response event with the CloudEvents Go SDK.
func sdkEvent(t *testing.T, data any) []byte {
	t.Helper()
	e := event.New()
	e.SetID("sdk-1")
	e.SetSource("/test/sdk-go")
	e.SetType(backend.ResponseEventType)
	if err := e.SetData(event.ApplicationJSON, data); err != nil {
		t.Fatalf("SetData: %v", err)
	}
	if err := e.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatalf("marshal event: %v", err)
	}
	return b
}

// wantErr describes an expected error.
type wantErr struct {
	is     []error              // errors.Is(err, x) for each
	isNot  []error              // !errors.Is(err, x) for each
	remote *backend.RemoteError // errors.As gives an equal value
	field  string               // errors.As gives a *FieldError for this field
	text   string               // err.Error() contains it
}

func (w *wantErr) check(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("Lookup: no error, want one")
	}
	for _, target := range w.is {
		if !errors.Is(err, target) {
			t.Errorf("errors.Is(%q, %v) = false, want true", err, target)
		}
	}
	for _, target := range w.isNot {
		if errors.Is(err, target) {
			t.Errorf("errors.Is(%q, %v) = true, want false", err, target)
		}
	}
	if w.remote != nil {
		var re *backend.RemoteError
		if !errors.As(err, &re) {
			t.Errorf("errors.As(%q, *RemoteError) = false", err)
		} else if diff := cmp.Diff(w.remote, re); diff != "" {
			t.Errorf("RemoteError (-want +got):\n%s", diff)
		}
	}
	if w.field != "" {
		var fe *backend.FieldError
		if !errors.As(err, &fe) {
			t.Errorf("errors.As(%q, *FieldError) = false", err)
		} else if fe.Field != w.field {
			t.Errorf("FieldError.Field = %q, want %q (%v)", fe.Field, w.field, err)
		}
	}
	if !strings.Contains(err.Error(), w.text) {
		t.Errorf("error %q does not contain %q", err, w.text)
	}
}

func TestLookupReplies(t *testing.T) {
	full := fullMessage(testMAC)
	canonical := responseEvent(full)
	withCode := func(code int, msg string) backend.Message {
		return backend.Message{Error: backend.Status{Code: code, Message: msg}}
	}
	errHeaders := func(code, text string) *nats.Msg {
		h := nats.Header{}
		if code != "" {
			h.Set(backend.HeaderServiceErrorCode, code)
		}
		if text != "" {
			h.Set(backend.HeaderServiceError, text)
		}
		return &nats.Msg{Header: h}
	}
	// An event otherwise valid whose attribute key is replaced.
	modified := func(old, repl string) []byte {
		if !bytes.Contains(canonical, []byte(old)) {
			panic("fixture does not contain " + old)
		}
		return bytes.Replace(canonical, []byte(old), []byte(repl), 1)
	}
	canonData := full.AppendJSON(nil)
	big := responseEvent(func() backend.Message {
		m := full
		for range 2000 {
			m.DomainSearch = append(m.DomainSearch, "a-rather-long-label.example.test")
		}
		return m
	}())

	tests := []struct {
		name  string
		reply *nats.Msg
		want  result   // when err is nil
		err   *wantErr // expected error
	}{
		{
			name:  "seed flat",
			reply: reply(seedEnvelope(seedFlat)),
			want:  result{DHCP: backend.DHCP{IPAddress: netip.MustParseAddr("192.168.2.3")}},
		},
		{
			name:  "seed nested",
			reply: reply(seedEnvelope(seedNested)),
		},
		{
			name:  "seed flat in a data string",
			reply: reply(seedEnvelope(strconv.Quote(seedFlat))),
			want:  result{DHCP: backend.DHCP{IPAddress: netip.MustParseAddr("192.168.2.3")}},
		},
		{
			name:  "canonical",
			reply: reply(canonical),
			want:  result{full.DHCP, full.Netboot},
		},
		{
			name:  "sdk-go with backend.Message",
			reply: reply(sdkEvent(t, full)),
			want:  result{full.DHCP, full.Netboot},
		},
		{
			name:  "sdk-go with naive seed structs",
			reply: reply(sdkEvent(t, naiveSeedMessage(full))),
			want:  result{full.DHCP, full.Netboot},
		},
		{
			name: "sdk-go with the seed's inline structs",
			reply: reply(sdkEvent(t, func() seedMessageInline {
				m := naiveSeedMessage(full)
				return seedMessageInline{m.seedDHCP, m.seedNetboot, m.Error}
			}())),
			want: result{full.DHCP, full.Netboot},
		},
		{
			name:  "sdk-go with the seed's inline structs, not found",
			reply: reply(sdkEvent(t, seedMessageInline{seedError: seedError{Code: 404, Message: "unknown MAC"}})),
			err: &wantErr{
				is:     []error{backend.ErrNotFound},
				remote: &backend.RemoteError{Code: 404, Message: "unknown MAC"},
			},
		},
		{
			name:  "data as string",
			reply: reply(modified(`"data":`+string(canonData), `"data":`+strconv.Quote(string(canonData)))),
			want:  result{full.DHCP, full.Netboot},
		},
		{
			name:  "data_base64",
			reply: reply(modified(`"data":`+string(canonData), `"data_base64":"`+base64.StdEncoding.EncodeToString(canonData)+`"`)),
			want:  result{full.DHCP, full.Netboot},
		},
		{
			name:  "no headers",
			reply: &nats.Msg{Data: canonical},
			want:  result{full.DHCP, full.Netboot},
		},
		{
			name:  "not found",
			reply: reply(responseEvent(withCode(404, "no such host"))),
			err: &wantErr{
				is:     []error{backend.ErrNotFound},
				isNot:  []error{backend.ErrUnavailable, backend.ErrInvalidMessage, backend.ErrNoBackend},
				remote: &backend.RemoteError{Code: 404, Message: "no such host"},
			},
		},
		{
			name:  "code 400",
			reply: reply(responseEvent(withCode(400, "bad MAC"))),
			err: &wantErr{
				is:     []error{backend.ErrInvalidMessage},
				isNot:  []error{backend.ErrNotFound, backend.ErrUnavailable},
				remote: &backend.RemoteError{Code: 400, Message: "bad MAC"},
			},
		},
		{
			name:  "code 500",
			reply: reply(responseEvent(withCode(500, "database on fire"))),
			err: &wantErr{
				isNot:  []error{backend.ErrNotFound, backend.ErrUnavailable, backend.ErrInvalidMessage, backend.ErrNoBackend},
				remote: &backend.RemoteError{Code: 500, Message: "database on fire"},
			},
		},
		{
			name:  "code 503",
			reply: reply(responseEvent(withCode(503, "maintenance"))),
			err: &wantErr{
				is:     []error{backend.ErrUnavailable},
				isNot:  []error{backend.ErrNotFound, backend.ErrInvalidMessage},
				remote: &backend.RemoteError{Code: 503, Message: "maintenance"},
			},
		},
		{
			name:  "other code",
			reply: reply(responseEvent(withCode(418, "teapot"))),
			err: &wantErr{
				isNot:  []error{backend.ErrNotFound, backend.ErrUnavailable, backend.ErrInvalidMessage},
				remote: &backend.RemoteError{Code: 418, Message: "teapot"},
			},
		},
		{
			name:  "error code in the seed's flat form",
			reply: reply(seedEnvelope(strings.Replace(seedFlat, `"Code":0`, `"Code":404`, 1))),
			err:   &wantErr{is: []error{backend.ErrNotFound}, remote: &backend.RemoteError{Code: 404}},
		},
		{
			name:  "micro error headers only",
			reply: errHeaders("404", "no reservation"),
			err:   &wantErr{is: []error{backend.ErrNotFound}, remote: &backend.RemoteError{Code: 404, Message: "no reservation"}},
		},
		{
			name:  "micro error headers 503",
			reply: errHeaders("503", "down"),
			err:   &wantErr{is: []error{backend.ErrUnavailable}, remote: &backend.RemoteError{Code: 503, Message: "down"}},
		},
		{
			name:  "micro error text without code",
			reply: errHeaders("", "it broke"),
			err:   &wantErr{remote: &backend.RemoteError{Code: 500, Message: "it broke"}},
		},
		{
			name:  "micro error code that is not a number",
			reply: errHeaders("nope", "it broke"),
			err:   &wantErr{remote: &backend.RemoteError{Code: 500, Message: "it broke"}},
		},
		{
			name:  "micro error code 0",
			reply: errHeaders("0", ""),
			err:   &wantErr{remote: &backend.RemoteError{Code: 500}},
		},
		{
			name: "micro error headers with a text body",
			reply: func() *nats.Msg {
				m := errHeaders("503", "overloaded")
				m.Data = []byte("overloaded, try later")
				return m
			}(),
			err: &wantErr{is: []error{backend.ErrUnavailable}, remote: &backend.RemoteError{Code: 503, Message: "overloaded"}},
		},
		{
			name: "micro error headers beside an event",
			reply: func() *nats.Msg {
				m := errHeaders("404", "no reservation")
				m.Data = responseEvent(withCode(404, "no reservation for 52:54:00:66:ea:9a"))
				return m
			}(),
			err: &wantErr{is: []error{backend.ErrNotFound}, remote: &backend.RemoteError{Code: 404, Message: "no reservation for 52:54:00:66:ea:9a"}},
		},
		{
			name:  "garbage",
			reply: reply([]byte("\x00\xffgarbage\x01")),
			err:   &wantErr{is: []error{backend.ErrInvalidMessage}, isNot: []error{backend.ErrNotFound}, text: `"\x00\xffgarbage\x01"`},
		},
		{
			name:  "empty body",
			reply: reply(nil),
			err:   &wantErr{is: []error{backend.ErrInvalidMessage}},
		},
		{
			name:  "JSON that is not a CloudEvent",
			reply: reply([]byte(`{"hello":"world"}`)),
			err:   &wantErr{is: []error{backend.ErrInvalidMessage}, field: "specversion", text: `{\"hello\":\"world\"}`},
		},
		{
			name:  "JSON array",
			reply: reply([]byte(`[1,2,3]`)),
			err:   &wantErr{is: []error{backend.ErrInvalidMessage}},
		},
		{
			name:  "truncated event",
			reply: reply(canonical[:len(canonical)/2]),
			err:   &wantErr{is: []error{backend.ErrInvalidMessage}},
		},
		{
			name:  "wrong specversion",
			reply: reply(modified(`"specversion":"1.0"`, `"specversion":"0.3"`)),
			err:   &wantErr{is: []error{backend.ErrInvalidMessage}, field: "specversion"},
		},
		{
			name:  "missing id",
			reply: reply(modified(`"id":`, `"xid":`)),
			err:   &wantErr{is: []error{backend.ErrInvalidMessage}, field: "id"},
		},
		{
			name:  "wrong type",
			reply: reply(modified(backend.ResponseEventType, "com.example.other")),
			err:   &wantErr{is: []error{backend.ErrInvalidMessage}, field: "type"},
		},
		{
			name:  "request type",
			reply: reply(modified(backend.ResponseEventType, backend.RequestEventType)),
			err:   &wantErr{is: []error{backend.ErrInvalidMessage}, field: "type"},
		},
		{
			name:  "wrong datacontenttype",
			reply: reply(modified(`"datacontenttype":"application/json"`, `"datacontenttype":"text/plain"`)),
			err:   &wantErr{is: []error{backend.ErrInvalidMessage}, field: "datacontenttype"},
		},
		{
			name:  "no data",
			reply: reply(modified(`"data":`, `"xdata":`)),
			err:   &wantErr{is: []error{backend.ErrInvalidMessage}, field: "data"},
		},
		{
			name:  "data_base64 not base64",
			reply: reply(modified(`"data":`+string(canonData), `"data_base64":"!!!"`)),
			err:   &wantErr{is: []error{backend.ErrInvalidMessage}, field: "data_base64"},
		},
		{
			name:  "invalid address in data",
			reply: reply(modified(`"IPAddress":"198.18.0.10"`, `"IPAddress":"not-an-ip"`)),
			err:   &wantErr{is: []error{backend.ErrInvalidMessage}, field: "data.IPAddress"},
		},
		{
			name:  "IPv6 address in data",
			reply: reply(modified(`"IPAddress":"198.18.0.10"`, `"IPAddress":"2001:db8::1"`)),
			err:   &wantErr{is: []error{backend.ErrInvalidMessage}, field: "data.IPAddress"},
		},
		{
			name:  "answer for another MAC",
			reply: reply(responseEvent(fullMessage(net.HardwareAddr{2, 0, 0, 0, 0, 1}))),
			err:   &wantErr{is: []error{backend.ErrInvalidMessage}, field: "data.MACAddress", text: "02:00:00:00:00:01"},
		},
		{
			name:  "larger than the limit",
			reply: reply(big),
			err: &wantErr{
				is:   []error{backend.ErrTooLarge, backend.ErrInvalidMessage},
				text: "(" + strconv.Itoa(len(big)) + " bytes)",
			},
		},
	}
	if len(big) <= backend.MaxEventSize {
		t.Fatalf("big fixture has %d bytes, not over the limit %d", len(big), backend.MaxEventSize)
	}

	env := newEnv(t)
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			subject := "test.replies." + strconv.Itoa(i)
			var requests atomicCounter
			respond(t, env.resp, subject, func(*nats.Msg) *nats.Msg {
				requests.add()
				return tc.reply
			})
			b := newBackend(t, env.req, natsbackend.Config{Subject: subject, Timeout: 200 * time.Millisecond})
			d, n, err := b.Lookup(t.Context(), backend.DHCPRequest{MACAddress: testMAC})
			if tc.err != nil {
				tc.err.check(t, err)
			} else if err != nil {
				t.Fatalf("Lookup: %v", err)
			} else if diff := cmp.Diff(tc.want, result{d, n}, cmpOpts); diff != "" {
				t.Errorf("Lookup (-want +got):\n%s", diff)
			}
			// A reply is final, whatever it says, except 503: that one
			// replica cannot serve now, and each attempt asks again.
			// An answer for another client is rejected, and the request
			// sent again while time lasts.
			want := int64(1)
			var re *backend.RemoteError
			var fe *backend.FieldError
			switch {
			case errors.As(err, &re) && re.Code == backend.CodeUnavailable:
				want = natsbackend.DefaultMaxAttempts
			case errors.As(err, &fe) && fe.Field == "data.MACAddress":
				if got := requests.load(); got < 2 {
					t.Errorf("responder got %d requests, want more than 1", got)
				}
				return
			}
			if got := requests.load(); got != want {
				t.Errorf("responder got %d requests, want %d", got, want)
			}
		})
	}
}

// mustParseURL parses s as the seed's *url.URL; "" is nil.
func mustParseURL(s string) *url.URL {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}
