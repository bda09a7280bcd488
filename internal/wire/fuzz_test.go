package wire

import (
	"bytes"
	"testing"

	"github.com/tinkerbell/backend"
)

// FuzzDecode feeds arbitrary bytes to the envelope decoder: it must never
// panic, and whatever it accepts must re-encode to an event that decodes to
// the same data (decode → encode → decode is stable). The seed corpus in
// testdata/fuzz/FuzzDecode is written from the golden events by -update.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"specversion":"1.0","id":"1","source":"s","type":"org.tinkerbell.dhcp.backend.request","data":{"MACAddress":"52:54:00:66:ea:9a"}}`))
	f.Add([]byte(`{"specversion":"1.0","id":"1","source":"s","type":"org.tinkerbell.dhcp.backend.response","data_base64":"e30="}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		var ids IDs
		if _, req, err := DecodeRequest(in); err == nil {
			enc := AppendRequest(nil, &Attrs{Source: "s", Type: backend.RequestEventType}, &ids, &req)
			_, req2, err := DecodeRequest(enc)
			if err != nil {
				t.Fatalf("re-encoded request %s does not decode: %v", enc, err)
			}
			if !bytes.Equal(req.AppendJSON(nil), req2.AppendJSON(nil)) {
				t.Fatalf("request unstable: %s", enc)
			}
		}
		ev, m, err := DecodeResponse(in)
		if err != nil {
			return
		}
		enc := AppendResponse(nil, &ev.Attrs, &ids, &m)
		ev2, m2, err := DecodeResponse(enc)
		if err != nil {
			t.Fatalf("re-encoded response %s does not decode: %v", enc, err)
		}
		if ev2.ID != ev.ID || ev2.Source != ev.Source || ev2.Traceparent != ev.Traceparent || !ev2.Time.Equal(ev.Time) {
			t.Fatalf("attributes unstable: %+v then %+v", ev.Attrs, ev2.Attrs)
		}
		if !bytes.Equal(m.AppendJSON(nil), m2.AppendJSON(nil)) {
			t.Fatalf("response unstable: %s", enc)
		}
	})
}
