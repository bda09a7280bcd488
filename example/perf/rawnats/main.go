//go:build unix

// Command rawnats is the baseline of example/perf/run.sh: a bare nats.go
// request-reply with the bytes and headers of the wire protocol, and
// nothing else (no CloudEvents encoding or decoding, no DHCP, no
// availability machinery). What the full loop costs beyond the DHCP server
// with an in-process backend, compared with what this costs, is the price
// of this module's NATS layer; what this costs is the price of any design
// that asks another process over NATS on each DORA.
//
//	rawnats -echo -url nats://127.0.0.1:4222              # the replier
//	rawnats -url nats://127.0.0.1:4222 -rate 1000 -secs 10  # the requester
//
// The requester issues -rate requests a second, paced every millisecond,
// from -conc goroutines, and prints one line:
//
//	requests 10000 failed 0 cpu_us_per_request 61.9 avg_round_trip_ms 0.203
//
// where the CPU is its own (getrusage), not the NATS server's or the
// replier's: run.sh adds theirs.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/internal/wire"
)

func main() {
	url := flag.String("url", nats.DefaultURL, "NATS server URL")
	subject := flag.String("subject", "tinkerbell.perf.raw", "subject of the requests")
	echo := flag.Bool("echo", false, "reply to every request (queue group) until killed")
	rate := flag.Int("rate", 1000, "requests per second")
	secs := flag.Int("secs", 10, "seconds to run")
	conc := flag.Int("conc", 64, "requests in flight at most")
	timeout := flag.Duration("timeout", 2*time.Second, "timeout of each request")
	flag.Parse()
	if err := run(*url, *subject, *echo, *rate, *secs, *conc, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "rawnats:", err)
		os.Exit(1)
	}
}

func run(url, subject string, echo bool, rate, secs, conc int, timeout time.Duration) error {
	if rate <= 0 || secs <= 0 || conc <= 0 {
		return fmt.Errorf("-rate, -secs and -conc must be positive")
	}
	nc, err := nats.Connect(url, nats.Name("rawnats"))
	if err != nil {
		return err
	}
	defer nc.Close()
	if echo {
		if _, err := serveEcho(nc, subject); err != nil {
			return err
		}
		fmt.Println("ready")
		select {}
	}
	r := request(nc, subject, rate, secs, conc, timeout)
	fmt.Printf("requests %d failed %d cpu_us_per_request %.1f avg_round_trip_ms %.3f\n", r.requests, r.failed, r.cpuPerRequest, r.avgRoundTrip)
	return nil
}

// serveEcho answers every request on subject (in the queue group the
// responders use) with a reply event.
func serveEcho(nc *nats.Conn, subject string) (*nats.Subscription, error) {
	_, reply := payloads()
	msg := &nats.Msg{Header: nats.Header{backend.HeaderContentType: {backend.ContentType}}, Data: reply}
	sub, err := nc.QueueSubscribe(subject, backend.DefaultQueue, func(m *nats.Msg) { _ = m.RespondMsg(msg) })
	if err != nil {
		return nil, err
	}
	return sub, nc.Flush()
}

// result is what a requester run measured.
type result struct {
	requests, failed int64
	cpuPerRequest    float64 // µs of this process's CPU per answered request
	avgRoundTrip     float64 // ms
}

// request sends rate requests a second for secs seconds, at most conc at a
// time, and waits for the last one.
func request(nc *nats.Conn, subject string, rate, secs, conc int, timeout time.Duration) result {
	req, _ := payloads()
	header := nats.Header{backend.HeaderContentType: {backend.ContentType}, backend.HeaderTimeout: {fmt.Sprint(timeout.Milliseconds())}}
	work := make(chan struct{}, rate*secs)
	var done, failed, roundTrips atomic.Int64
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for range work {
				start := time.Now()
				if _, err := nc.RequestMsg(&nats.Msg{Subject: subject, Header: header, Data: req}, timeout); err != nil {
					failed.Add(1)
					continue
				}
				roundTrips.Add(int64(time.Since(start)))
				done.Add(1)
			}
		})
	}
	cpu0 := cpuTime()
	start := time.Now()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for sent, total := 0, rate*secs; sent < total; {
		<-tick.C
		due := min(total, int(float64(rate)*time.Since(start).Seconds()))
		for ; sent < due; sent++ {
			work <- struct{}{}
		}
	}
	close(work)
	wg.Wait()
	n := max(1, done.Load())
	return result{
		requests:      done.Load(),
		failed:        failed.Load(),
		cpuPerRequest: float64((cpuTime() - cpu0).Microseconds()) / float64(n),
		avgRoundTrip:  float64(roundTrips.Load()) / 1e6 / float64(n),
	}
}

// payloads returns a lookup's request and reply events as the wire
// protocol encodes them (the reply a typical reservation).
func payloads() (request, reply []byte) {
	mac, _ := net.ParseMAC("52:54:00:ab:00:01")
	var ids wire.IDs
	now := time.Now()
	request = wire.AppendRequest(nil, &wire.Attrs{Source: "/tinkerbell/dhcp", Type: backend.RequestEventType, Time: now}, &ids,
		&backend.DHCPRequest{MACAddress: mac})
	m := backend.Message{}
	m.MACAddress = mac
	m.IPAddress = netip.MustParseAddr("198.18.16.1")
	m.SubnetMask = backend.MaskFrom(16)
	m.DefaultGateway = netip.MustParseAddr("198.18.0.1")
	m.LeaseTime = 3600
	reply = wire.AppendResponse(nil, &wire.Attrs{Source: "/tinkerbell/responder", Type: backend.ResponseEventType, Time: now}, &ids, &m)
	return request, reply
}

// cpuTime is the CPU time of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
