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
// share one connection; each Backend holds one subscription on it, for its
// replies ([Backend.Close] releases it). Reconnection, TLS and
// authentication (nkeys, creds, user and password) are configured on the
// connection with nats.go's options; start from [ConnectionOptions]. New
// logs a warning when the connection is not TLS and its server is not on a
// loopback address.
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
// A lookup asks about exactly one of a MAC address or an IP address
// ([backend.DHCPRequest.Validate]); an answer that does not match the
// question ([backend.DHCPRequest.Match]) is rejected.
//
// # Deadlines that hold
//
// Lookup returns by its context's deadline whatever the connection does:
// a stalled socket, a full reconnect buffer, nats.go's flusher blocked in
// a socket write while it holds the connection's lock. No lookup calls into
// nats.go itself: each [Backend] publishes through one goroutine of its own
// (started when there is work, gone when there is none) and receives its
// replies on one subscription of its own, <InboxPrefix>.<unique id>.>,
// whose callback hands each reply to its lookup. When the connection is
// stuck, only that goroutine waits on it; lookups wait for their reply or
// their deadline, and at most 4,096 requests queue for the connection
// (beyond that a request fails at once). A request whose lookup has
// returned is never sent.
//
// Noticing that a NATS server is sick is the connection's job, and
// nats.go's defaults are too patient for DHCP (a ping every two minutes):
// connect with [ConnectionOptions], which ping every second, give up on a
// server after two unanswered pings or a one-second write, and reconnect to
// another server of the cluster within about two seconds. The package doc
// of [ConnectionOptions] explains the trade-off.
//
// # Attempts, retries and hedged requests
//
// A lookup's time is its context's deadline, or [RetryPolicy.MaxAttempts]
// × [Config.Timeout] without one. It is shared among up to MaxAttempts
// attempts: each gets the time left divided by the attempts left (at most
// Timeout), so that with the DHCP server's 2 s deadline and the defaults
// there are three attempts of about 666 ms. Each request tells the
// responder the time its attempt has left.
//
// Within an attempt, when no reply came within the hedge delay
// ([Config.HedgeDelay], default 50 ms; longer when replies are slow for
// everybody: three times the observed 90th percentile of the reply time, up
// to 250 ms), the same request is sent again
// — a hedged request: the queue group usually gives it to another replica
// — and again after each further delay. The first valid reply to any
// request of the lookup answers it. Hedges are budgeted: at most one per
// lookup on average, in bursts of at most 500; lookups that are answered in
// time send exactly one request.
//
// A 503 reply (the replica is overloaded or its backend unavailable) ends
// the attempt: after a backoff that doubles from
// [RetryPolicy.InitialBackoff] to [RetryPolicy.MaxBackoff], with jitter,
// the next attempt asks again, usually another replica. When the NATS
// server says "no responders" (for example in the moments after a restart,
// before the responders have reconnected), the request is sent again after
// the same backoff for as long as the lookup's time lasts, without using up
// attempts; when that time runs out, Lookup returns [backend.ErrNoBackend]
// (rather than waiting for the deadline when the next backoff would not
// fit). Every other reply is final: an answer, 404, 400, 500 and any other
// code. A reply that is not a valid response event is rejected and
// counted; when no other request of the lookup is still waiting, it is the
// lookup's error. An answer for another client (what a lookup sent by
// someone else with our reply subject produces) is rejected, counted, and
// the request sent again while the lookup's time lasts; if nothing better
// comes, the lookup fails with it.
//
// When the caller's context ends, the error matches ctx.Err()
// ([context.Canceled] or [context.DeadlineExceeded]) and
// [backend.ErrUnavailable].
//
// # Security
//
// Replies arrive on <[Config.InboxPrefix]>.<random id>.<token>: give each
// DHCP server its own prefix and its credential subscribe permission on
// that prefix only, so that no DHCP server can read another's answers (the
// README's security section has the whole policy, tested in
// TestPermissionMatrix). With [Config.TrustedKeys], only replies signed by
// one of the keys over the request's id and the exact data bytes are
// accepted; others fail with an error matching [backend.ErrBadSignature]
// and the request is sent again while the lookup's time lasts.
//
// # Observing it
//
// [Backend.Stats] counts lookups by [Outcome] and error code, requests,
// retries, "no responders" notices, hedges and the lookups they won,
// rejected replies and a latency histogram. With [Config.TracerProvider]
// each lookup is an OpenTelemetry span of kind client, with one event per
// request ("attempt", "retry", "hedge"); its traceparent travels with the
// request, so the responder's span is its child. Without a provider,
// tracing costs nothing.
package nats
