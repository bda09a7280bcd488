// Package nats provides a [backend.Backend] that asks for its answers over
// NATS request-reply: each lookup is one CloudEvent sent to a subject, and
// whichever responder of the subject's queue group answers first decides.
// Package [github.com/tinkerbell/backend/responder] is the other end.
//
// This package's name collides with nats.go's. Import it as natsbackend:
//
//	import (
//		"github.com/nats-io/nats.go"
//		natsbackend "github.com/tinkerbell/backend/nats"
//	)
//
// The connection belongs to the caller: the [Backend] never closes it,
// drains it or replaces its handlers, and many Backends (and responders) may
// share one connection. Reconnection, TLS and authentication (nkeys, creds,
// user and password) are configured on the connection with nats.go's
// options.
//
// # Wire protocol
//
// A lookup publishes a request with NATS header Content-Type:
// application/cloudevents+json and header [HeaderTimeout] holding the
// remaining time budget in milliseconds; the body is a CloudEvent of type
// [backend.RequestEventType] whose data is a [backend.DHCPRequest]. The
// reply is a CloudEvent of type [backend.ResponseEventType] whose data is a
// [backend.Message]; its Error code becomes a Go error (404 →
// [backend.ErrNotFound], 400 → [backend.ErrInvalidMessage], 503 →
// [backend.ErrUnavailable], others → [*backend.RemoteError]). A reply with
// no event but NATS micro error headers ([HeaderServiceError],
// [HeaderServiceErrorCode]) is understood too.
package nats
