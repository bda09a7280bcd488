package wire

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/tinkerbell/backend"
)

// The benchmarks encode an event and decode it again, once with this
// package and once with cloudevents sdk-go (json.Marshal of an event.Event,
// json.Unmarshal and DataAs), in the same run:
//
//	go test -run XXX -bench . -benchmem ./internal/wire/

func BenchmarkRequestEvent(b *testing.B) {
	req := backend.DHCPRequest{MACAddress: mac("52:54:00:66:ea:9a"), Traceparent: tp}
	b.Run("ours", func(b *testing.B) {
		b.ReportAllocs()
		var ids IDs
		buf := make([]byte, 0, 1024)
		for b.Loop() {
			buf = AppendRequest(buf[:0], &Attrs{Source: "/tinkerbell/dhcp", Type: backend.RequestEventType, Time: time.Now(), Traceparent: tp}, &ids, &req)
			if _, _, err := DecodeRequest(buf); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sdk-go", func(b *testing.B) {
		b.ReportAllocs()
		var ids IDs
		for b.Loop() {
			e := event.New()
			e.SetID(ids.Next())
			e.SetSource("/tinkerbell/dhcp")
			e.SetType(backend.RequestEventType)
			e.SetTime(time.Now())
			e.SetExtension("traceparent", tp)
			if err := e.SetData(event.ApplicationJSON, req); err != nil {
				b.Fatal(err)
			}
			raw, err := json.Marshal(e)
			if err != nil {
				b.Fatal(err)
			}
			var got event.Event
			if err := json.Unmarshal(raw, &got); err != nil {
				b.Fatal(err)
			}
			var r backend.DHCPRequest
			if err := got.DataAs(&r); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkResponseEvent(b *testing.B) {
	m := fullMessage()
	b.Run("ours", func(b *testing.B) {
		b.ReportAllocs()
		var ids IDs
		buf := make([]byte, 0, 2048)
		for b.Loop() {
			buf = AppendResponse(buf[:0], &Attrs{Source: "/tinkerbell/responder", Type: backend.ResponseEventType, Time: time.Now(), Traceparent: tp}, &ids, &m)
			if _, _, err := DecodeResponse(buf); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sdk-go", func(b *testing.B) {
		b.ReportAllocs()
		var ids IDs
		for b.Loop() {
			e := event.New()
			e.SetID(ids.Next())
			e.SetSource("/tinkerbell/responder")
			e.SetType(backend.ResponseEventType)
			e.SetTime(time.Now())
			e.SetExtension("traceparent", tp)
			if err := e.SetData(event.ApplicationJSON, m); err != nil {
				b.Fatal(err)
			}
			raw, err := json.Marshal(e)
			if err != nil {
				b.Fatal(err)
			}
			var got event.Event
			if err := json.Unmarshal(raw, &got); err != nil {
				b.Fatal(err)
			}
			var out backend.Message
			if err := got.DataAs(&out); err != nil {
				b.Fatal(err)
			}
		}
	})
}
