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
// A lookup publishes a request to [Backend.Subject] with the NATS header
// Content-Type: application/cloudevents+json and the header
// [backend.HeaderTimeout] holding its time budget: the smaller of [Config.Timeout]
// and the time left before the caller's context deadline, in whole
// milliseconds, rounded down. It is relative, not a timestamp, because
// clocks on different hosts disagree; a responder gives its backend a
// context with that deadline. The body is a CloudEvent in structured JSON
// mode of type [backend.RequestEventType], with a fresh id, the time, the
// configured source and the [backend.DHCPRequest] as data. When the
// caller's context holds an OpenTelemetry span, its W3C traceparent is put
// both in the data's Traceparent field and in the CloudEvents traceparent
// extension.
//
// The reply is a CloudEvent of type [backend.ResponseEventType] whose data
// is a [backend.Message], as a JSON object, a JSON string holding the
// object, or data_base64. Its Error code becomes a Go error: 404 matches
// [backend.ErrNotFound], 400 [backend.ErrInvalidMessage], 503
// [backend.ErrUnavailable], and every non-zero code is a
// [*backend.RemoteError] with the code and message. A reply with no event
// but the NATS micro error headers ([backend.HeaderServiceError],
// [backend.HeaderServiceErrorCode]) is the error they describe (code 500 when the
// code is missing or not a positive number). A reply that is not a valid
// response event, is larger than [backend.MaxEventSize], or answers for another
// MAC address is an error matching [backend.ErrInvalidMessage] that says
// what was wrong and quotes the start of the reply or the offending value.
//
// # Retries and deadlines
//
// An attempt that gets no reply within its budget, or finds no responder
// on the subject, is retried up to [RetryPolicy.MaxAttempts] times in all,
// after a backoff that doubles from [RetryPolicy.InitialBackoff] to
// [RetryPolicy.MaxBackoff], with jitter. A retry is never started when the
// caller's deadline would pass during its backoff. A reply is never
// retried, whatever it says. When nobody listened, Lookup returns
// [backend.ErrNoBackend] at once after the attempts, without waiting for
// the deadline; when the caller's context ends, the error matches
// ctx.Err() ([context.Canceled] or [context.DeadlineExceeded]) and
// [backend.ErrUnavailable].
//
// Lookups start no goroutines of their own: nats.go delivers every reply
// of a connection through one subscription, and a lookup whose context
// ends leaves nothing behind.
package nats
