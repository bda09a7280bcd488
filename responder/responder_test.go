package responder_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/internal/wire"
	natsbackend "github.com/tinkerbell/backend/nats"
	"github.com/tinkerbell/backend/responder"
)

// table is a map-backed backend.
type table map[string]backend.DHCP

func (tb table) Lookup(_ context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
	d, ok := tb[req.MACAddress.String()]
	if !ok {
		return backend.DHCP{}, backend.Netboot{}, fmt.Errorf("lookup %s: %w", req.MACAddress, backend.ErrNotFound)
	}
	u := backend.URL("http://198.18.0.1/" + d.Hostname + ".ipxe")
	return d, backend.Netboot{AllowNetboot: true, IPXEScriptURL: u}, nil
}

var cmpAddr = cmpopts.EquateComparable(netip.Addr{}, backend.Mask{})

func TestLookup(t *testing.T) {
	nc, more := conn(t)
	hosts := table{}
	for i := range 8 {
		mac := fmt.Sprintf("52:54:00:00:00:%02x", i)
		hosts[mac] = backend.DHCP{
			IPAddress:      netip.AddrFrom4([4]byte{198, 18, 0, byte(10 + i)}),
			SubnetMask:     backend.MaskFrom(24),
			DefaultGateway: netip.MustParseAddr("198.18.0.1"),
			NameServers:    []netip.Addr{netip.MustParseAddr("198.18.0.2")},
			Hostname:       fmt.Sprintf("node-%d", i),
			DomainName:     "example.test",
			LeaseTime:      uint32(3600 * (i + 1)),
			DomainSearch:   []string{"example.test"},
		}
	}
	serve(t, responder.Config{Conn: more(), Backend: hosts})
	req := requester(t, natsbackend.Config{Conn: nc})

	for mac, want := range hosts {
		t.Run(mac, func(t *testing.T) {
			got, nb, err := req.Lookup(t.Context(), backend.DHCPRequest{MACAddress: mustMAC(t, mac)})
			if err != nil {
				t.Fatalf("Lookup: %v", err)
			}
			// The responder fills in the MAC address the backend left out.
			want.MACAddress = mustMAC(t, mac)
			if diff := cmp.Diff(want, got, cmpAddr); diff != "" {
				t.Errorf("DHCP (-want +got):\n%s", diff)
			}
			wantNB := "http://198.18.0.1/" + want.Hostname + ".ipxe"
			if !nb.AllowNetboot || nb.IPXEScriptURL.String() != wantNB {
				t.Errorf("Netboot = %+v, want AllowNetboot and script %s", nb, wantNB)
			}
		})
	}
}

// TestErrors checks each error class end to end through the requester, and
// the event and micro headers of the raw reply.
func TestErrors(t *testing.T) {
	nc, more := conn(t)
	v6 := netip.MustParseAddr("2001:db8::1")
	cases := []struct {
		name     string
		mac      string
		answer   func(ctx context.Context) (backend.DHCP, error)
		wantCode int
		wantMsg  string // the message on the wire; "" means: the error's text
		wantIs   error

		wantHeader string // the Nats-Service-Error header; "" means: wantMsg
	}{
		{
			name:     "not found",
			mac:      "52:54:00:00:01:01",
			answer:   func(context.Context) (backend.DHCP, error) { return backend.DHCP{}, backend.ErrNotFound },
			wantCode: backend.CodeNotFound,
			wantIs:   backend.ErrNotFound,
		},
		{
			name: "wrapped not found",
			mac:  "52:54:00:00:01:02",
			answer: func(context.Context) (backend.DHCP, error) {
				return backend.DHCP{}, fmt.Errorf("no row: %w", backend.ErrNotFound)
			},
			wantCode: backend.CodeNotFound,
			wantIs:   backend.ErrNotFound,
		},
		{
			name: "deadline",
			mac:  "52:54:00:00:01:03",
			answer: func(context.Context) (backend.DHCP, error) {
				return backend.DHCP{}, fmt.Errorf("query: %w", context.DeadlineExceeded)
			},
			wantCode: backend.CodeUnavailable,
			wantIs:   backend.ErrUnavailable,
		},
		{
			name:     "unavailable",
			mac:      "52:54:00:00:01:04",
			answer:   func(context.Context) (backend.DHCP, error) { return backend.DHCP{}, backend.ErrUnavailable },
			wantCode: backend.CodeUnavailable,
			wantIs:   backend.ErrUnavailable,
		},
		{
			name: "internal",
			mac:  "52:54:00:00:01:05",
			answer: func(context.Context) (backend.DHCP, error) {
				return backend.DHCP{}, errors.New("database is down")
			},
			wantCode: backend.CodeInternal,
			wantMsg:  "database is down",
		},
		{
			name: "invalid answer",
			mac:  "52:54:00:00:01:06",
			answer: func(context.Context) (backend.DHCP, error) {
				return backend.DHCP{IPAddress: v6}, nil
			},
			wantCode: backend.CodeInternal,
			wantMsg:  `responder: the backend returned an invalid answer: backend: invalid message: field "IPAddress" ("2001:db8::1"): not an IPv4 address`,
		},
		{
			name: "panic",
			mac:  "52:54:00:00:01:07",
			answer: func(context.Context) (backend.DHCP, error) {
				panic("secret internal state")
			},
			wantCode: backend.CodeInternal,
			wantMsg:  "responder: the backend panicked",
		},
		{
			name: "answer too large",
			mac:  "52:54:00:00:01:09",
			answer: func(context.Context) (backend.DHCP, error) {
				label := strings.Repeat("a", 60)
				name := label + "." + label + "." + label + "." + label
				search := make([]string, 300) // 300 × 244 bytes > backend.MaxEventSize
				for i := range search {
					search[i] = name
				}
				return backend.DHCP{DomainSearch: search}, nil
			},
			wantCode: backend.CodeInternal,
			wantMsg:  "responder: the backend's answer exceeds the event size limit",
		},
		{
			name: "huge error text",
			mac:  "52:54:00:00:01:08",
			answer: func(context.Context) (backend.DHCP, error) {
				return backend.DHCP{}, errors.New(strings.Repeat("x", 100_000))
			},
			wantCode: backend.CodeInternal,
			wantMsg:  strings.Repeat("x", 1024) + "...",
		},
		{
			name: "error text with line breaks",
			mac:  "52:54:00:00:01:0a",
			answer: func(context.Context) (backend.DHCP, error) {
				return backend.DHCP{}, errors.New("db down\r\nX-Injected: 1\x00")
			},
			wantCode:   backend.CodeInternal,
			wantMsg:    "db down\r\nX-Injected: 1\x00",
			wantHeader: "db down  X-Injected: 1", // one header line: control bytes blanked (the trailing one trimmed by nats.go)
		},
	}
	answers := map[string]func(context.Context) (backend.DHCP, error){}
	for _, c := range cases {
		answers[c.mac] = c.answer
	}
	log, logs := newLogger()
	serve(t, responder.Config{Conn: more(), Logger: log, Backend: backend.BackendFunc(
		func(ctx context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
			d, err := answers[req.MACAddress.String()](ctx)
			return d, backend.Netboot{}, err
		})})
	req := requester(t, natsbackend.Config{Conn: nc, Retry: natsbackend.RetryPolicy{MaxAttempts: 1}})

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wantMsg := c.wantMsg
			if wantMsg == "" {
				_, err := c.answer(t.Context())
				wantMsg = err.Error()
			}
			mac := mustMAC(t, c.mac)

			_, _, err := req.Lookup(t.Context(), backend.DHCPRequest{MACAddress: mac})
			var re *backend.RemoteError
			if !errors.As(err, &re) {
				t.Fatalf("Lookup error = %v, want a *backend.RemoteError", err)
			}
			if diff := cmp.Diff(&backend.RemoteError{Code: c.wantCode, Message: wantMsg}, re); diff != "" {
				t.Errorf("RemoteError (-want +got):\n%s", diff)
			}
			if c.wantIs != nil && !errors.Is(err, c.wantIs) {
				t.Errorf("Lookup error %v does not match %v", err, c.wantIs)
			}

			reply := rawRequest(t, nc, backend.DefaultSubject, nil, requestEvent(mac, ""))
			_, m, err := wire.DecodeResponse(reply.Data)
			if err != nil {
				t.Fatalf("reply is not a response event: %v\n%s", err, reply.Data)
			}
			wantHeader := c.wantHeader
			if wantHeader == "" {
				wantHeader = wantMsg
			}
			wantHeaders := map[string]string{
				backend.HeaderContentType:      backend.ContentType,
				backend.HeaderServiceErrorCode: strconv.Itoa(c.wantCode),
				backend.HeaderServiceError:     wantHeader,
			}
			gotHeaders := map[string]string{}
			for k := range wantHeaders {
				gotHeaders[k] = reply.Header.Get(k)
			}
			if diff := cmp.Diff(wantHeaders, gotHeaders); diff != "" {
				t.Errorf("headers (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(backend.Status{Code: c.wantCode, Message: wantMsg}, m.Error); diff != "" {
				t.Errorf("event Error (-want +got):\n%s", diff)
			}
			if m.MACAddress.String() != c.mac {
				t.Errorf("event MACAddress = %v, want %s", m.MACAddress, c.mac)
			}
		})
	}
	if !logs.contains("secret internal state") || !logs.contains("goroutine ") || !logs.contains("panic") {
		t.Errorf("the panic was not logged with its value and stack:\n%s", logs)
	}
}

// TestPanicRecovery checks that the responder keeps serving after a panic.
func TestPanicRecovery(t *testing.T) {
	nc, more := conn(t)
	bad := mustMAC(t, "52:54:00:00:02:01")
	good := mustMAC(t, "52:54:00:00:02:02")
	serve(t, responder.Config{Conn: more(), MaxConcurrent: 1, Backend: backend.BackendFunc(
		func(_ context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
			if req.MACAddress.String() == bad.String() {
				var m map[string]int
				m["boom"]++ // nil map write: a runtime panic
			}
			return backend.DHCP{Hostname: "ok"}, backend.Netboot{}, nil
		})})
	req := requester(t, natsbackend.Config{Conn: nc, Retry: natsbackend.RetryPolicy{MaxAttempts: 1}})
	for i := range 3 {
		_, _, err := req.Lookup(t.Context(), backend.DHCPRequest{MACAddress: bad})
		if backend.CodeOf(err) != backend.CodeInternal {
			t.Fatalf("round %d: panicking lookup: error %v, want code 500", i, err)
		}
		d, _, err := req.Lookup(t.Context(), backend.DHCPRequest{MACAddress: good})
		if err != nil || d.Hostname != "ok" {
			t.Fatalf("round %d: lookup after a panic = %q, %v; want ok, nil", i, d.Hostname, err)
		}
	}
}

// TestMalformed sends malformed requests with a raw client: each gets a 400
// response event, and the responder keeps serving.
func TestMalformed(t *testing.T) {
	nc, more := conn(t)
	var calls atomic.Int64
	srv := serve(t, responder.Config{Conn: more(), Backend: backend.BackendFunc(
		func(context.Context, backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
			calls.Add(1)
			return backend.DHCP{}, backend.Netboot{}, nil
		})})
	mac := mustMAC(t, "52:54:00:00:03:01")
	good := string(requestEvent(mac, ""))
	cases := []struct {
		name   string
		data   string
		header nats.Header
		want   string // in the error message
	}{
		{name: "empty", data: "", want: "empty message"},
		{name: "garbage", data: "\x00\xff garbage", want: "not a JSON object"},
		{name: "truncated JSON", data: good[:len(good)/2], want: "malformed JSON"},
		{name: "JSON array", data: `[1,2,3]`, want: "not a JSON object"},
		{name: "not a CloudEvent", data: `{"MACAddress":"52:54:00:00:03:01"}`, want: `"specversion"`},
		{name: "wrong specversion", data: strings.Replace(good, `"specversion":"1.0"`, `"specversion":"0.3"`, 1), want: `"specversion" ("0.3")`},
		{name: "wrong type", data: strings.Replace(good, backend.RequestEventType, backend.ResponseEventType, 1), want: `field "type"`},
		{name: "missing id", data: strings.Replace(good, `"id":`, `"x":`, 1), want: `"id"`},
		{name: "bad MAC", data: strings.Replace(good, mac.String(), "52:54:zz:00:03:01", 1), want: `"data.MACAddress"`},
		{name: "no MAC", data: strings.Replace(good, `"MACAddress":"`+mac.String()+`",`, "", 1), want: `"data.MACAddress": missing`},
		{name: "data not an object", data: `{"specversion":"1.0","id":"1","source":"/x","type":"` + backend.RequestEventType + `","data":42}`, want: `"data"`},
		{name: "bad timeout header", data: good, header: nats.Header{backend.HeaderTimeout: {"soon"}}, want: backend.HeaderTimeout},
		{name: "negative timeout header", data: good, header: nats.Header{backend.HeaderTimeout: {"-5"}}, want: backend.HeaderTimeout},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			reply := rawRequest(t, nc, backend.DefaultSubject, c.header, []byte(c.data))
			_, m, err := wire.DecodeResponse(reply.Data)
			if err != nil {
				t.Fatalf("reply is not a response event: %v\n%s", err, reply.Data)
			}
			if m.Error.Code != backend.CodeBadRequest || !strings.Contains(m.Error.Message, c.want) {
				t.Errorf("Error = %+v, want code 400 and a message containing %q", m.Error, c.want)
			}
			if got := reply.Header.Get(backend.HeaderServiceErrorCode); got != "400" {
				t.Errorf("%s = %q, want 400", backend.HeaderServiceErrorCode, got)
			}
		})
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("the backend was called %d times for malformed requests", n)
	}
	// Still serving, through the requester too.
	req := requester(t, natsbackend.Config{Conn: nc})
	if _, _, err := req.Lookup(t.Context(), backend.DHCPRequest{MACAddress: mac}); err != nil {
		t.Fatalf("Lookup after malformed requests: %v", err)
	}
	// A request is counted once its reply is sent, which may be just after
	// the requester has it.
	waitFor(t, "the requests to be counted", func() bool { return srv.Stats().Requests == uint64(len(cases))+1 })
	st := srv.Stats()
	if want := uint64(len(cases)); st.Errors != want || st.Requests != want+1 {
		t.Errorf("Stats: %d requests, %d errors; want %d, %d", st.Requests, st.Errors, want+1, want)
	}
}

// TestNoRespondersLookalike sends what nats.go takes for a "no responders"
// status (an empty body with the header Status: 503), which any client can
// publish: the responder must keep serving, and Serve must not return.
func TestNoRespondersLookalike(t *testing.T) {
	nc, more := conn(t)
	mac := mustMAC(t, "52:54:00:00:03:02")
	srv := serve(t, responder.Config{Conn: more(), Backend: table{mac.String(): {Hostname: "node-2"}}})
	for range 2 * responder.DefaultMaxConcurrent {
		if err := nc.PublishMsg(&nats.Msg{Subject: backend.DefaultSubject, Reply: nc.NewRespInbox(), Header: nats.Header{"Status": {"503"}}}); err != nil {
			t.Fatal(err)
		}
	}
	// Sent on the same connection, so the responder gets it after them.
	req := requester(t, natsbackend.Config{Conn: nc, Timeout: 5 * time.Second, Retry: natsbackend.RetryPolicy{MaxAttempts: 1}})
	if d, _, err := req.Lookup(t.Context(), backend.DHCPRequest{MACAddress: mac}); err != nil || d.Hostname != "node-2" {
		t.Errorf("Lookup after no-responders lookalikes: %+v, %v", d, err)
	}
	select {
	case err := <-srv.served:
		srv.served <- err
		t.Errorf("Serve returned %v", err)
	default:
	}
}

// TestDeadline checks that the backend's context carries the requester's
// deadline, or the configured default without a header.
func TestDeadline(t *testing.T) {
	nc, more := conn(t)
	type seen struct {
		called   time.Time
		deadline time.Time
		ok       bool
		err      error
	}
	calls := make(chan seen, 1)
	const defaultTimeout = 700 * time.Millisecond
	serve(t, responder.Config{Conn: more(), DefaultTimeout: defaultTimeout, Backend: backend.BackendFunc(
		func(ctx context.Context, _ backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
			called := time.Now()
			dl, ok := ctx.Deadline()
			<-ctx.Done()
			calls <- seen{called, dl, ok, ctx.Err()}
			return backend.DHCP{}, backend.Netboot{}, ctx.Err()
		})})
	mac := mustMAC(t, "52:54:00:00:04:01")
	const tolerance = 50 * time.Millisecond

	t.Run("requester deadline", func(t *testing.T) {
		req := requester(t, natsbackend.Config{Conn: nc, Timeout: 10 * time.Second, Retry: natsbackend.RetryPolicy{MaxAttempts: 1}})
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		want, _ := ctx.Deadline()
		start := time.Now()
		_, _, err := req.Lookup(ctx, backend.DHCPRequest{MACAddress: mac})
		// The backend's deadline is a little earlier than the requester's,
		// so the requester usually gets the responder's 503 reply, else its
		// own deadline error: ErrUnavailable both ways.
		if !errors.Is(err, backend.ErrUnavailable) {
			t.Errorf("Lookup error = %v, want ErrUnavailable", err)
		}
		got := <-calls
		if !got.ok || !errors.Is(got.err, context.DeadlineExceeded) {
			t.Fatalf("backend context: deadline set %v, err %v; want a deadline that expired", got.ok, got.err)
		}
		if d := got.deadline.Sub(want); d > tolerance || d < -tolerance {
			t.Errorf("backend deadline is %v off the requester's, want within ±%v", d, tolerance)
		}
		// The budget the requester sent is at most want-start, and the
		// responder counts it from when it took the request (before it
		// called the backend), minus an allowance for the reply's trip of
		// 5% of the budget: its deadline is later than want by at most the
		// time the request took to arrive minus that allowance. The budget,
		// in whole milliseconds, was at least want-called-1ms.
		allowance := min((want.Sub(got.called)-time.Millisecond)/20, 50*time.Millisecond)
		if late, transit := got.deadline.Sub(want), got.called.Sub(start); late > transit-allowance {
			t.Errorf("backend deadline is %v after the requester's, with the request %v in transit and an allowance of at least %v", late, transit, allowance)
		}
	})

	t.Run("requester timeout", func(t *testing.T) {
		const timeout = 250 * time.Millisecond
		req := requester(t, natsbackend.Config{Conn: nc, Timeout: timeout, Retry: natsbackend.RetryPolicy{MaxAttempts: 1}})
		start := time.Now()
		_, _, err := req.Lookup(t.Context(), backend.DHCPRequest{MACAddress: mac})
		if !errors.Is(err, backend.ErrUnavailable) {
			t.Errorf("Lookup error = %v, want ErrUnavailable", err)
		}
		got := <-calls
		if d := got.deadline.Sub(start.Add(timeout)); d > tolerance || d < -tolerance {
			t.Errorf("backend deadline is %v off the requester's, want within ±%v", d, tolerance)
		}
	})

	t.Run("no header", func(t *testing.T) {
		start := time.Now()
		reply := rawRequest(t, nc, backend.DefaultSubject, nil, requestEvent(mac, ""))
		got := <-calls
		if d := got.deadline.Sub(start.Add(defaultTimeout)); d > tolerance || d < -tolerance {
			t.Errorf("backend deadline is %v off the default timeout, want within ±%v", d, tolerance)
		}
		if code := reply.Header.Get(backend.HeaderServiceErrorCode); code != "503" {
			t.Errorf("reply code %q, want 503", code)
		}
	})
}

// TestTraceContext checks that the backend's context carries the
// requester's span context as a remote parent.
func TestTraceContext(t *testing.T) {
	nc, more := conn(t)
	got := make(chan trace.SpanContext, 1)
	serve(t, responder.Config{Conn: more(), Backend: backend.BackendFunc(
		func(ctx context.Context, _ backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
			got <- trace.SpanContextFromContext(ctx)
			return backend.DHCP{}, backend.Netboot{}, nil
		})})
	req := requester(t, natsbackend.Config{Conn: nc})
	mac := mustMAC(t, "52:54:00:00:05:01")

	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled,
	})
	ctx := trace.ContextWithSpanContext(t.Context(), sc)
	if _, _, err := req.Lookup(ctx, backend.DHCPRequest{MACAddress: mac}); err != nil {
		t.Fatalf("Lookup: %v", err)
	}
	want := sc.WithRemote(true)
	if g := <-got; !g.Equal(want) {
		t.Errorf("backend span context = %+v, want %+v", g, want)
	}

	// Without trace context, there is none.
	if _, _, err := req.Lookup(t.Context(), backend.DHCPRequest{MACAddress: mac}); err != nil {
		t.Fatalf("Lookup: %v", err)
	}
	if g := <-got; g.IsValid() {
		t.Errorf("backend span context = %+v, want none", g)
	}

	// The traceparent attribute of the event is used when the data has none.
	tp := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	var ids wire.IDs
	a := wire.Attrs{Source: "/test", Type: backend.RequestEventType, Traceparent: tp}
	rawRequest(t, nc, backend.DefaultSubject, nil, wire.AppendRequest(nil, &a, &ids, &backend.DHCPRequest{MACAddress: mac}))
	if g := <-got; !g.Equal(want) {
		t.Errorf("backend span context from the traceparent attribute = %+v, want %+v", g, want)
	}
}

// TestQueueGroup checks that replicas share the load.
func TestQueueGroup(t *testing.T) {
	nc, more := conn(t)
	var counts [3]atomic.Int64
	for i := range counts {
		serve(t, responder.Config{Conn: more(), Backend: backend.BackendFunc(
			func(context.Context, backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
				counts[i].Add(1)
				return backend.DHCP{Hostname: "r" + strconv.Itoa(i)}, backend.Netboot{}, nil
			})})
	}
	// No hedged requests: each lookup is one request, served once.
	req := requester(t, natsbackend.Config{Conn: nc, HedgeDelay: -1})
	failed := lookups(t, req, 300, 10, nil)
	if failed != 0 {
		t.Errorf("%d of 300 lookups failed", failed)
	}
	var total int64
	for i := range counts {
		n := counts[i].Load()
		total += n
		if n == 0 {
			t.Errorf("responder %d served no lookup", i)
		}
	}
	// Each lookup is one request, served by one responder; a request
	// whose reply came too late on a loaded machine is retried, and
	// served again.
	if total < 300 {
		t.Errorf("responders served %d lookups in all, want at least 300", total)
	}
}

// TestQueueGroupFailover closes one of three responders while lookups are
// in flight on it: with the requester's retries, none fails.
func TestQueueGroupFailover(t *testing.T) {
	nc, more := conn(t)
	var counts [3]atomic.Int64
	stuck := make(chan struct{})
	var stuckOnce sync.Once
	servers := make([]*running, 3)
	for i := range servers {
		servers[i] = serve(t, responder.Config{Conn: more(), Backend: backend.BackendFunc(
			func(ctx context.Context, _ backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
				if n := counts[i].Add(1); i == 0 && n > 20 {
					// Responder 0 hangs from its 21st lookup on, until Close
					// cancels the calls.
					stuckOnce.Do(func() { close(stuck) })
					<-ctx.Done()
					return backend.DHCP{}, backend.Netboot{}, ctx.Err()
				}
				return backend.DHCP{Hostname: "r" + strconv.Itoa(i)}, backend.Netboot{}, nil
			})})
	}
	req := requester(t, natsbackend.Config{Conn: nc, Timeout: 300 * time.Millisecond, Retry: natsbackend.RetryPolicy{MaxAttempts: 5}})
	closed := make(chan error, 1)
	go func() {
		<-stuck
		closed <- servers[0].Close()
	}()
	failed := lookups(t, req, 300, 10, nil)
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := servers[0].wait(t); !errors.Is(err, responder.ErrServerClosed) {
		t.Errorf("Serve returned %v, want ErrServerClosed", err)
	}
	if failed != 0 {
		t.Errorf("%d of 300 lookups failed", failed)
	}
	for i := range counts {
		if counts[i].Load() == 0 {
			t.Errorf("responder %d served no lookup", i)
		}
	}
}

// lookups runs n lookups with the given concurrency and returns how many
// failed; check, if set, checks each result.
func lookups(t *testing.T, req backend.Backend, n, concurrency int, check func(backend.DHCP) error) int {
	t.Helper()
	var (
		next   atomic.Int64
		failed atomic.Int64
		wg     sync.WaitGroup
		first  sync.Once
	)
	for range concurrency {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				mac := fmt.Sprintf("52:54:00:%02x:%02x:%02x", i>>16&0xff, i>>8&0xff, i&0xff)
				d, _, err := req.Lookup(context.Background(), backend.DHCPRequest{MACAddress: mustMACNoTB(mac)})
				if err == nil && check != nil {
					err = check(d)
				}
				if err != nil {
					failed.Add(1)
					first.Do(func() { t.Errorf("lookup %d: %v", i, err) }) // Errorf is safe from any goroutine
				}
			}
		})
	}
	wg.Wait()
	return int(failed.Load())
}

func mustMACNoTB(s string) []byte {
	var b [6]byte
	if _, err := fmt.Sscanf(s, "%02x:%02x:%02x:%02x:%02x:%02x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]); err != nil {
		panic(err)
	}
	return b[:]
}

// TestShutdown runs 200 slow lookups, some running and the others waiting
// in NATS' buffer, and shuts down: every lookup gets its reply, Shutdown
// returns after the last backend call, Serve returns ErrServerClosed and no
// goroutine is left.
func TestShutdown(t *testing.T) {
	nc, more := conn(t)
	req := requester(t, natsbackend.Config{Conn: nc, Timeout: 30 * time.Second, Retry: natsbackend.RetryPolicy{MaxAttempts: 1}})
	probe := requester(t, natsbackend.Config{Conn: nc, Timeout: time.Second, Retry: natsbackend.RetryPolicy{MaxAttempts: 1}})
	var (
		started, finished atomic.Int64
		release           = make(chan struct{})
	)
	probeMAC := mustMAC(t, "52:54:00:00:06:ff")
	slow := backend.BackendFunc(func(_ context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
		if req.MACAddress.String() == probeMAC.String() {
			return backend.DHCP{}, backend.Netboot{}, backend.ErrNotFound
		}
		started.Add(1)
		<-release
		finished.Add(1)
		return backend.DHCP{Hostname: req.MACAddress.String()}, backend.Netboot{}, nil
	})

	// Warm up the requester (its reply subscription), then take the
	// goroutines that may stay.
	warm := serve(t, responder.Config{Conn: more(), Subject: "warm.up", Backend: table{}})
	warmReq := requester(t, natsbackend.Config{Conn: nc, Subject: "warm.up"})
	if _, _, err := warmReq.Lookup(t.Context(), backend.DHCPRequest{MACAddress: mustMAC(t, "52:54:00:00:06:00")}); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("warm-up lookup: %v", err)
	}
	if err := warm.Close(); err != nil {
		t.Fatal(err)
	}
	warm.wait(t)
	snc := more()
	before := goleak.IgnoreCurrent()

	srv, err := responder.New(responder.Config{Conn: snc, Backend: slow})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()

	const n = 200
	results := make(chan error, n)
	for i := range n {
		go func() {
			mac := mustMACNoTB(fmt.Sprintf("52:54:00:00:%02x:%02x", i>>8, i&0xff))
			d, _, err := req.Lookup(context.Background(), backend.DHCPRequest{MACAddress: mac})
			if err == nil && d.Hostname != net.HardwareAddr(mac).String() {
				err = fmt.Errorf("got the reply for %s, want %s", d.Hostname, mac)
			}
			results <- err
		}()
	}
	waitFor(t, "64 running and 136 pending lookups", func() bool {
		st := srv.Stats()
		return started.Load() == responder.DefaultMaxConcurrent && st.Queued == n-responder.DefaultMaxConcurrent
	})

	shutdown := make(chan error, 1)
	go func() { shutdown <- srv.Shutdown(context.Background()) }()

	// New lookups are refused once the subscription is drained...
	waitFor(t, "new lookups to find no responder", func() bool {
		_, _, err := probe.Lookup(t.Context(), backend.DHCPRequest{MACAddress: probeMAC})
		return errors.Is(err, backend.ErrNoBackend)
	})
	// ... while the accepted ones are still waiting.
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned %v before the running lookups finished", err)
	default:
	}
	close(release)

	if err := <-shutdown; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if got := finished.Load(); got != n {
		t.Errorf("Shutdown returned after %d of %d backend calls", got, n)
	}
	for range n {
		if err := <-results; err != nil {
			t.Errorf("lookup: %v", err)
		}
	}
	if err := <-served; !errors.Is(err, responder.ErrServerClosed) {
		t.Errorf("Serve returned %v, want ErrServerClosed", err)
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
	if err := srv.Serve(); !errors.Is(err, responder.ErrServerClosed) {
		t.Errorf("Serve after Shutdown returned %v, want ErrServerClosed", err)
	}
	goleak.VerifyNone(t, before)
}

// TestClose checks that Close cancels running backend calls without
// replying, and that Serve then returns ErrServerClosed.
func TestClose(t *testing.T) {
	nc, more := conn(t)
	running := make(chan struct{})
	cancelled := make(chan error, 1)
	snc := more()
	srv, err := responder.New(responder.Config{Conn: snc, Backend: backend.BackendFunc(
		func(ctx context.Context, _ backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
			close(running)
			<-ctx.Done()
			cancelled <- ctx.Err()
			return backend.DHCP{}, backend.Netboot{}, ctx.Err()
		})})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()

	// No reply: the requester's attempt times out.
	sub, err := nc.SubscribeSync(nc.NewRespInbox())
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishMsg(&nats.Msg{Subject: backend.DefaultSubject, Reply: sub.Subject, Data: requestEvent(mustMAC(t, "52:54:00:00:07:01"), "")}); err != nil {
		t.Fatal(err)
	}
	<-running
	if err := srv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-cancelled; !errors.Is(err, context.Canceled) {
		t.Errorf("backend context error = %v, want context.Canceled", err)
	}
	if err := <-served; !errors.Is(err, responder.ErrServerClosed) {
		t.Errorf("Serve returned %v, want ErrServerClosed", err)
	}
	// The server sent nothing; a ping round trip orders any reply before
	// the check.
	if err := srv.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := snc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if m, err := sub.NextMsg(0); err == nil {
		t.Errorf("got a reply after Close: %s", m.Data)
	}
}

// TestConcurrencyBound checks that at most MaxConcurrent backend calls run
// at once, the others waiting in NATS' buffer.
func TestConcurrencyBound(t *testing.T) {
	nc, more := conn(t)
	const limit, n = 4, 20
	var (
		cur, peak atomic.Int64
		release   = make(chan struct{})
	)
	srv := serve(t, responder.Config{Conn: more(), MaxConcurrent: limit, Backend: backend.BackendFunc(
		func(context.Context, backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
			c := cur.Add(1)
			for p := peak.Load(); c > p && !peak.CompareAndSwap(p, c); p = peak.Load() {
			}
			<-release
			cur.Add(-1)
			return backend.DHCP{}, backend.Netboot{}, nil
		})})
	req := requester(t, natsbackend.Config{Conn: nc, Timeout: 30 * time.Second, HedgeDelay: -1})
	done := make(chan int, 1)
	go func() { done <- lookups(t, req, n, n, nil) }()
	unblock := sync.OnceFunc(func() { close(release) })
	defer func() {
		// Even when failing: no lookup may outlive the test.
		unblock()
		if failed := <-done; failed != 0 {
			t.Errorf("%d lookups failed", failed)
		}
	}()
	waitFor(t, "all requests to reach the responder", func() bool {
		st := srv.Stats()
		// cur, not st.InFlight: a request counts as in flight a little
		// before its backend call starts.
		return peak.Load() > limit || (cur.Load() == limit && st.InFlight == limit && st.Queued == n-limit)
	})
	if got := peak.Load(); got != limit {
		t.Errorf("%d backend calls in flight with all requests received, want %d", got, limit)
	}
	unblock()
	defer func() {
		if got := peak.Load(); got > limit {
			t.Errorf("peak of %d backend calls in flight, limit %d", got, limit)
		}
	}()
}

// TestQueueFull fills the responder's queue: the requests beyond it are
// answered 503 at once (shed), so their requesters can retry elsewhere,
// and Stats counts them.
func TestQueueFull(t *testing.T) {
	nc, more := conn(t)
	release := make(chan struct{})
	srv := serve(t, responder.Config{Conn: more(), MaxConcurrent: 1, MaxPending: 2, Backend: backend.BackendFunc(
		func(context.Context, backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
			<-release
			return backend.DHCP{}, backend.Netboot{}, nil
		})})
	unblock := sync.OnceFunc(func() { close(release) })
	defer unblock()
	const n = 10
	replies := make(chan *nats.Msg, n)
	inbox := nc.NewRespInbox()
	sub, err := nc.ChanSubscribe(inbox, replies)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	data := requestEvent(mustMAC(t, "52:54:00:00:08:01"), "")
	for i := range n {
		if err := nc.PublishMsg(&nats.Msg{Subject: backend.DefaultSubject, Reply: inbox, Data: data,
			Header: nats.Header{backend.HeaderTimeout: {"30000"}}}); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			// The first request reaches the backend before the others
			// arrive, so that exactly two of those fit in the queue.
			waitFor(t, "the first request to run", func() bool { return srv.Stats().InFlight == 1 })
		}
	}
	// One request runs, two wait: the others are shed at once, each with
	// a 503 or, once the shedding replica has stepped out of the queue
	// group, with NATS' "no responders" status (which requesters retry).
	codes := map[string]int{}
	for range n - 3 {
		select {
		case m := <-replies:
			code := m.Header.Get(backend.HeaderServiceErrorCode)
			if code == "" && m.Header.Get("Status") == "503" && len(m.Data) == 0 {
				code = "no responders"
			}
			codes[code]++
		case <-time.After(pollTimeout):
			t.Fatal("sheds did not come at once")
		}
	}
	shed := codes["503"]
	if shed == 0 || shed+codes["no responders"] != n-3 {
		t.Errorf("replies before the backend returned: %v, want %d in all, 503 or no responders, at least one 503", codes, n-3)
	}
	// A shed is counted after its reply is sent: the requester can see it
	// first.
	waitFor(t, "the sheds counted", func() bool { return srv.Stats().Outcomes.Shed >= uint64(shed) })
	st := srv.Stats()
	if st.Outcomes.Shed != uint64(shed) || st.Queued != 2 || st.InFlight != 1 || st.Errors != uint64(shed) {
		t.Errorf("Stats: shed %d, queued %d, in flight %d, errors %d; want %d, 2, 1, %d\n%+v", st.Outcomes.Shed, st.Queued, st.InFlight, st.Errors, shed, shed, st)
	}
	unblock()
	for range 3 {
		select {
		case m := <-replies:
			if c := m.Header.Get(backend.HeaderServiceErrorCode); c != "" {
				t.Errorf("queued request answered %s", c)
			}
		case <-time.After(pollTimeout):
			t.Fatal("queued requests not answered")
		}
	}
}
