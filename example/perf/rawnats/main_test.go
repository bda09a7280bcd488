//go:build unix

package main

import (
	"testing"
	"time"

	"github.com/tinkerbell/backend/internal/natstest"
)

// TestRequestEcho runs the baseline's two halves against an embedded NATS
// server: every request is answered, and the figures are filled in.
func TestRequestEcho(t *testing.T) {
	s := natstest.Run(t, nil)
	if _, err := serveEcho(natstest.Connect(t, s), "perf.raw.test"); err != nil {
		t.Fatal(err)
	}
	r := request(natstest.Connect(t, s), "perf.raw.test", 200, 1, 8, 5*time.Second)
	if r.requests != 200 || r.failed != 0 {
		t.Fatalf("answered %d, failed %d; want 200, 0", r.requests, r.failed)
	}
	if r.avgRoundTrip <= 0 || r.cpuPerRequest < 0 {
		t.Errorf("figures not measured: %+v", r)
	}
}
