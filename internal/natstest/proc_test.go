package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestProcFreeze: a frozen child-process server answers nothing; thawed, it
// answers again; a cluster of them routes messages.
func TestProcFreeze(t *testing.T) {
	procs := StartProcCluster(t, 2, "")
	a, err := nats.Connect(procs[0].URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	b, err := nats.Connect(procs[1].URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	sub, err := b.SubscribeSync("x")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	// The subscription's interest crosses the route asynchronously.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := a.Publish("x", []byte("hi")); err != nil {
			t.Fatal(err)
		}
		if _, err := sub.NextMsg(50 * time.Millisecond); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no message across the route")
		}
	}

	procs[0].Freeze()
	if err := a.FlushTimeout(200 * time.Millisecond); err == nil {
		t.Error("a frozen server answered a flush")
	}
	procs[0].Thaw()
	if err := a.FlushTimeout(10 * time.Second); err != nil {
		t.Errorf("flush after thawing: %v", err)
	}
}

// TestProxyStall: nothing crosses a stalled proxy; everything does again
// after Resume.
func TestProxyStall(t *testing.T) {
	s := Run(t, nil)
	p := NewProxy(t, s.Addr().String())
	nc, err := nats.Connect(p.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	p.Stall()
	if err := nc.FlushTimeout(200 * time.Millisecond); err == nil {
		t.Error("a flush crossed a stalled proxy")
	}
	p.Resume()
	if err := nc.FlushTimeout(10 * time.Second); err != nil {
		t.Errorf("flush after Resume: %v", err)
	}
}
