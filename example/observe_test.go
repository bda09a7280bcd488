package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tinkerbell/backend/dhcpserver"
	"github.com/tinkerbell/backend/internal/natstest"
)

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var httpAddrRe = regexp.MustCompile(`msg="http listening" addr=(\S+)`)

// startRun runs the command with args until the test ends and returns the
// address of its HTTP endpoint, read from its log.
func startRun(t *testing.T, args ...string) (addr string, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var log syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, io.Discard, &log) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if m := httpAddrRe.FindStringSubmatch(log.String()); m != nil {
			return m[1], stop
		}
		select {
		case code := <-done:
			t.Fatalf("%v exited with %d:\n%s", args, code, log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v: no HTTP endpoint after 20s:\n%s", args, log.String())
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitStatus polls url until it answers with status.
func waitStatus(t *testing.T, url string, status int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := get(t, url)
		if code == status {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d %q after 20s, want %d", url, code, body, status)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
}

// scrape returns the value of every series of the endpoint, keyed by
// name{label="value",...} in the exposition's label order.
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	code, body := get(t, "http://"+addr+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for name, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := name
			for _, lp := range m.GetLabel() {
				key += fmt.Sprintf("{%s=%q}", lp.GetName(), lp.GetValue())
			}
			out[key] = value(m)
		}
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Histogram != nil:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return 0
}

// TestObserve runs the responder and the DHCP server with -http-addr,
// scrapes /metrics before and after one DHCP exchange and checks that the
// counters moved; /healthz follows the NATS connection.
func TestObserve(t *testing.T) {
	s := natstest.Run(t, nil)
	respAddr, stopResp := startRun(t, "-responder", "-nats-url", s.ClientURL(), "-hosts", filepath.Join("testdata", "hosts.yaml"),
		"-http-addr", "127.0.0.1:0", "-pprof")

	// A free UDP port for the DHCP server (ListenAndServe binds it).
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	udp := pc.LocalAddr().(*net.UDPAddr)
	pc.Close()
	dhcpAddr, stopDHCP := startRun(t, "-udp", udp.String(), "-server-addr", "127.0.0.1", "-nats-url", s.ClientURL(), "-http-addr", "127.0.0.1:0", "-events")

	waitStatus(t, "http://"+respAddr+"/healthz", http.StatusOK)
	waitStatus(t, "http://"+dhcpAddr+"/healthz", http.StatusOK)

	const subj = `{subject="tinkerbell.dhcp.backend"}`
	counters := []struct {
		addr, name string
	}{
		{dhcpAddr, `tinkerbell_dhcp_requests_received_total{type="discover"}`},
		{dhcpAddr, `tinkerbell_dhcp_requests_received_total{type="request"}`},
		{dhcpAddr, `tinkerbell_dhcp_replies_sent_total{type="offer"}`},
		{dhcpAddr, `tinkerbell_dhcp_replies_sent_total{type="ack"}`},
		{dhcpAddr, `tinkerbell_dhcp_lookup_duration_seconds`},
		{dhcpAddr, `tinkerbell_requester_lookups_total{outcome="ok"}` + subj},
		{dhcpAddr, `tinkerbell_requester_requests_total` + subj},
		{respAddr, `tinkerbell_responder_requests_total` + subj},
		{dhcpAddr, `tinkerbell_events_published_total`},
	}
	before := map[string]map[string]float64{respAddr: scrape(t, respAddr), dhcpAddr: scrape(t, dhcpAddr)}
	for _, c := range counters {
		if _, ok := before[c.addr][c.name]; !ok {
			t.Errorf("%s is not exported before any traffic", c.name)
		}
	}
	if _, ok := before[dhcpAddr][`go_goroutines`]; !ok {
		t.Error("no Go runtime metrics")
	}

	enc := natstest.Connect(t, s)
	evs, err := enc.SubscribeSync("tinkerbell.dhcp.events.>")
	if err != nil {
		t.Fatal(err)
	}
	// The server must know the subscription before the DORA's events.
	if err := enc.Flush(); err != nil {
		t.Fatal(err)
	}
	mac, _ := net.ParseMAC("52:54:00:66:ea:9a")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if l, err := demoDORA(ctx, udp, mac, dhcpserver.DefaultUserClass); err != nil || l.ip != "198.18.0.10" {
		t.Fatalf("DORA: %+v, %v", l, err)
	}
	// The responder counts a request after its reply: poll.
	deadline := time.Now().Add(10 * time.Second)
	for {
		after := map[string]map[string]float64{respAddr: scrape(t, respAddr), dhcpAddr: scrape(t, dhcpAddr)}
		var stuck []string
		for _, c := range counters {
			if after[c.addr][c.name] < before[c.addr][c.name]+1 {
				stuck = append(stuck, fmt.Sprintf("%s: %v → %v", c.name, before[c.addr][c.name], after[c.addr][c.name]))
			}
		}
		if len(stuck) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("counters did not move after a DORA:\n%v", stuck)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}

	for _, want := range []string{"tinkerbell.dhcp.events.offer", "tinkerbell.dhcp.events.ack"} {
		msg, err := evs.NextMsg(5 * time.Second)
		if err != nil || msg.Subject != want {
			t.Fatalf("decision event: %v, %v; want %s", msg, err, want)
		}
	}

	if code, _ := get(t, "http://"+respAddr+"/debug/pprof/"); code != http.StatusOK {
		t.Errorf("-pprof: /debug/pprof/ = %d, want 200", code)
	}
	if code, _ := get(t, "http://"+dhcpAddr+"/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("without -pprof: /debug/pprof/ = %d, want 404", code)
	}

	// Without NATS, neither is ready; when it is back, both are.
	natstest.Shutdown(s)
	waitStatus(t, "http://"+respAddr+"/healthz", http.StatusServiceUnavailable)
	waitStatus(t, "http://"+dhcpAddr+"/healthz", http.StatusServiceUnavailable)
	natstest.RunAgain(t, s)
	waitStatus(t, "http://"+respAddr+"/healthz", http.StatusOK)
	waitStatus(t, "http://"+dhcpAddr+"/healthz", http.StatusOK)
	stopDHCP()
	stopResp()
}

// TestInProcess runs the DHCP server with -in-process: the hosts file
// answers from the same process, with no NATS server anywhere; a known MAC
// gets its lease, and /metrics counts the lookup.
func TestInProcess(t *testing.T) {
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	udp := pc.LocalAddr().(*net.UDPAddr)
	pc.Close()
	addr, stop := startRun(t, "-in-process", "-hosts", filepath.Join("testdata", "hosts.yaml"),
		"-udp", udp.String(), "-server-addr", "127.0.0.1", "-nats-url", "nats://127.0.0.1:1", "-http-addr", "127.0.0.1:0")
	waitStatus(t, "http://"+addr+"/healthz", http.StatusOK)
	before := scrape(t, addr)["tinkerbell_dhcp_lookups_total"]
	mac, _ := net.ParseMAC("52:54:00:66:ea:9a")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if l, err := demoDORA(ctx, udp, mac, dhcpserver.DefaultUserClass); err != nil || l.ip != "198.18.0.10" {
		t.Fatalf("DORA: %+v, %v", l, err)
	}
	if after := scrape(t, addr)["tinkerbell_dhcp_lookups_total"]; after != before+1 {
		t.Errorf("lookups %v → %v, want one for the DORA", before, after)
	}
	stop()

	var stderr bytes.Buffer
	if code := run(t.Context(), []string{"-in-process", "-events", "-udp", udp.String(), "-server-addr", "127.0.0.1"}, io.Discard, &stderr); code != exitUsage || !strings.Contains(stderr.String(), "-events") {
		t.Errorf("-in-process -events: exit %d, want %d with a message:\n%s", code, exitUsage, &stderr)
	}
}
