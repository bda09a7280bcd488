// Package responder serves any [backend.Backend] on a NATS subject, so that
// DHCP servers using package [github.com/tinkerbell/backend/nats] can reach
// it. It is the other end of that package's requester.
//
// A backend author writes a Lookup method (or a [backend.BackendFunc]) and
// serves it in a few lines:
//
//	srv, err := responder.New(responder.Config{Conn: nc, Backend: myBackend})
//	if err != nil {
//		return err
//	}
//	go srv.Serve()
//	defer srv.Shutdown(ctx)
//
// Everything else is done by the [Server]:
//
//   - Replicas share the load: the subscription joins the queue group
//     [backend.DefaultQueue] unless [Config.NoQueue] is set, so N responders on one
//     subject split the requests and any one of them may stop.
//   - At most [Config.MaxConcurrent] backend calls run at once, on a pool
//     of goroutines that grows on demand up to that bound and shrinks when
//     idle. Further requests wait in NATS' pending buffer of the
//     subscription, bounded by [Config.MaxPending]; when it overflows,
//     NATS drops requests (their requesters time out and retry), the
//     connection's error handler is told (nats.ErrSlowConsumer), the
//     responder logs an error and [Stats] counts the drops.
//   - Each backend call gets a context whose deadline comes from the
//     requester's time budget (header [backend.HeaderTimeout]), minus an allowance
//     for the trip of the request and the reply (5%, at most 50 ms), or
//     [Config.DefaultTimeout] when the request carries none. The budget
//     counts from when a worker takes the request: the time it waited in
//     the pending buffer is unknown to the responder and not deducted, so
//     under overload a backend call may outlive its requester (keep
//     [Config.MaxPending] small enough to be served within the requesters'
//     timeout). The context carries the W3C trace context of the request
//     (extracted with OpenTelemetry's propagation, so
//     trace.SpanContextFromContext finds it) and is cancelled by
//     [Server.Close].
//   - Errors travel as codes: a malformed request is answered with code 400,
//     [backend.ErrNotFound] with 404, a deadline or [backend.ErrUnavailable]
//     with 503, any other error with 500 and the error's text (nothing
//     else); a panic in the backend is recovered, logged with its stack and
//     answered with 500, and the responder keeps serving. An answer that
//     fails [backend.Message.Validate] is a 500 too. Error replies are
//     response events whose Error field holds the code and message, with
//     the NATS micro error headers [backend.HeaderServiceError] and
//     [backend.HeaderServiceErrorCode] set as well.
//   - The NATS micro discovery protocol is answered: $SRV.PING, $SRV.INFO
//     and $SRV.STATS (optionally followed by the service name, and by the
//     name and id), with the JSON schemas of nats.go's micro package, so
//     `nats micro ls` and `nats micro stats` show the live responders.
//     [Server.Stats] gives the same numbers to Go code.
//
// # Lifecycle
//
// [New] validates the configuration and subscribes at once (as net.Listen
// binds before http.Server.Serve runs), so requests sent after New returns
// wait in NATS' buffer until [Server.Serve] takes them. Serve blocks until
// [Server.Shutdown] or [Server.Close] and then returns [ErrServerClosed].
// Shutdown stops taking requests, lets the ones already received finish,
// delivers their replies and returns; Close stops at once, cancels the
// contexts of running backend calls and sends no reply for them (their
// requesters time out and retry on another replica).
//
// The connection belongs to the caller: the Server never closes or drains
// it and never replaces its handlers.
//
// # Package names
//
// Examples import the requester package as natsbackend, since its name
// collides with nats.go's:
//
//	import (
//		"github.com/nats-io/nats.go"
//		natsbackend "github.com/tinkerbell/backend/nats"
//		"github.com/tinkerbell/backend/responder"
//	)
package responder
