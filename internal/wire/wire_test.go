package wire

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/go-cmp/cmp"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/internal/jsonx"
	"github.com/tinkerbell/backend/internal/schematest"
)

var update = flag.Bool("update", false, "rewrite golden files and the fuzz seed corpus")

const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

var (
	cmpOpts     = schematest.CmpOpts
	mac         = schematest.MustMAC
	fullMessage = schematest.FullMessage
)

// view is what golden files record of a decoded event.
type view struct {
	ID          string          `json:"id"`
	Source      string          `json:"source"`
	Type        string          `json:"type"`
	Time        string          `json:"time,omitempty"`
	Traceparent string          `json:"traceparent,omitempty"`
	Data        json.RawMessage `json:"data"`
}

func TestGoldenEvents(t *testing.T) {
	files, err := filepath.Glob("../../testdata/event/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden events: %v", err)
	}
	for _, in := range files {
		name := strings.TrimSuffix(filepath.Base(in), ".json")
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			if *update {
				dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				seed := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", raw)
				if err := os.WriteFile(filepath.Join(dir, name), []byte(seed), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			ev, err := Decode(raw, "")
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			v := view{ID: ev.ID, Source: ev.Source, Type: ev.Type, Traceparent: ev.Traceparent}
			if !ev.Time.IsZero() {
				v.Time = ev.Time.Format(time.RFC3339Nano)
			}
			switch ev.Type {
			case backend.RequestEventType:
				_, req, err := DecodeRequest(raw)
				if err != nil {
					t.Fatalf("decode request: %v", err)
				}
				v.Data = req.AppendJSON(nil)
			case backend.ResponseEventType:
				_, m, err := DecodeResponse(raw)
				if err != nil {
					t.Fatalf("decode response: %v", err)
				}
				v.Data = m.AppendJSON(nil)
			default:
				t.Fatalf("unexpected type %q", ev.Type)
			}
			got, err := json.MarshalIndent(v, "", "    ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			schematest.Golden(t, strings.TrimSuffix(in, ".json")+".golden", got, *update)
		})
	}
}

func TestEncodeIsCanonical(t *testing.T) {
	var ids IDs
	m := fullMessage()
	at := time.Date(2026, 11, 23, 15, 31, 0, 0, time.UTC)
	got := AppendResponse(nil, &Attrs{ID: "A234-1234-1234", Source: "/tinkerbell/responder", Type: backend.ResponseEventType, Time: at, Traceparent: tp}, &ids, &m)
	want := `{"specversion":"1.0","id":"A234-1234-1234","source":"/tinkerbell/responder","type":"org.tinkerbell.dhcp.backend.response","time":"2026-11-23T15:31:00Z","datacontenttype":"application/json","traceparent":"` + tp + `","data":` + string(m.AppendJSON(nil)) + `}`
	if diff := cmp.Diff(want, string(got)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	// It is the golden file, modulo white space.
	golden, err := os.ReadFile("../../testdata/event/response.json")
	if err != nil {
		t.Fatal(err)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, golden); err != nil {
		t.Fatal(err)
	}
	if compact.String() != string(got) {
		t.Errorf("encoder output differs from testdata/event/response.json:\n got %s\nwant %s", got, compact.String())
	}
}

func TestIDsAreUnique(t *testing.T) {
	var a, b IDs
	seen := map[string]bool{}
	for range 1000 {
		for _, id := range []string{a.Next(), b.Next()} {
			if seen[id] {
				t.Fatalf("duplicate id %q", id)
			}
			seen[id] = true
		}
	}
}

// TestSDKAcceptsOurEvents checks every event we encode against
// cloudevents sdk-go: it validates, and has the same attributes and data.
func TestSDKAcceptsOurEvents(t *testing.T) {
	var ids IDs
	at := time.Date(2026, 11, 23, 15, 31, 0, 123456789, time.UTC)
	req := backend.DHCPRequest{MACAddress: mac("52:54:00:66:ea:9a"), Traceparent: tp}
	full := fullMessage()
	notFound := backend.Message{Error: backend.StatusOf(backend.ErrNotFound)}
	weird := backend.Message{DHCP: backend.DHCP{Hostname: "h\"\\\n\u00e9\x01"}, Error: backend.Status{Code: 500, Message: "<&>"}}
	tests := []struct {
		name  string
		attrs Attrs
		enc   func(*Attrs) []byte
		check func(t *testing.T, e *event.Event)
	}{
		{"request", Attrs{Source: "/tinkerbell/dhcp", Type: backend.RequestEventType, Time: at, Traceparent: tp},
			func(a *Attrs) []byte { return AppendRequest(nil, a, &ids, &req) },
			func(t *testing.T, e *event.Event) {
				var got backend.DHCPRequest
				if err := e.DataAs(&got); err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(req, got, cmpOpts); diff != "" {
					t.Errorf("data (-want +got):\n%s", diff)
				}
			}},
		{"request without time or traceparent", Attrs{Source: "s", Type: backend.RequestEventType},
			func(a *Attrs) []byte {
				return AppendRequest(nil, a, &ids, &backend.DHCPRequest{MACAddress: req.MACAddress})
			}, nil},
		{"full response", Attrs{Source: "/tinkerbell/responder", Type: backend.ResponseEventType, Time: at, Traceparent: tp},
			func(a *Attrs) []byte { return AppendResponse(nil, a, &ids, &full) },
			func(t *testing.T, e *event.Event) {
				var got backend.Message
				if err := e.DataAs(&got); err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(full, got, cmpOpts); diff != "" {
					t.Errorf("data (-want +got):\n%s", diff)
				}
			}},
		{"not found", Attrs{Source: "r", Type: backend.ResponseEventType, Time: at},
			func(a *Attrs) []byte { return AppendResponse(nil, a, &ids, &notFound) }, nil},
		{"escapes", Attrs{ID: "id \"1\"\\", Source: "/r?x=%22", Type: backend.ResponseEventType, Time: at},
			func(a *Attrs) []byte { return AppendResponse(nil, a, &ids, &weird) },
			func(t *testing.T, e *event.Event) {
				var got backend.Message
				if err := e.DataAs(&got); err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(weird, got, cmpOpts); diff != "" {
					t.Errorf("data (-want +got):\n%s", diff)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := tt.enc(&tt.attrs)
			if !json.Valid(raw) {
				t.Fatalf("not valid JSON: %s", raw)
			}
			var e event.Event
			if err := json.Unmarshal(raw, &e); err != nil {
				t.Fatalf("sdk-go cannot decode %s: %v", raw, err)
			}
			if err := e.Validate(); err != nil {
				t.Fatalf("sdk-go Validate: %v", err)
			}
			ours, err := Decode(raw, tt.attrs.Type)
			if err != nil {
				t.Fatalf("our decode: %v", err)
			}
			if tt.attrs.ID != "" && ours.ID != tt.attrs.ID {
				t.Errorf("id = %q, want %q", ours.ID, tt.attrs.ID)
			}
			if e.ID() != ours.ID || e.Source() != ours.Source || e.Type() != ours.Type || e.SpecVersion() != "1.0" ||
				e.DataContentType() != "application/json" || !e.Time().Equal(ours.Time) || !ours.Time.Equal(tt.attrs.Time) {
				t.Errorf("attributes differ: sdk %v\nours %+v", e.Context, ours.Attrs)
			}
			tpExt, _ := e.Extensions()["traceparent"].(string)
			if tpExt != tt.attrs.Traceparent || ours.Traceparent != tt.attrs.Traceparent {
				t.Errorf("traceparent: sdk %q ours %q want %q", tpExt, ours.Traceparent, tt.attrs.Traceparent)
			}
			if !bytes.Equal(e.Data(), ours.Data) {
				t.Errorf("data differs:\n sdk %s\nours %s", e.Data(), ours.Data)
			}
			if tt.check != nil {
				tt.check(t, &e)
			}
		})
	}
}

// TestWeDecodeSDKEvents checks that events made by sdk-go, in the ways a
// Go responder would make them, decode with our codec.
func TestWeDecodeSDKEvents(t *testing.T) {
	full := fullMessage()
	fullJSON := full.AppendJSON(nil)
	mk := func(f func(e *event.Event)) []byte {
		e := event.New()
		e.SetID("sdk-1")
		e.SetSource("/sdk/responder")
		e.SetType(backend.ResponseEventType)
		e.SetTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600)))
		f(&e)
		raw, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	tests := []struct {
		name string
		raw  []byte
	}{
		{"SetData struct", mk(func(e *event.Event) {
			if err := e.SetData(event.ApplicationJSON, full); err != nil {
				t.Fatal(err)
			}
			e.SetExtension("traceparent", tp)
		})},
		{"SetData raw bytes", mk(func(e *event.Event) { _ = e.SetData(event.ApplicationJSON, fullJSON) })},
		{"text/json", mk(func(e *event.Event) { _ = e.SetData("text/json", fullJSON) })},
		{"base64 data", mk(func(e *event.Event) {
			_ = e.SetData(event.ApplicationJSON, fullJSON)
			e.DataBase64 = true
		})},
		{"extensions and subject", mk(func(e *event.Event) {
			_ = e.SetData(event.ApplicationJSON, full)
			e.SetSubject("52:54:00:66:ea:9a")
			e.SetExtension("comexampleothervalue", 5)
			e.SetDataSchema("https://example.test/schema.json")
		})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, m, err := DecodeResponse(tt.raw)
			if err != nil {
				t.Fatalf("decode %s: %v", tt.raw, err)
			}
			if ev.ID != "sdk-1" || ev.Source != "/sdk/responder" || !ev.Time.Equal(time.Date(2026, 1, 2, 2, 4, 5, 0, time.UTC)) {
				t.Errorf("attributes = %+v", ev.Attrs)
			}
			if diff := cmp.Diff(full, m, cmpOpts); diff != "" {
				t.Errorf("data (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	good := func(mod func(map[string]any)) []byte {
		e := map[string]any{
			"specversion": "1.0", "id": "1", "source": "/s", "type": backend.ResponseEventType,
			"datacontenttype": "application/json", "data": map[string]any{"IPAddress": "198.18.0.10"},
		}
		mod(e)
		b, err := json.Marshal(e)
		if err != nil {
			panic(err)
		}
		return b
	}
	type want struct {
		field  string // "" for a *backend.SyntaxError
		reason error
	}
	tests := []struct {
		name string
		in   []byte
		want want
	}{
		{"empty", nil, want{}},
		{"garbage", []byte("\x00\xff garbage"), want{}},
		{"JSON array", []byte(`[1,2]`), want{}},
		{"truncated", good(func(map[string]any) {})[:40], want{}},
		{"trailing garbage", append(good(func(map[string]any) {}), "}"...), want{}},
		{"plain JSON object, not an event", []byte(`{"IPAddress":"198.18.0.10"}`), want{"specversion", backend.ErrMissing}},
		{"missing specversion", good(func(e map[string]any) { delete(e, "specversion") }), want{"specversion", backend.ErrMissing}},
		{"specversion 0.3", good(func(e map[string]any) { e["specversion"] = "0.3" }), want{"specversion", backend.ErrUnexpected}},
		{"specversion number", good(func(e map[string]any) { e["specversion"] = 1.0 }), want{"specversion", backend.ErrWrongType}},
		{"missing id", good(func(e map[string]any) { delete(e, "id") }), want{"id", backend.ErrMissing}},
		{"empty id", good(func(e map[string]any) { e["id"] = "" }), want{"id", backend.ErrMissing}},
		{"id number", good(func(e map[string]any) { e["id"] = 7 }), want{"id", backend.ErrWrongType}},
		{"missing source", good(func(e map[string]any) { delete(e, "source") }), want{"source", backend.ErrMissing}},
		{"missing type", good(func(e map[string]any) { delete(e, "type") }), want{"type", backend.ErrMissing}},
		{"wrong type", good(func(e map[string]any) { e["type"] = backend.RequestEventType }), want{"type", backend.ErrUnexpected}},
		{"content type xml", good(func(e map[string]any) { e["datacontenttype"] = "application/xml" }), want{"datacontenttype", backend.ErrUnexpected}},
		{"content type number", good(func(e map[string]any) { e["datacontenttype"] = 1 }), want{"datacontenttype", backend.ErrWrongType}},
		{"bad time", good(func(e map[string]any) { e["time"] = "yesterday" }), want{"time", nil}},
		{"traceparent number", good(func(e map[string]any) { e["traceparent"] = 1 }), want{"traceparent", backend.ErrWrongType}},
		{"missing data", good(func(e map[string]any) { delete(e, "data") }), want{"data", backend.ErrMissing}},
		{"null data", good(func(e map[string]any) { e["data"] = nil }), want{"data", backend.ErrMissing}},
		{"data array", good(func(e map[string]any) { e["data"] = []int{1} }), want{"data", nil}},
		{"data number", good(func(e map[string]any) { e["data"] = 1 }), want{"data", nil}},
		{"data string not JSON", good(func(e map[string]any) { e["data"] = "hello" }), want{"data", nil}},
		{"data and data_base64", good(func(e map[string]any) { e["data_base64"] = "e30=" }), want{"data_base64", nil}},
		{"data_base64 invalid", good(func(e map[string]any) { delete(e, "data"); e["data_base64"] = "!!!" }), want{"data_base64", nil}},
		{"data_base64 not an object", good(func(e map[string]any) {
			delete(e, "data")
			e["data_base64"] = base64.StdEncoding.EncodeToString([]byte("[]"))
		}), want{"data", nil}},
		{"invalid data field", good(func(e map[string]any) { e["data"] = map[string]any{"IPAddress": "::1"} }), want{"data.IPAddress", backend.ErrNotIPv4}},
		{"malformed data string", good(func(e map[string]any) { e["data"] = `{"IPAddress":` }), want{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := DecodeResponse(tt.in)
			if err == nil {
				t.Fatalf("decoded %s without error", tt.in)
			}
			if !errors.Is(err, backend.ErrInvalidMessage) {
				t.Fatalf("error %v does not match ErrInvalidMessage", err)
			}
			if tt.want.field == "" {
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
			if fe.Field != tt.want.field {
				t.Errorf("field = %q, want %q (%v)", fe.Field, tt.want.field, err)
			}
			if tt.want.reason != nil && !errors.Is(err, tt.want.reason) {
				t.Errorf("error %v does not match %v", err, tt.want.reason)
			}
		})
	}
}

func TestDecodeTooLarge(t *testing.T) {
	big := []byte(`{"specversion":"1.0","id":"1","source":"s","type":"` + backend.ResponseEventType + `","data":{"Hostname":"` + strings.Repeat("a", backend.MaxEventSize) + `"}}`)
	_, err := Decode(big, "")
	if !errors.Is(err, backend.ErrTooLarge) || !errors.Is(err, backend.ErrInvalidMessage) {
		t.Fatalf("error = %v, want ErrTooLarge", err)
	}
}

func TestDecodeRequestRejectsBadMAC(t *testing.T) {
	raw := []byte(`{"specversion":"1.0","id":"1","source":"s","type":"` + backend.RequestEventType + `","data":{"MACAddress":"nope"}}`)
	_, _, err := DecodeRequest(raw)
	var fe *backend.FieldError
	if !errors.As(err, &fe) || fe.Field != "data.MACAddress" || !errors.Is(err, backend.ErrBadMAC) {
		t.Fatalf("error = %v, want FieldError data.MACAddress", err)
	}
	_, _, err = DecodeRequest([]byte(`{"specversion":"1.0","id":"1","source":"s","type":"` + backend.ResponseEventType + `","data":{}}`))
	if !errors.As(err, &fe) || fe.Field != "type" {
		t.Fatalf("error = %v, want FieldError type", err)
	}
}

func TestSubject(t *testing.T) {
	tests := []struct{ prefix, subject, want string }{
		{"", "", backend.DefaultSubject},
		{"site-a", "", "site-a." + backend.DefaultSubject},
		{"site-a.", "x.y", "site-a.x.y"},
		{"", "custom", "custom"},
	}
	for _, tt := range tests {
		if got := backend.Subject(tt.prefix, tt.subject); got != tt.want {
			t.Errorf("Subject(%q, %q) = %q, want %q", tt.prefix, tt.subject, got, tt.want)
		}
	}
	for s, ok := range map[string]bool{"a.b": true, "": false, "a..b": false, "a.*": false, "a.>": false, "a b": false, ".a": false} {
		if ValidSubject(s) != ok {
			t.Errorf("ValidSubject(%q) = %v", s, !ok)
		}
	}
}

func TestValidSource(t *testing.T) {
	for s, ok := range map[string]bool{"/tinkerbell/dhcp": true, "urn:tinkerbell:dhcp": true, "https://a.test/x": true, "": false, "r\\x": false, "a b": false} {
		if ValidSource(s) != ok {
			t.Errorf("ValidSource(%q) = %v", s, !ok)
		}
	}
}

// TestDecodeDataStrictly: finding the data object fast must not make the
// decoders accept what parsing it strictly (with [jsonx.Decoder.Raw])
// rejects: a malformed data object replaced by a later duplicate key, or a
// data object nested deeper than [jsonx.MaxDepth]. Decode itself, which
// does not decode the data, still rejects malformed data.
func TestDecodeDataStrictly(t *testing.T) {
	event := func(typ, data string) []byte {
		return []byte(`{"specversion":"1.0","id":"1","source":"/s","type":"` + typ + `",` + data + `}`)
	}
	nested := func(n int) string { return `{"x":` + strings.Repeat("[", n) + strings.Repeat("]", n) + `}` }
	withMAC := func(obj string) string { return obj[:len(obj)-1] + `,"MACAddress":"52:54:00:66:ea:9a"}` }
	const reqData = `{"MACAddress":"52:54:00:66:ea:9a"}`
	const respData = `{"IPAddress":"198.18.0.10"}`
	tests := []struct {
		name       string
		req, resp  string // the data members of a request and of a response
		wantSyntax bool   // rejected as a *backend.SyntaxError, else accepted
	}{
		{"duplicate data", `"data":{},"data":` + reqData, `"data":{},"data":` + respData, false},
		{"malformed data replaced", `"data":{"a":tru},"data":` + reqData, `"data":{"a":tru},"data":` + respData, true},
		{"malformed string replaced", "\"data\":{\"a\":\"\x01\"},\"data\":" + reqData, "\"data\":{\"a\":\"\x01\"},\"data\":" + respData, true},
		{"mismatched brackets replaced", `"data":{"a":[}],"data":` + reqData, `"data":{"a":[}],"data":` + respData, true},
		{"data replaced by a string", `"data":{"a":tru},"data":` + strconv.Quote(reqData), `"data":{"a":tru},"data":` + strconv.Quote(respData), true},
		{"nested to the limit", `"data":` + withMAC(nested(jsonx.MaxDepth)), `"data":` + nested(jsonx.MaxDepth), false},
		{"nested too deep", `"data":` + withMAC(nested(jsonx.MaxDepth+1)), `"data":` + nested(jsonx.MaxDepth+1), true},
		{"nested too deep a level down", `"data":` + withMAC(`{"y":`+nested(jsonx.MaxDepth)+`}`), `"data":{"DHCP":` + nested(jsonx.MaxDepth) + `}`, true},
	}
	check := func(t *testing.T, what string, err error, wantSyntax bool) {
		t.Helper()
		var se *backend.SyntaxError
		switch {
		case !wantSyntax && err != nil:
			t.Errorf("%s: %v", what, err)
		case wantSyntax && !errors.As(err, &se):
			t.Errorf("%s: error %v (%T), want a *backend.SyntaxError", what, err, err)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := DecodeRequest(event(backend.RequestEventType, tt.req))
			check(t, "DecodeRequest", err, tt.wantSyntax)
			_, _, err = DecodeResponse(event(backend.ResponseEventType, tt.resp))
			check(t, "DecodeResponse", err, tt.wantSyntax)
			_, err = Decode(event(backend.ResponseEventType, tt.resp), "")
			check(t, "Decode", err, tt.wantSyntax)
		})
	}
	// Decode does not look into the data, but it does check it is JSON.
	_, err := Decode(event(backend.ResponseEventType, `"data":{"a":tru}`), "")
	check(t, "Decode of malformed data", err, true)
}
