package nats_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/dhcpserver"
	"github.com/tinkerbell/backend/internal/natstest"
	natsbackend "github.com/tinkerbell/backend/nats"
	"github.com/tinkerbell/backend/responder"
)

// The fault tests run real responders (package responder) and freeze
// processes with SIGSTOP. A frozen responder is this test binary run again
// as a child process: TestMain runs childResponder when envChildResponder
// holds a NATS URL.
const envChildResponder = "NATSREQ_TEST_CHILD_RESPONDER"

// answers is the backend of every responder in these tests: each MAC gets
// the reservation answerFor derives from it.
var answers = backend.BackendFunc(func(_ context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
	m := answerFor(req.MACAddress)
	return m.DHCP, m.Netboot, nil
})

// childResponder serves answers on url until it is killed; it prints
// "ready" once its subscription is known to the server.
func childResponder(url string) {
	nc, err := nats.Connect(url, natsbackend.ConnectionOptions()...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	s, err := responder.New(responder.Config{Conn: nc, Backend: answers})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := nc.Flush(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fmt.Println("ready")
	_ = s.Serve()
	os.Exit(0)
}

// child is a responder in a child process.
type child struct {
	cmd  *exec.Cmd
	exit chan struct{}
}

// startChildResponder runs a responder in a child process connected to
// url and waits until it serves. It is killed when the test ends.
func startChildResponder(t *testing.T, url string) *child {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), envChildResponder+"="+url)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, exit: make(chan struct{})}
	ready := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		ready <- line == "ready\n"
		_, _ = io.Copy(io.Discard, out)
		_ = cmd.Wait()
		close(c.exit)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		<-c.exit
	})
	select {
	case ok := <-ready:
		if !ok {
			t.Fatal("child responder did not start")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("child responder not ready after 30s")
	}
	return c
}

func (c *child) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// serveResponder runs an in-process responder of answers on nc until the
// test ends.
func serveResponder(t *testing.T, nc *nats.Conn) {
	t.Helper()
	s, err := responder.New(responder.Config{Conn: nc, Backend: answers})
	if err != nil {
		t.Fatalf("responder.New: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = s.Serve(); close(done) }()
	t.Cleanup(func() { _ = s.Close(); <-done })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// sample is one lookup of a load run.
type sample struct {
	start, end, deadline time.Time
	err                  error
}

// load runs lookups at rate per second for d, each with timeout as its
// deadline and a MAC of its own, and returns them all once each has
// returned. A lookup that does not return within a minute fails the test.
func load(t *testing.T, b backend.Backend, rate int, d, timeout time.Duration) []sample {
	t.Helper()
	var mu sync.Mutex
	var samples []sample
	var wg sync.WaitGroup
	ticker := time.NewTicker(5 * time.Millisecond)
	defer ticker.Stop()
	begin := time.Now()
	stop := begin.Add(d)
	n := 0
	for now := begin; now.Before(stop); now = <-ticker.C {
		// As many as are due by now: a late tick catches up.
		due := int(int64(rate) * int64(now.Sub(begin)) / int64(time.Second))
		for n < due {
			n++
			mac := net.HardwareAddr{0x02, 0, 0, byte(n >> 16), byte(n >> 8), byte(n)}
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(t.Context(), timeout)
				defer cancel()
				dl, _ := ctx.Deadline()
				s := sample{start: time.Now(), deadline: dl}
				dhcp, _, err := b.Lookup(ctx, backend.DHCPRequest{MACAddress: mac})
				s.end = time.Now()
				if err == nil && dhcp.IPAddress != answerFor(mac).IPAddress {
					err = fmt.Errorf("answer for another MAC: %v", dhcp.IPAddress)
				}
				s.err = err
				mu.Lock()
				samples = append(samples, s)
				mu.Unlock()
			})
		}
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("lookups did not return within a minute")
	}
	slices.SortFunc(samples, func(a, b sample) int { return a.start.Compare(b.start) })
	return samples
}

// latencies logs p50, p99 and max of the samples' durations.
func latencies(t *testing.T, samples []sample) {
	t.Helper()
	if len(samples) == 0 {
		return
	}
	d := make([]time.Duration, len(samples))
	for i, s := range samples {
		d[i] = s.end.Sub(s.start)
	}
	slices.Sort(d)
	t.Logf("%d lookups: p50 %v, p99 %v, max %v", len(d), d[len(d)/2], d[len(d)*99/100], d[len(d)-1])
}

// control runs the load of a fault test without the fault, for 2 s: when
// the machine cannot carry it even then (other work starves this process),
// the fault test would measure the machine, not the requester, and is
// skipped.
func control(t *testing.T, b backend.Backend, rate int) {
	t.Helper()
	samples := load(t, b, rate, 2*time.Second, dhcpserver.DefaultLookupTimeout)
	failed, late := len(failures(samples)), 0
	for _, s := range samples {
		if s.end.Sub(s.deadline) > overrunSlack {
			late++
		}
	}
	if failed > 0 || late > 0 || len(samples) < rate*3/2 {
		latencies(t, samples)
		t.Skipf("the machine is too busy: without any fault, %d of %d lookups at %d/s failed and %d overran their deadline", failed, len(samples), rate, late)
	}
}

// overrunSlack is how far past its deadline a lookup may return: timer and
// scheduling delays on a loaded 2-core machine under the race detector.
const overrunSlack = 100 * time.Millisecond

// checkOverruns fails the test for every lookup that returned more than
// overrunSlack after its deadline.
func checkOverruns(t *testing.T, samples []sample) {
	t.Helper()
	var worst time.Duration
	n := 0
	for _, s := range samples {
		if over := s.end.Sub(s.deadline); over > overrunSlack {
			n++
			worst = max(worst, over)
		}
	}
	if n > 0 {
		t.Errorf("%d of %d lookups returned more than %v after their deadline (worst %v)", n, len(samples), overrunSlack, worst)
	}
}

// TestFrozenReplica: one of three responder replicas is frozen (SIGSTOP)
// under steady load: the NATS server keeps giving it a third of the
// requests, and hedges and retries route around it. No lookup fails.
func TestFrozenReplica(t *testing.T) {
	if testing.Short() {
		t.Skip("10 s of load")
	}
	srv := natstest.Run(t, nil)
	replica := startChildResponder(t, srv.ClientURL())
	for range 2 {
		serveResponder(t, natstest.Connect(t, srv))
	}
	b := newBackend(t, natstest.Connect(t, srv), natsbackend.Config{})
	// Every replica answers, and the machine can carry the load.
	control(t, b, 500)
	before := b.Stats()

	replica.signal(t, syscall.SIGSTOP)
	samples := load(t, b, 500, 10*time.Second, dhcpserver.DefaultLookupTimeout)
	s := b.Stats()
	latencies(t, samples)
	t.Logf("requests %d, hedges %d (won %d, denied %d), retries %d", s.Requests-before.Requests,
		s.Hedges-before.Hedges, s.HedgeWins-before.HedgeWins, s.HedgesDenied-before.HedgesDenied, s.Retries-before.Retries)
	if len(samples) < 4500 {
		t.Errorf("only %d lookups in 10 s; want at least 500/s", len(samples))
	}
	if failed := failures(samples); len(failed) > 0 {
		t.Errorf("%d of %d lookups failed, first: %v", len(failed), len(samples), failed[0].err)
	}
	checkOverruns(t, samples)
	replica.signal(t, syscall.SIGCONT)
}

func failures(samples []sample) []sample {
	var f []sample
	for _, s := range samples {
		if s.err != nil {
			f = append(f, s)
		}
	}
	return f
}

// TestStalledConnection: the requester's connection stalls (a proxy stops
// forwarding) while its write buffer is full, so that nats.go's flusher
// sits in a blocked socket write holding the connection's lock, with
// nats.go's default options. Every lookup still returns by its deadline.
func TestStalledConnection(t *testing.T) {
	srv := natstest.Run(t, nil)
	serveResponder(t, natstest.Connect(t, srv))
	p := natstest.NewProxy(t, srv.Addr().String())
	nc, err := nats.Connect(p.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	t.Cleanup(p.Close) // runs first: unblocks the flusher so that Close can finish
	b := newBackend(t, nc, natsbackend.Config{})
	if _, _, err := b.Lookup(t.Context(), backend.DHCPRequest{MACAddress: testMAC}); err != nil {
		t.Fatalf("Lookup before the stall: %v", err)
	}

	p.Stall()
	// Fill the socket buffers: 1 MB messages until publishing blocks.
	var published atomicCounter
	go func() {
		junk := make([]byte, 1<<20)
		for {
			if nc.Publish("junk", junk) != nil {
				return
			}
			published.add()
		}
	}()
	// Publishing is stuck once the count stops moving.
	last, still := int64(-1), 0
	deadline := time.Now().Add(30 * time.Second)
	for still < 20 {
		if time.Now().After(deadline) {
			t.Fatal("publishing never blocked")
		}
		time.Sleep(10 * time.Millisecond) // polling a counter
		if n := published.load(); n == last {
			still++
		} else {
			last, still = n, 0
		}
	}
	samples := load(t, b, 100, time.Second, 300*time.Millisecond)
	if len(failures(samples)) != len(samples) {
		t.Errorf("%d of %d lookups succeeded through a stalled connection", len(samples)-len(failures(samples)), len(samples))
	}
	for _, s := range samples {
		if !errors.Is(s.err, backend.ErrUnavailable) {
			t.Errorf("Lookup: error %v, want ErrUnavailable", s.err)
			break
		}
	}
	checkOverruns(t, samples)
	t.Logf("%d lookups on a stalled connection (%d MB written before it blocked)", len(samples), last)
}

// loadAsync runs [load] in a goroutine; the returned function waits for
// its samples.
func loadAsync(t *testing.T, b backend.Backend, rate int, d, timeout time.Duration) func() []sample {
	t.Helper()
	ch := make(chan []sample, 1)
	go func() { ch <- load(t, b, rate, d, timeout) }()
	return func() []sample { return <-ch }
}

// TestFrozenNATSNode: the NATS server the requester is connected to, in a
// cluster of three, freezes (SIGSTOP) under steady load. No lookup returns
// more than overrunSlack after its deadline, and lookups succeed again
// through another server within a few seconds, while it is still frozen.
func TestFrozenNATSNode(t *testing.T) {
	if testing.Short() {
		t.Skip("a 10 s freeze")
	}
	procs := natstest.StartProcCluster(t, 3, "")
	connect := func(urls ...string) *nats.Conn {
		t.Helper()
		nc, err := nats.Connect(strings.Join(urls, ","), append(natsbackend.ConnectionOptions(), nats.DontRandomize())...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	// Responders on the two servers that stay healthy; the requester on
	// the one that freezes, knowing the others.
	serveResponder(t, connect(procs[1].URL()))
	serveResponder(t, connect(procs[2].URL()))
	b := newBackend(t, connect(procs[0].URL(), procs[1].URL(), procs[2].URL()), natsbackend.Config{})
	// The responders' interest reaches the requester's server through the
	// routes.
	waitFor(t, func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		_, _, err := b.Lookup(ctx, backend.DHCPRequest{MACAddress: testMAC})
		return err == nil
	})

	control(t, b, 200)
	const (
		rate     = 200
		before   = time.Second
		frozen   = 10 * time.Second
		recovery = 5 * time.Second // lookups started later than this into the freeze must succeed
	)
	wait := loadAsync(t, b, rate, before+frozen+time.Second, dhcpserver.DefaultLookupTimeout)
	time.Sleep(before) // load runs meanwhile; this only places the freeze
	freezeAt := time.Now()
	procs[0].Freeze()
	time.Sleep(frozen)
	thawAt := time.Now()
	procs[0].Thaw()
	samples := wait()

	latencies(t, samples)
	checkOverruns(t, samples)
	var late, lateFailed, failed int
	var lastFailure time.Time
	for _, s := range samples {
		if s.err == nil {
			continue
		}
		failed++
		if s.start.After(lastFailure) {
			lastFailure = s.start
		}
	}
	for _, s := range samples {
		if s.start.After(freezeAt.Add(recovery)) && s.start.Before(thawAt) {
			late++
			if s.err != nil {
				lateFailed++
			}
		}
	}
	t.Logf("%d lookups, %d failed; the last failed lookup started %v after the freeze", len(samples), failed, lastFailure.Sub(freezeAt).Round(time.Millisecond))
	if late == 0 || lateFailed > 0 {
		t.Errorf("%d of %d lookups started %v or more into the freeze failed; want all to succeed through another server", lateFailed, late, recovery)
	}
}

// TestRestartRespondersLate: the NATS server restarts; the requester
// reconnects at once, the responders half a second later. Only lookups
// whose deadline passed before the responders were back may fail: the
// others keep asking through "no responders" until they are.
func TestRestartRespondersLate(t *testing.T) {
	srv := natstest.Run(t, nil)
	reqConn := natstest.Connect(t, srv, append(natsbackend.ConnectionOptions(), nats.ReconnectWait(10*time.Millisecond), nats.ReconnectJitter(0, 0))...)
	var mu sync.Mutex
	var back time.Time // when the last responder connection reconnected
	respConn := natstest.Connect(t, srv, append(natsbackend.ConnectionOptions(),
		nats.ReconnectWait(500*time.Millisecond), nats.ReconnectJitter(0, 0),
		nats.ReconnectHandler(func(*nats.Conn) { mu.Lock(); back = time.Now(); mu.Unlock() }))...)
	serveResponder(t, respConn)
	b := newBackend(t, reqConn, natsbackend.Config{})
	if _, _, err := b.Lookup(t.Context(), backend.DHCPRequest{MACAddress: testMAC}); err != nil {
		t.Fatalf("Lookup before the restart: %v", err)
	}
	control(t, b, 100)

	wait := loadAsync(t, b, 100, 4*time.Second, dhcpserver.DefaultLookupTimeout)
	time.Sleep(time.Second) // load runs meanwhile; this only places the restart
	downAt := time.Now()
	natstest.Shutdown(srv)
	t.Logf("down after %v", time.Since(downAt))
	time.Sleep(200 * time.Millisecond)
	natstest.RunAgain(t, srv)
	t.Logf("up after %v", time.Since(downAt))
	samples := wait()
	t.Logf("load done after %v", time.Since(downAt))

	mu.Lock()
	backAt := back
	mu.Unlock()
	if backAt.IsZero() {
		t.Fatalf("the responders did not reconnect: status %v, requester %v, %d samples, %d failed; %v", respConn.Status(), reqConn.Status(), len(samples), len(failures(samples)), time.Since(downAt))
	}
	latencies(t, samples)
	checkOverruns(t, samples)
	var failed, excused int
	for _, s := range samples {
		if s.err == nil {
			continue
		}
		failed++
		// The responders' subscription is back a moment after their
		// connection: allow for it.
		if s.deadline.Before(backAt.Add(overrunSlack)) {
			excused++
			continue
		}
		t.Errorf("lookup started %v after the shutdown, with its deadline %v after the responders were back, failed: %v",
			s.start.Sub(downAt).Round(time.Millisecond), s.deadline.Sub(backAt).Round(time.Millisecond), s.err)
	}
	t.Logf("%d lookups, %d failed (all with their deadline before the responders were back, %v after the shutdown); stats %+v",
		len(samples), failed, backAt.Sub(downAt).Round(time.Millisecond), b.Stats().Lookups)
}
