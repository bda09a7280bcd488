package nats_test

import (
	"context"
	"encoding/json"
	"runtime"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/internal/natstest"
	"github.com/tinkerbell/backend/internal/wire"
	natsbackend "github.com/tinkerbell/backend/nats"
)

// The benchmarks compare a lookup with two baselines in the same run,
// against the same echo responder (a plain subscription that replies with a
// fixed, full response event):
//
//   - raw: nc.Request with the bytes of a request event, no decoding; the
//     cost of the NATS round trip itself.
//   - natsbackend-signed: a lookup that requires a signed answer, against
//     an echo responder that decodes the request's id and signs its answer
//     (signing and verifying: the whole cost of signatures per lookup).
//   - sdkgo: the same lookup done with the CloudEvents SDK: build an
//     event.Event, json.Marshal it, send it with the same NATS headers as
//     the requester (the wire protocol asks for them), json.Unmarshal the
//     reply into an event.Event and DataAs into a backend.Message.
//
// Sequential runs measure latency, parallel runs (64 goroutines on one
// connection) throughput.

// benchTimeout bounds each request: generous, so that a loaded machine
// slows the benchmarks down rather than failing them.
const benchTimeout = 5 * time.Second

// lookupFunc is one lookup done in one of the compared ways.
type lookupFunc func(ctx context.Context) error

// benchEnv starts a server, an echo responder and one requester connection
// and returns the three ways of looking up.
func benchEnv(b *testing.B) map[string]lookupFunc {
	b.Helper()
	srv := natstest.Run(b, nil)
	req, resp := natstest.Connect(b, srv), natstest.Connect(b, srv)
	fixed := responseEvent(fullMessage(testMAC))
	hdr := nats.Header{"Content-Type": {backend.ContentType}}
	sub, err := resp.Subscribe(backend.DefaultSubject, func(m *nats.Msg) {
		_ = m.RespondMsg(&nats.Msg{Header: hdr, Data: fixed})
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := resp.Flush(); err != nil {
		b.Fatal(err)
	}

	// A signing echo responder: it decodes the request's id and signs the
	// same fixed answer for it, as a signing responder does.
	signer := newSigner(b)
	full := fullMessage(testMAC)
	sigSub, err := resp.Subscribe("bench.signed", func(m *nats.Msg) {
		ev, err := wire.Decode(m.Data, backend.RequestEventType)
		if err != nil {
			return
		}
		var ids wire.IDs
		a := wire.Attrs{Source: "/test/responder", Type: backend.ResponseEventType, Time: time.Now()}
		body, err := wire.AppendSignedResponse(make([]byte, 0, 1024), &a, &ids, &full, ev.ID, signer)
		if err != nil {
			return
		}
		_ = m.RespondMsg(&nats.Msg{Header: hdr, Data: body})
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sigSub.Unsubscribe() })
	if err := resp.Flush(); err != nil {
		b.Fatal(err)
	}

	be := newBackend(b, req, natsbackend.Config{Timeout: benchTimeout})
	signed := newBackend(b, req, natsbackend.Config{Timeout: benchTimeout, Subject: "bench.signed", TrustedKeys: []string{signer.PublicKey()}})
	dreq := backend.DHCPRequest{MACAddress: testMAC}
	var ids wire.IDs
	attrs := wire.Attrs{Source: natsbackend.DefaultSource, Type: backend.RequestEventType, Time: time.Now()}
	payload := wire.AppendRequest(nil, &attrs, &ids, &dreq)

	return map[string]lookupFunc{
		"natsbackend": func(ctx context.Context) error {
			_, _, err := be.Lookup(ctx, dreq)
			return err
		},
		"natsbackend-signed": func(ctx context.Context) error {
			_, _, err := signed.Lookup(ctx, dreq)
			return err
		},
		"raw": func(context.Context) error {
			_, err := req.Request(backend.DefaultSubject, payload, benchTimeout)
			return err
		},
		"sdkgo": func(context.Context) error {
			e := event.New()
			e.SetID(uuid.NewString())
			e.SetSource(natsbackend.DefaultSource)
			e.SetType(backend.RequestEventType)
			e.SetTime(time.Now())
			if err := e.SetData(event.ApplicationJSON, dreq); err != nil {
				return err
			}
			body, err := json.Marshal(e)
			if err != nil {
				return err
			}
			m, err := req.RequestMsg(&nats.Msg{Subject: backend.DefaultSubject, Header: nats.Header{
				"Content-Type":        {backend.ContentType},
				backend.HeaderTimeout: {strconv.FormatInt(benchTimeout.Milliseconds(), 10)},
			}, Data: body}, benchTimeout)
			if err != nil {
				return err
			}
			var re event.Event
			if err := json.Unmarshal(m.Data, &re); err != nil {
				return err
			}
			var msg backend.Message
			if err := re.DataAs(&msg); err != nil {
				return err
			}
			return msg.Error.Err()
		},
	}
}

var benchOrder = []string{"natsbackend", "natsbackend-signed", "raw", "sdkgo"}

func BenchmarkLookup(b *testing.B) {
	fns := benchEnv(b)
	for _, name := range benchOrder {
		fn := fns[name]
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			lat := make([]time.Duration, 0, 1<<16)
			b.ReportAllocs()
			defer reportCPU(b)()
			for b.Loop() {
				start := time.Now()
				if err := fn(ctx); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
		})
	}
}

func BenchmarkLookupParallel(b *testing.B) {
	fns := benchEnv(b)
	for _, name := range benchOrder {
		fn := fns[name]
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			b.ReportAllocs()
			defer reportCPU(b)()
			b.SetParallelism(64 / max(1, runtimeProcs()))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := fn(ctx); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// reportCPU reports the CPU time of the whole process (requester, echo
// responder and NATS server, all in this process) per operation, a figure
// that other processes loading the machine disturb far less than ns/op.
// Call it before the loop and the function it returns after it.
func reportCPU(b *testing.B) func() {
	start := cpuTime()
	return func() {
		if b.N > 0 {
			b.ReportMetric(float64((cpuTime()-start).Nanoseconds())/float64(b.N), "cpu-ns/op")
		}
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runtimeProcs is GOMAXPROCS, which RunParallel multiplies by its
// parallelism.
func runtimeProcs() int { return runtime.GOMAXPROCS(0) }
