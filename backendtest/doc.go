// Package backendtest checks that a [backend.Backend] keeps the contract
// that DHCP servers and the responder rely on, in the spirit of
// [testing/fstest]: give it a backend and the reservations it should hold,
// and it reports every way in which the backend differs.
//
// A backend author calls it from an ordinary test:
//
//	func TestMyBackend(t *testing.T) {
//		b := mybackend.New(...) // loaded with the fixture below
//		backendtest.Run(t, b, backendtest.Reservation{
//			DHCP: backend.DHCP{MACAddress: mac, IPAddress: netip.MustParseAddr("198.18.0.10")},
//		})
//	}
//
// Run it with -race: the concurrency check is only as good as the race
// detector behind it.
//
// The checks, each a subtest of [Run] and a group of lines in the error of
// [TestBackend]:
//
//   - answers: each reservation is answered, equal to what was given (the
//     answer may leave MACAddress unset, which the responder fills in).
//   - not-found: MAC addresses the backend does not hold ([Config.Unknown])
//     get an error matching [backend.ErrNotFound], so that the DHCP server
//     stays silent instead of logging a failure.
//   - cancel: with a cancelled context, and with one cancelled during the
//     call, Lookup returns promptly; an error it returns wraps
//     [context.Canceled] (so the responder answers 503, not 500).
//   - deadline: with a context whose deadline passes during the call,
//     Lookup returns within [Config.Slack] of the deadline.
//   - concurrent: lookups from [Config.Parallel] goroutines at once all get
//     the right answers.
//   - ownership: Lookup does not modify the request, and the caller may
//     modify what Lookup returned without changing later answers.
//   - by-ip: a lookup by IP address ([backend.DHCPRequest].IPAddress) of
//     each reservation's address gets that reservation, with its MAC
//     address, or an error matching [backend.ErrNotFound] or
//     [backend.ErrInvalidMessage] from a backend that cannot answer by IP;
//     never another machine. An address no reservation has is not
//     answered.
//   - odd-requests: requests a backend may not expect (no MAC address,
//     8- and 20-byte hardware addresses, the broadcast address, a malformed
//     traceparent) neither panic nor hang, and a request without a MAC
//     address is not answered with a reservation.
//   - wire: every answer passes [backend.Message.Validate] (otherwise the
//     responder answers 500) and survives a round trip through the wire
//     form, a response event, unchanged.
//
// A Lookup that panics is reported, not propagated; one that never returns
// is reported after its context's deadline and [Config.Slack], and its
// goroutine is left behind (a leak detector will name it).
package backendtest
