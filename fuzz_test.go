package backend_test

import (
	"bytes"
	"testing"

	"github.com/tinkerbell/backend"
)

// The seed corpus lives in testdata/fuzz (written from the golden inputs by
// go test -update).

func FuzzDHCPRequest(f *testing.F) {
	f.Add([]byte(`{"MACAddress":"52:54:00:66:ea:9a","Traceparent":""}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		var r backend.DHCPRequest
		if err := r.UnmarshalJSON(in); err != nil {
			return
		}
		enc := r.AppendJSON(nil)
		var r2 backend.DHCPRequest
		if err := r2.UnmarshalJSON(enc); err != nil {
			t.Fatalf("canonical form %s does not decode: %v", enc, err)
		}
		if enc2 := r2.AppendJSON(nil); !bytes.Equal(enc, enc2) {
			t.Fatalf("unstable: %s then %s", enc, enc2)
		}
	})
}

func FuzzMessage(f *testing.F) {
	f.Add([]byte(`{"IPAddress":"198.18.0.10","SubnetMask":"255.255.255.0"}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		var m backend.Message
		if err := m.UnmarshalJSON(in); err != nil {
			return
		}
		enc := m.AppendJSON(nil)
		var m2 backend.Message
		if err := m2.UnmarshalJSON(enc); err != nil {
			t.Fatalf("canonical form %s does not decode: %v", enc, err)
		}
		if enc2 := m2.AppendJSON(nil); !bytes.Equal(enc, enc2) {
			t.Fatalf("unstable: %s then %s", enc, enc2)
		}
	})
}
