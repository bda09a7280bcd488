package nats_test

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/internal/natstest"
	"github.com/tinkerbell/backend/internal/wire"
	natsbackend "github.com/tinkerbell/backend/nats"
)

// newSigner returns a signer with a fresh user key.
func newSigner(t testing.TB) *wire.Signer {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	s, err := wire.NewSigner(kp)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// signedReply answers req with m, signed by s for req's event id.
func signedReply(req *nats.Msg, m backend.Message, s *wire.Signer) *nats.Msg {
	ev, err := wire.Decode(req.Data, backend.RequestEventType)
	if err != nil {
		return nil
	}
	var ids wire.IDs
	a := wire.Attrs{Source: "/test/responder", Type: backend.ResponseEventType, Time: time.Now()}
	b, err := wire.AppendSignedResponse(nil, &a, &ids, &m, ev.ID, s)
	if err != nil {
		return nil
	}
	return reply(b)
}

// TestSignedReplies: with TrustedKeys, only replies signed by a trusted key
// for this very request are accepted.
func TestSignedReplies(t *testing.T) {
	trusted, other := newSigner(t), newSigner(t)
	full := fullMessage(testMAC)
	tests := []struct {
		name   string
		answer func(req *nats.Msg) *nats.Msg
		ok     bool
		err    error // matched with errors.Is when !ok
	}{
		{name: "signed by a trusted key", ok: true, answer: func(req *nats.Msg) *nats.Msg { return signedReply(req, full, trusted) }},
		{name: "unsigned", err: wire.ErrUnsigned, answer: func(*nats.Msg) *nats.Msg { return reply(responseEvent(full)) }},
		{name: "micro error headers only", err: wire.ErrUnsigned, answer: func(*nats.Msg) *nats.Msg {
			return &nats.Msg{Header: nats.Header{backend.HeaderServiceErrorCode: {"404"}, backend.HeaderServiceError: {"no"}}}
		}},
		{name: "signed by another key", err: wire.ErrUntrustedSigner, answer: func(req *nats.Msg) *nats.Msg { return signedReply(req, full, other) }},
		{name: "signed for another request", err: wire.ErrSignatureMismatch, answer: func(req *nats.Msg) *nats.Msg {
			var ids wire.IDs
			a := wire.Attrs{Source: "/test/responder", Type: backend.ResponseEventType}
			b, _ := wire.AppendSignedResponse(nil, &a, &ids, &full, "another-request", trusted)
			return reply(b)
		}},
		{name: "tampered data", err: wire.ErrSignatureMismatch, answer: func(req *nats.Msg) *nats.Msg {
			m := signedReply(req, full, trusted)
			m.Data = []byte(replaceOnce(string(m.Data), "198.18.0.10", "198.18.0.66"))
			return m
		}},
	}
	env := newEnv(t)
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			subject := "test.signed." + string(rune('a'+i))
			var requests atomicCounter
			respond(t, env.resp, subject, func(m *nats.Msg) *nats.Msg { requests.add(); return tc.answer(m) })
			b := newBackend(t, env.req, natsbackend.Config{Subject: subject, TrustedKeys: []string{trusted.PublicKey()}, Timeout: 200 * time.Millisecond})
			d, _, err := b.Lookup(t.Context(), backend.DHCPRequest{MACAddress: testMAC})
			if tc.ok {
				if err != nil || d.IPAddress != full.IPAddress {
					t.Fatalf("Lookup = %v, %v; want the signed answer", d.IPAddress, err)
				}
				return
			}
			if !errors.Is(err, backend.ErrBadSignature) || !errors.Is(err, tc.err) {
				t.Errorf("Lookup: error %v, want ErrBadSignature and %v", err, tc.err)
			}
			if errors.Is(err, backend.ErrInvalidMessage) {
				t.Errorf("Lookup: error %v matches ErrInvalidMessage", err)
			}
			// It asked again: another responder could be the real one.
			if s := b.Stats(); s.Lookups[natsbackend.OutcomeBadSignature] != 1 || s.Rejected < 2 {
				t.Errorf("Stats: %d bad-signature lookups, %d rejected replies; want 1 and at least 2", s.Lookups[natsbackend.OutcomeBadSignature], s.Rejected)
			}
		})
	}
}

func replaceOnce(s, old, repl string) string {
	for i := 0; i+len(old) <= len(s); i++ {
		if s[i:i+len(old)] == old {
			return s[:i] + repl + s[i+len(old):]
		}
	}
	panic("fixture does not contain " + old)
}

// TestSignedRogue: without any NATS permissions, a rogue queue member
// answers some lookups with a forged boot script; a requester that trusts
// only the real responder's key rejects every forged answer and gets the
// real one.
func TestSignedRogue(t *testing.T) {
	env := newEnv(t)
	real := newSigner(t)
	rogue := natstest.Connect(t, env.srv)
	forged := fullMessage(testMAC)
	forged.IPXEScriptURL = "http://203.0.113.66/auto.ipxe"
	var forgedN atomicCounter
	queueRespond(t, rogue, backend.DefaultSubject, func(*nats.Msg) *nats.Msg {
		forgedN.add()
		return reply(responseEvent(forged))
	})
	queueRespond(t, env.resp, backend.DefaultSubject, func(m *nats.Msg) *nats.Msg {
		return signedReply(m, fullMessage(testMAC), real)
	})
	b := newBackend(t, env.req, natsbackend.Config{TrustedKeys: []string{real.PublicKey()}})
	for i := range 50 {
		_, n, err := b.Lookup(t.Context(), backend.DHCPRequest{MACAddress: testMAC})
		if err != nil {
			t.Fatalf("Lookup %d: %v", i, err)
		}
		if n.IPXEScriptURL.String() != fullMessage(testMAC).IPXEScriptURL.String() {
			t.Fatalf("Lookup %d: forged script %v accepted", i, n.IPXEScriptURL)
		}
	}
	if forgedN.load() == 0 {
		t.Skip("the queue group never picked the rogue")
	}
	t.Logf("rogue answered %d times, rejected %d", forgedN.load(), b.Stats().Rejected)
}

func TestNewTrustedKeys(t *testing.T) {
	env := newEnv(t)
	kp, _ := nkeys.CreateUser()
	seed, _ := kp.Seed()
	for _, keys := range [][]string{{"not a key"}, {string(seed)}} {
		if _, err := natsbackend.New(natsbackend.Config{Conn: env.req, TrustedKeys: keys}); !errors.Is(err, backend.ErrInvalidConfig) {
			t.Errorf("New with TrustedKeys %.8q…: error %v, want ErrInvalidConfig", keys[0], err)
		}
	}
}
