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
//     idle. The subscription's callback never blocks: it stamps each
//     request with the time it arrived and puts it in the responder's
//     queue ([Config.MaxPending]), or sheds it at once with a 503 when the
//     queue is full or its expected wait (queue length × the backend's
//     usual call time ÷ MaxConcurrent) would leave no time for a call
//     within the request's budget. NATS' own pending buffer in front of
//     the callback only absorbs bursts.
//   - Work only for requesters that still wait. Each backend call gets a
//     context whose deadline is the requester's time budget (header
//     [backend.HeaderTimeout], capped at [Config.MaxTimeout]; anything but
//     decimal digits is a 400) minus an allowance for the reply's trip (5%,
//     at most 50 ms), or [Config.DefaultTimeout] when the request carries
//     none, counted from when the request arrived: time spent queued is
//     spent budget. A request whose budget ran out in the queue is dropped
//     without a reply and without a backend call (Stats: Expired); one
//     whose remaining budget is shorter than the backend's usual call is
//     answered 503 at once. The context carries the W3C trace context of
//     the request (and, with [Config.TracerProvider], the responder's
//     server span) and is cancelled by [Server.Close].
//   - A backend that ignores its context does not pin the responder: a
//     watchdog answers 503 shortly after the deadline and replaces the
//     worker, which is left behind until the call returns; at most
//     [Config.MaxAbandoned] calls are left behind, beyond which requests
//     get a 503 without a call. While the backend's calls run into their
//     deadlines, requests are answered 503 at once except for a probe every
//     100 ms, so the responder serves again within about that once the
//     backend is fast.
//   - A replica that sheds steps out of its queue group (it drains its
//     subscription, losing nothing) until its queue is empty, since NATS
//     gives requests to queue members at random whatever their load: the
//     requesters' retries then reach the other replicas. A lone replica
//     steps aside too: requests sent meanwhile get NATS' "no responders",
//     which the requester of package nats retries with a backoff for as
//     long as the lookup's time lasts.
//   - With [Config.SigningKey], every reply is signed (see
//     [backend.SignatureExtension]), so that requesters trusting the key
//     reject answers from anyone else.
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
//     [Server.Stats] gives the same numbers to Go code, and more: every
//     request has one outcome ([Outcomes]); timeouts, sheds, abandoned
//     calls and drops count as errors, so a backend outage shows; replies
//     by code, backend latency and queue wait histograms, queue depth.
//   - Logs an attacker cannot inflate: warnings about bad input and failed
//     lookups are rate-limited (a burst of 5, then one a second per kind,
//     each saying how many were suppressed), and quote at most a short,
//     escaped excerpt of a request.
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
