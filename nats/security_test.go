package nats_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/internal/natstest"
	"github.com/tinkerbell/backend/internal/wire"
	natsbackend "github.com/tinkerbell/backend/nats"
	"github.com/tinkerbell/backend/responder"
)

// violations collects the permission violations a connection is told of.
type violations struct {
	mu   sync.Mutex
	errs []string
}

func (v *violations) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	if errors.Is(err, nats.ErrPermissionViolation) {
		v.mu.Lock()
		v.errs = append(v.errs, err.Error())
		v.mu.Unlock()
	}
}

// seen reports whether a violation mentioning s was reported.
func (v *violations) seen(s string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, e := range v.errs {
		if strings.Contains(e, s) {
			return true
		}
	}
	return false
}

// TestPermissionMatrix runs the README's policy: each DHCP server may
// publish only on the lookup subject and subscribe only under its own inbox
// prefix; responders subscribe to the subject and publish only replies
// (allow_responses); any other user may neither subscribe to the subject
// nor publish or subscribe under _INBOX.
func TestPermissionMatrix(t *testing.T) {
	type user struct {
		pub, seed string
		v         violations
	}
	newUser := func() *user {
		pub, seed := natstest.NewUserNKey(t)
		return &user{pub: pub, seed: string(seed)}
	}
	a, b, resp, rogue := newUser(), newUser(), newUser(), newUser()
	const prefixA, prefixB = "_INBOX.dhcp-a", "_INBOX.dhcp-b"
	dhcpPerms := func(prefix string) *server.Permissions {
		return &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{backend.DefaultSubject}},
			Subscribe: &server.SubjectPermission{Allow: []string{prefix + ".>"}},
		}
	}
	opts := natstest.Options()
	opts.Nkeys = []*server.NkeyUser{
		{Nkey: a.pub, Permissions: dhcpPerms(prefixA)},
		{Nkey: b.pub, Permissions: dhcpPerms(prefixB)},
		{Nkey: resp.pub, Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Deny: []string{">"}},
			Subscribe: &server.SubjectPermission{Allow: []string{backend.DefaultSubject, "$SRV.>"}},
			Response:  &server.ResponsePermission{MaxMsgs: 1, Expires: time.Minute},
		}},
		{Nkey: rogue.pub, Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Deny: []string{"tinkerbell.>", "_INBOX.>"}},
			Subscribe: &server.SubjectPermission{Deny: []string{"tinkerbell.>", "_INBOX.>"}},
		}},
	}
	srv := natstest.Run(t, opts)
	connect := func(u *user) *nats.Conn {
		t.Helper()
		return natstest.Connect(t, srv, natstest.NKeyOption(t, []byte(u.seed)), nats.ErrorHandler(u.v.handler))
	}
	ac, bc, rc, xc := connect(a), connect(b), connect(resp), connect(rogue)

	s, err := responder.New(responder.Config{Conn: rc, Backend: answers})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { _ = s.Serve(); close(served) }()
	t.Cleanup(func() { _ = s.Close(); <-served })
	if err := rc.Flush(); err != nil {
		t.Fatal(err)
	}
	reqA := newBackend(t, ac, natsbackend.Config{InboxPrefix: prefixA})
	reqB := newBackend(t, bc, natsbackend.Config{InboxPrefix: prefixB})
	macA, macB := net.HardwareAddr{2, 0, 0, 0, 0, 0xa}, net.HardwareAddr{2, 0, 0, 0, 0, 0xb}
	lookup := func(r *natsbackend.Backend, mac net.HardwareAddr) error {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		d, _, err := r.Lookup(ctx, backend.DHCPRequest{MACAddress: mac})
		if err == nil && d.IPAddress != answerFor(mac).IPAddress {
			return errors.New("wrong answer " + d.IPAddress.String())
		}
		return err
	}

	t.Run("each DHCP server gets its answers", func(t *testing.T) {
		if err := lookup(reqA, macA); err != nil {
			t.Errorf("A: %v", err)
		}
		if err := lookup(reqB, macB); err != nil {
			t.Errorf("B: %v", err)
		}
	})

	t.Run("A cannot read B's replies", func(t *testing.T) {
		var got atomicCounter
		for _, subj := range []string{prefixB + ".>", "_INBOX.>", ">"} {
			sub, err := ac.Subscribe(subj, func(*nats.Msg) { got.add() })
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = sub.Unsubscribe() })
		}
		_ = ac.Flush()
		waitFor(t, func() bool { return a.v.seen(`"` + prefixB + `.>"`) })
		for range 20 {
			if err := lookup(reqB, macB); err != nil {
				t.Fatal(err)
			}
		}
		_ = ac.Flush()
		if n := got.load(); n != 0 {
			t.Errorf("A received %d messages under B's inbox", n)
		}
	})

	t.Run("A cannot forge a reply into B's inbox", func(t *testing.T) {
		forged := responseEvent(fullMessage(macB))
		if err := ac.Publish(reqB.Inbox()+".1", forged); err != nil {
			t.Fatal(err)
		}
		_ = ac.Flush()
		waitFor(t, func() bool { return a.v.seen(reqB.Inbox()) })
	})

	t.Run("A cannot make the responder answer into B's lookups", func(t *testing.T) {
		// The worst case: A learnt B's inbox (it cannot: it cannot
		// subscribe there) and sends lookups for its own MAC with B's
		// reply subjects. The responder's real replies answer another
		// question; B rejects them and gets its own answers.
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			var ids wire.IDs
			a := wire.Attrs{Source: "/dhcp-a", Type: backend.RequestEventType}
			body := wire.AppendRequest(nil, &a, &ids, &backend.DHCPRequest{MACAddress: macA})
			// 1,000 a second, each with one of B's next reply subjects.
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				next := reqB.Stats().Requests + 1
				for tok := next; tok < next+4; tok++ {
					_ = ac.PublishRequest(backend.DefaultSubject, reqB.Inbox()+"."+itoa(int(tok)), body)
				}
			}
		})
		for range 50 {
			if err := lookup(reqB, macB); err != nil {
				t.Errorf("B: %v", err)
			}
		}
		close(stop)
		wg.Wait()
		t.Logf("B rejected %d replies meant for A's questions", reqB.Stats().Rejected)
	})

	t.Run("a rogue can neither answer nor forge", func(t *testing.T) {
		var got atomicCounter
		for _, subj := range []string{backend.DefaultSubject, "_INBOX.>"} {
			sub, err := xc.QueueSubscribe(subj, backend.DefaultQueue, func(*nats.Msg) { got.add() })
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = sub.Unsubscribe() })
		}
		_ = xc.Flush()
		waitFor(t, func() bool { return rogue.v.seen(`"` + backend.DefaultSubject + `"`) })
		if err := xc.Publish(reqA.Inbox()+".1", responseEvent(fullMessage(macA))); err != nil {
			t.Fatal(err)
		}
		if err := xc.PublishRequest(backend.DefaultSubject, "rogue.inbox", []byte("{}")); err != nil {
			t.Fatal(err)
		}
		_ = xc.Flush()
		waitFor(t, func() bool { return rogue.v.seen(reqA.Inbox()) })
		for range 20 {
			if err := lookup(reqA, macA); err != nil {
				t.Fatalf("A: %v", err)
			}
		}
		if n := got.load(); n != 0 {
			t.Errorf("the rogue received %d lookups or replies", n)
		}
		if n := reqA.Stats().Rejected; n != 0 {
			t.Errorf("A rejected %d replies: someone else answered", n)
		}
	})
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for ; n > 0; n /= 10 {
		i--
		b[i] = byte('0' + n%10)
	}
	return string(b[i:])
}
