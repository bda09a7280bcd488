package natstest

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func echo(t *testing.T, nc *nats.Conn, subject string) {
	t.Helper()
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) { _ = m.Respond(m.Data) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

func request(t *testing.T, nc *nats.Conn, subject string) {
	t.Helper()
	msg, err := nc.Request(subject, []byte("ping"), 5*time.Second)
	if err != nil {
		t.Fatalf("request on %s: %v", subject, err)
	}
	if string(msg.Data) != "ping" {
		t.Fatalf("reply = %q, want ping", msg.Data)
	}
}

func TestRunAndConnect(t *testing.T) {
	s := Run(t, nil)
	if s.Addr() == nil {
		t.Fatal("server has no address")
	}
	nc := Connect(t, s)
	echo(t, nc, "a")
	request(t, nc, "a")
	ip := ConnectInProcess(t, s)
	request(t, ip, "a")
}

func TestRestartKeepsPortAndClientsReconnect(t *testing.T) {
	s := Run(t, nil)
	reconnected := make(chan struct{}, 1)
	nc := Connect(t, s, nats.ReconnectWait(10*time.Millisecond), nats.MaxReconnects(-1),
		nats.ReconnectHandler(func(*nats.Conn) { reconnected <- struct{}{} }))
	echo(t, nc, "a")
	s2 := Restart(t, s)
	if s2.ClientURL() != s.ClientURL() {
		t.Fatalf("restarted on %s, want %s", s2.ClientURL(), s.ClientURL())
	}
	select {
	case <-reconnected:
	case <-time.After(10 * time.Second):
		t.Fatal("client did not reconnect")
	}
	request(t, nc, "a")
}

func TestRunCluster(t *testing.T) {
	servers := RunCluster(t, 3)
	a := Connect(t, servers[0])
	c := Connect(t, servers[2])
	echo(t, a, "x")
	// Interest propagates over routes asynchronously: poll for it, bounded
	// by a deadline.
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		_, err := c.Request("x", []byte("ping"), time.Second)
		if err == nil {
			break
		}
		if !errors.Is(err, nats.ErrNoResponders) || time.Now().After(deadline) {
			t.Fatalf("request across the cluster: %v", err)
		}
		<-tick.C
	}
	request(t, c, "x")
}

func TestRunWithUsersEnforcesPermissions(t *testing.T) {
	pub, seed := NewUserNKey(t)
	s := RunWithUsers(t, []User{
		{Name: "dhcp", Password: "p1", Publish: []string{"tinkerbell.>"}, Subscribe: []string{"_INBOX.>"}},
		{NKey: pub, Publish: []string{}, Subscribe: []string{"tinkerbell.>"}, AllowResponses: true},
	})
	if _, err := nats.Connect(s.ClientURL()); err == nil {
		t.Fatal("anonymous connection accepted")
	}
	responder := Connect(t, s, NKeyOption(t, seed))
	echo(t, responder, "tinkerbell.dhcp")
	client := Connect(t, s, nats.UserInfo("dhcp", "p1"))
	request(t, client, "tinkerbell.dhcp")

	errs := make(chan error, 1)
	rogue := Connect(t, s, nats.UserInfo("dhcp", "p1"), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case errs <- err:
		default:
		}
	}))
	if _, err := rogue.Subscribe("tinkerbell.dhcp", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	_ = rogue.Flush()
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Fatalf("error = %v, want permission violation", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no permission violation reported for a subscription the user may not make")
	}
}
