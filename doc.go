// Package backend defines the contract between a DHCP server and the
// backends that decide what each client gets: the [Backend] interface, the
// request schema [DHCPRequest] and the response schema [Message] ([DHCP],
// [Netboot] and a [Status]).
//
// A DHCP server calls [Backend.Lookup] with the client's MAC address and
// gets back the client's reservation (address, mask, router, DNS, ...) and
// netboot settings. The backend can live in the same process (any type with
// a Lookup method, or a [BackendFunc]) or in another process, reached over
// NATS: package [github.com/tinkerbell/backend/nats] is a Backend that asks
// over NATS request-reply, and package
// [github.com/tinkerbell/backend/responder] serves any Backend on a NATS
// subject. The same interface sits on both ends of the wire.
//
// # Wire form
//
// The schema types marshal to and from JSON with [encoding/json] directly;
// their MarshalJSON and UnmarshalJSON methods give the wire form that other
// languages speak (see the README). Addresses use [net/netip], MAC
// addresses [net.HardwareAddr] written as "aa:bb:cc:dd:ee:ff", subnet masks
// the [Mask] type written as a dotted quad. Decoding is lenient in what it
// accepts (nested or flat response objects, null or "" for unset, base64 MAC
// addresses and masks as naive Go encoders write them) and strict in what it
// validates: every rejection is a [*FieldError] naming the field, or a
// [*SyntaxError], and both match [ErrInvalidMessage].
//
// # Errors
//
// Errors cross the wire as a numeric code and a message ([Status]). The
// sentinels [ErrNotFound], [ErrUnavailable], [ErrInvalidMessage] and
// [ErrNoBackend] are matched with [errors.Is] whether the error was made
// locally or came back as a [*RemoteError]; [CodeOf] and [StatusOf] map Go
// errors to the wire.
//
// # Protocol
//
// The constants of the NATS wire protocol live here, in one place: the
// subject ([DefaultSubject], joined to a tenant prefix by [Subject]), the
// queue group of responders ([DefaultQueue]), the CloudEvents types
// ([RequestEventType], [ResponseEventType]), the NATS headers
// ([HeaderContentType], [HeaderTimeout], [HeaderServiceError],
// [HeaderServiceErrorCode]), the error codes ([CodeNotFound] and the
// others), the signature extensions ([SignatureExtension],
// [SignerExtension]) and the subjects of decision events ([EventSubject],
// [EventTypePrefix]). Packages nats and responder use them; so can a
// program in another language, from the README's wire section.
package backend
