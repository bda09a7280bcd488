package responder_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/tinkerbell/backend"
	natsbackend "github.com/tinkerbell/backend/nats"
	"github.com/tinkerbell/backend/responder"
)

// TestDiscovery sends raw $SRV requests and checks the JSON replies.
func TestDiscovery(t *testing.T) {
	nc, more := conn(t)
	srv := serve(t, responder.Config{
		Conn:     more(),
		Name:     "lab-hosts",
		Version:  "1.2.3",
		Metadata: map[string]string{"site": "lab"},
		Backend:  table{"52:54:00:00:09:01": {Hostname: "node-1"}},
	})
	req := requester(t, natsbackend.Config{Conn: nc, Retry: natsbackend.RetryPolicy{MaxAttempts: 1}})
	for _, mac := range []string{"52:54:00:00:09:01", "52:54:00:00:09:01", "52:54:00:00:09:01", "52:54:00:00:09:02"} {
		if _, _, err := req.Lookup(t.Context(), backend.DHCPRequest{MACAddress: mustMAC(t, mac)}); err != nil && !errors.Is(err, backend.ErrNotFound) {
			t.Fatalf("Lookup(%s): %v", mac, err)
		}
	}
	rawRequest(t, nc, backend.DefaultSubject, nil, []byte("garbage"))
	// A request is counted once its reply is sent, which may be just after
	// the requester has it.
	waitFor(t, "the requests to be counted", func() bool {
		st := srv.Stats()
		return st.Requests == 5 && st.InFlight == 0
	})

	id := srv.Stats().ID
	identity := micro.ServiceIdentity{Name: "lab-hosts", ID: id, Version: "1.2.3", Metadata: map[string]string{"site": "lab"}}
	for _, subj := range []string{"$SRV.PING", "$SRV.PING.lab-hosts", "$SRV.PING.lab-hosts." + id} {
		t.Run(subj, func(t *testing.T) {
			var got micro.Ping
			unmarshal(t, rawRequest(t, nc, subj, nil, nil).Data, &got)
			want := micro.Ping{ServiceIdentity: identity, Type: micro.PingResponseType}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("PING (-want +got):\n%s", diff)
			}
		})
	}
	for _, subj := range []string{"$SRV.INFO", "$SRV.INFO.lab-hosts", "$SRV.INFO.lab-hosts." + id} {
		t.Run(subj, func(t *testing.T) {
			var got micro.Info
			unmarshal(t, rawRequest(t, nc, subj, nil, nil).Data, &got)
			want := micro.Info{
				ServiceIdentity: identity,
				Type:            micro.InfoResponseType,
				Description:     got.Description,
				Endpoints: []micro.EndpointInfo{{
					Name:       responder.EndpointName,
					Subject:    backend.DefaultSubject,
					QueueGroup: backend.DefaultQueue,
					Metadata:   map[string]string{},
				}},
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("INFO (-want +got):\n%s", diff)
			}
			if got.Description == "" {
				t.Error("INFO has no description")
			}
		})
	}
	for _, subj := range []string{"$SRV.STATS", "$SRV.STATS.lab-hosts", "$SRV.STATS.lab-hosts." + id} {
		t.Run(subj, func(t *testing.T) {
			var got micro.Stats
			unmarshal(t, rawRequest(t, nc, subj, nil, nil).Data, &got)
			if got.Started.IsZero() || got.Started.After(time.Now()) {
				t.Errorf("started = %v", got.Started)
			}
			if len(got.Endpoints) != 1 {
				t.Fatalf("%d endpoints, want 1", len(got.Endpoints))
			}
			ep := got.Endpoints[0]
			if ep.ProcessingTime <= 0 || ep.AverageProcessingTime <= 0 || ep.AverageProcessingTime > ep.ProcessingTime {
				t.Errorf("processing time %v, average %v", ep.ProcessingTime, ep.AverageProcessingTime)
			}
			var data map[string]int
			unmarshal(t, ep.Data, &data)
			want := micro.Stats{
				ServiceIdentity: identity,
				Type:            micro.StatsResponseType,
				Endpoints: []*micro.EndpointStats{{
					Name:        responder.EndpointName,
					Subject:     backend.DefaultSubject,
					QueueGroup:  backend.DefaultQueue,
					NumRequests: 5,
					NumErrors:   2,
					LastError:   `400 backend: invalid message: malformed JSON at offset 0: not a JSON object`,
				}},
			}
			ignore := cmpopts.IgnoreFields(micro.EndpointStats{}, "ProcessingTime", "AverageProcessingTime", "Data")
			if diff := cmp.Diff(want, got, ignore, cmpopts.IgnoreFields(micro.Stats{}, "Started")); diff != "" {
				t.Errorf("STATS (-want +got):\n%s", diff)
			}
			wantData := map[string]int{
				"in_flight": 0, "queued": 0, "pending": 0, "dropped": 0, "abandoned": 0, "abandoned_total": 0, "budgets_clamped": 0,
				"max_concurrent": responder.DefaultMaxConcurrent, "max_pending": responder.DefaultMaxPending, "max_abandoned": 4 * responder.DefaultMaxConcurrent,
				"ok": 3, "not_found": 1, "bad_request": 1, "error": 0, "unavailable": 0, "timeout": 0, "shed": 0, "expired": 0, "no_reply": 0, "cancelled": 0,
			}
			if diff := cmp.Diff(wantData, data); diff != "" {
				t.Errorf("STATS data (-want +got):\n%s", diff)
			}
		})
	}

	// The Go method agrees.
	st := srv.Stats()
	if st.Requests != 5 || st.Errors != 2 || st.Name != "lab-hosts" || st.QueueGroup != backend.DefaultQueue {
		t.Errorf("Stats() = %+v", st)
	}

	// Other services' subjects are not subscribed to; unknown verbs are
	// not answered.
	for _, subj := range []string{"$SRV.PING.other", "$SRV.PING.lab-hosts.other-id"} {
		_, err := nc.Request(subj, nil, time.Second)
		if !errors.Is(err, nats.ErrNoResponders) {
			t.Errorf("request to %s: %v, want no responders", subj, err)
		}
	}
	if m, err := nc.Request("$SRV.FOO", nil, 200*time.Millisecond); !errors.Is(err, nats.ErrTimeout) {
		t.Errorf("request to $SRV.FOO: %v, %v; want no answer", m, err)
	}

	// After Shutdown, the service no longer shows.
	if err := srv.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Request("$SRV.PING.lab-hosts", nil, time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("PING after Shutdown: %v, want no responders", err)
	}
}

// TestDiscoveryReplicas checks that every replica answers $SRV.PING, each
// with its own id.
func TestDiscoveryReplicas(t *testing.T) {
	nc, more := conn(t)
	want := map[string]bool{}
	for range 3 {
		s := serve(t, responder.Config{Conn: more(), Backend: table{}})
		want[s.Stats().ID] = true
	}
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishRequest("$SRV.PING."+responder.DefaultName, inbox, nil); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for range 3 {
		m, err := sub.NextMsg(pollTimeout)
		if err != nil {
			t.Fatalf("waiting for PING replies: %v", err)
		}
		var p micro.Ping
		unmarshal(t, m.Data, &p)
		got[p.ID] = true
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("PING ids (-want +got):\n%s", diff)
	}
}

func unmarshal(t *testing.T, data []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("unmarshal %s: %v", data, err)
	}
}

func TestConfig(t *testing.T) {
	_, more := conn(t)
	nc := more()
	b := table{}
	cases := []struct {
		name string
		cfg  responder.Config
	}{
		{"no Conn", responder.Config{Backend: b}},
		{"no Backend", responder.Config{Conn: nc}},
		{"wildcard subject", responder.Config{Conn: nc, Backend: b, Subject: "a.*"}},
		{"empty token", responder.Config{Conn: nc, Backend: b, Subject: "a..b"}},
		{"queue and NoQueue", responder.Config{Conn: nc, Backend: b, Queue: "q", NoQueue: true}},
		{"queue with space", responder.Config{Conn: nc, Backend: b, Queue: "a b"}},
		{"negative MaxConcurrent", responder.Config{Conn: nc, Backend: b, MaxConcurrent: -1}},
		{"negative MaxPending", responder.Config{Conn: nc, Backend: b, MaxPending: -1}},
		{"negative DefaultTimeout", responder.Config{Conn: nc, Backend: b, DefaultTimeout: -time.Second}},
		{"bad name", responder.Config{Conn: nc, Backend: b, Name: "a.b"}},
		{"bad version", responder.Config{Conn: nc, Backend: b, Version: "v1"}},
		{"source not a URI reference", responder.Config{Conn: nc, Backend: b, Source: "a b\\c"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := responder.New(c.cfg)
			if !errors.Is(err, backend.ErrInvalidConfig) {
				t.Errorf("New error = %v, want ErrInvalidConfig", err)
			}
			if s != nil {
				t.Errorf("New returned a server with error %v", err)
				s.Close()
			}
		})
	}
	if n := nc.NumSubscriptions(); n != 0 {
		t.Errorf("%d subscriptions left by failed New calls", n)
	}

	t.Run("defaults", func(t *testing.T) {
		s, err := responder.New(responder.Config{Conn: nc, Backend: b})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		st := s.Stats()
		got := []string{st.Subject, st.QueueGroup, st.Name, st.Version, s.Subject()}
		want := []string{backend.DefaultSubject, backend.DefaultQueue, responder.DefaultName, responder.DefaultVersion, backend.DefaultSubject}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("defaults (-want +got):\n%s", diff)
		}
	})
}

// TestSubjectPrefix serves with a prefix; a requester with the same prefix
// reaches it, one without does not.
func TestSubjectPrefix(t *testing.T) {
	nc, more := conn(t)
	s := serve(t, responder.Config{Conn: more(), SubjectPrefix: "site-a.", Backend: table{"52:54:00:00:0a:01": {Hostname: "a"}}})
	if got, want := s.Subject(), "site-a."+backend.DefaultSubject; got != want {
		t.Errorf("Subject() = %q, want %q", got, want)
	}
	mac := mustMAC(t, "52:54:00:00:0a:01")
	d, _, err := requester(t, natsbackend.Config{Conn: nc, SubjectPrefix: "site-a"}).Lookup(t.Context(), backend.DHCPRequest{MACAddress: mac})
	if err != nil || d.Hostname != "a" {
		t.Errorf("Lookup with the prefix = %q, %v", d.Hostname, err)
	}
	_, _, err = requester(t, natsbackend.Config{Conn: nc, Retry: natsbackend.RetryPolicy{MaxAttempts: 1}}).Lookup(t.Context(), backend.DHCPRequest{MACAddress: mac})
	if !errors.Is(err, backend.ErrNoBackend) {
		t.Errorf("Lookup without the prefix: %v, want ErrNoBackend", err)
	}
}

// TestNoQueue checks that without a queue group every responder gets every
// request.
func TestNoQueue(t *testing.T) {
	nc, more := conn(t)
	calls := make(chan int, 10)
	for i := range 2 {
		s := serve(t, responder.Config{Conn: more(), NoQueue: true, Backend: backend.BackendFunc(
			func(context.Context, backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
				calls <- i
				return backend.DHCP{}, backend.Netboot{}, nil
			})})
		if q := s.Stats().QueueGroup; q != "" {
			t.Errorf("queue group %q, want none", q)
		}
	}
	req := requester(t, natsbackend.Config{Conn: nc, HedgeDelay: -1}) // one request, no hedge
	if _, _, err := req.Lookup(t.Context(), backend.DHCPRequest{MACAddress: mustMAC(t, "52:54:00:00:0b:01")}); err != nil {
		t.Fatal(err)
	}
	got := map[int]bool{<-calls: true, <-calls: true}
	if diff := cmp.Diff(map[int]bool{0: true, 1: true}, got); diff != "" {
		t.Errorf("responders called (-want +got):\n%s", diff)
	}
}

// TestLifecycle covers the corners of Serve, Shutdown and Close.
func TestLifecycle(t *testing.T) {
	_, more := conn(t)

	t.Run("Serve twice", func(t *testing.T) {
		s, err := responder.New(responder.Config{Conn: more(), Backend: table{}})
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 2)
		for range 2 {
			go func() { served <- s.Serve() }()
		}
		// One of the two calls returns at once.
		if err := <-served; err == nil || errors.Is(err, responder.ErrServerClosed) {
			t.Errorf("second Serve = %v, want an error other than ErrServerClosed", err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-served; !errors.Is(err, responder.ErrServerClosed) {
			t.Errorf("Serve = %v, want ErrServerClosed", err)
		}
	})

	t.Run("Shutdown before Serve", func(t *testing.T) {
		nc := more()
		s, err := responder.New(responder.Config{Conn: nc, Backend: table{}})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Shutdown(t.Context()); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := s.Serve(); !errors.Is(err, responder.ErrServerClosed) {
			t.Errorf("Serve after Shutdown = %v, want ErrServerClosed", err)
		}
		if n := nc.NumSubscriptions(); n != 0 {
			t.Errorf("%d subscriptions left", n)
		}
	})

	t.Run("Close before Serve", func(t *testing.T) {
		nc := more()
		s, err := responder.New(responder.Config{Conn: nc, Backend: table{}})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := s.Serve(); !errors.Is(err, responder.ErrServerClosed) {
			t.Errorf("Serve after Close = %v, want ErrServerClosed", err)
		}
		if n := nc.NumSubscriptions(); n != 0 {
			t.Errorf("%d subscriptions left", n)
		}
	})

	t.Run("Shutdown deadline", func(t *testing.T) {
		nc := more()
		release := make(chan struct{})
		running := make(chan struct{}, 1)
		// A subject of its own: the earlier subtests' responders have
		// unsubscribed from the default one, but their UNSUB may still be
		// on its way to the NATS server, which could route this request
		// to them.
		const subject = "lifecycle.shutdown-deadline"
		s := serve(t, responder.Config{Conn: nc, Subject: subject, Backend: backend.BackendFunc(
			func(context.Context, backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
				running <- struct{}{}
				<-release
				return backend.DHCP{}, backend.Netboot{}, nil
			})})
		defer close(release)
		if err := nc.PublishRequest(subject, nc.NewRespInbox(), requestEvent(mustMAC(t, "52:54:00:00:0c:01"), "")); err != nil {
			t.Fatal(err)
		}
		select {
		case <-running:
		case <-time.After(10 * time.Second):
			t.Fatal("the request did not reach the backend in 10 s")
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := s.Shutdown(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("Shutdown with a done context = %v, want context.Canceled", err)
		}
	})

	t.Run("connection closed", func(t *testing.T) {
		nc := more()
		s, err := responder.New(responder.Config{Conn: nc, Backend: table{}})
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- s.Serve() }()
		nc.Close()
		if err := <-served; !errors.Is(err, nats.ErrConnectionClosed) {
			t.Errorf("Serve after the connection closed = %v, want ErrConnectionClosed", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if _, err := responder.New(responder.Config{Conn: nc, Backend: table{}}); !errors.Is(err, nats.ErrConnectionClosed) {
			t.Errorf("New on a closed connection = %v, want ErrConnectionClosed", err)
		}
	})

	t.Run("connection drained", func(t *testing.T) {
		nc := more()
		s, err := responder.New(responder.Config{Conn: nc, Backend: table{}})
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- s.Serve() }()
		if err := nc.Drain(); err != nil {
			t.Fatal(err)
		}
		if err := <-served; !errors.Is(err, nats.ErrConnectionDraining) && !errors.Is(err, nats.ErrConnectionClosed) {
			t.Errorf("Serve after the connection drained = %v, want ErrConnectionDraining or ErrConnectionClosed", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})

	t.Run("handlers kept", func(t *testing.T) {
		nc := more()
		closedCB := func(*nats.Conn) {}
		errCB := func(*nats.Conn, *nats.Subscription, error) {}
		nc.SetClosedHandler(closedCB)
		nc.SetErrorHandler(errCB)
		s := serve(t, responder.Config{Conn: nc, Backend: table{}})
		if err := s.Shutdown(t.Context()); err != nil {
			t.Fatal(err)
		}
		if reflect.ValueOf(nc.ClosedHandler()).Pointer() != reflect.ValueOf(closedCB).Pointer() ||
			reflect.ValueOf(nc.ErrorHandler()).Pointer() != reflect.ValueOf(errCB).Pointer() {
			t.Error("the connection's handlers were replaced")
		}
	})
}
