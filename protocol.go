package backend

import "strings"

// The wire protocol between a requester (package
// [github.com/tinkerbell/backend/nats]) and a responder (package
// [github.com/tinkerbell/backend/responder]), in one place. The README's
// "Wire protocol" section says the same for implementers in other languages.
//
// A lookup is one NATS core request on [Subject](prefix, [DefaultSubject]),
// answered by one member of the queue group [DefaultQueue]. Both messages are
// CloudEvents [SpecVersion] in structured JSON mode: NATS header
// [HeaderContentType] = [ContentType], attribute datacontenttype =
// [DataContentType], type [RequestEventType] or [ResponseEventType]. The
// request carries the requester's time budget in [HeaderTimeout]; error
// replies also carry the NATS micro headers [HeaderServiceError] and
// [HeaderServiceErrorCode].
const (
	// DefaultSubject is the NATS subject lookups are sent to and served on.
	DefaultSubject = "tinkerbell.dhcp.backend"

	// DefaultQueue is the NATS queue group responders join, so that the
	// replicas serving one subject share its requests.
	DefaultQueue = "tinkerbell-dhcp-backend"

	// RequestEventType is the CloudEvents type attribute of a lookup.
	RequestEventType = "org.tinkerbell.dhcp.backend.request"

	// ResponseEventType is the CloudEvents type attribute of its answer.
	ResponseEventType = "org.tinkerbell.dhcp.backend.response"

	// SpecVersion is the CloudEvents specversion attribute of every event.
	SpecVersion = "1.0"

	// HeaderContentType is the NATS header that carries [ContentType].
	HeaderContentType = "Content-Type"

	// ContentType is the NATS Content-Type header value of both messages:
	// a CloudEvent in structured JSON mode.
	ContentType = "application/cloudevents+json"

	// DataContentType is the datacontenttype attribute of both messages.
	DataContentType = "application/json"

	// HeaderTimeout is the NATS header in which the requester sends its
	// remaining time budget, in whole milliseconds, as a decimal integer.
	// It is relative, not a timestamp, because clocks on different hosts
	// disagree. A responder answers within it or not at all.
	HeaderTimeout = "Tinkerbell-Timeout-Ms"

	// HeaderServiceError is the NATS micro error header: the error text of
	// an error reply.
	HeaderServiceError = "Nats-Service-Error"

	// HeaderServiceErrorCode is the NATS micro error code header: the
	// numeric code of an error reply (one of the Code constants).
	HeaderServiceErrorCode = "Nats-Service-Error-Code"

	// MaxEventSize is the largest event accepted, in bytes. Real events are
	// well under 2 KiB.
	MaxEventSize = 64 << 10

	// SignatureExtension is the CloudEvents extension attribute of a signed
	// response event (optional): a JSON string holding the unpadded
	// base64url (RFC 4648 §5) ed25519 (RFC 8032, as nkeys uses it)
	// signature of the request event's id attribute (its UTF-8 bytes), one
	// NUL byte, and the exact bytes of the response's data value. Those
	// are, for a data member holding a JSON object, the bytes of that
	// object as they appear in the event, from '{' to the matching '}',
	// never re-serialised; for data holding a JSON string, its decoded
	// content; for data_base64, the decoded bytes. A signer writes the data
	// bytes it signed into the event verbatim. Test vectors:
	// testdata/signature/vectors.json.
	SignatureExtension = "tinkerbellsig"

	// SignerExtension is the CloudEvents extension attribute naming the
	// signer: a JSON string holding its nkeys public key (conventionally a
	// "U…" user key). A verifier checks it against the keys it trusts
	// before it checks [SignatureExtension].
	SignerExtension = "tinkerbellsigner"

	// EventSubject is the root of the subjects that DHCP servers publish
	// their decisions on: <prefix>.tinkerbell.dhcp.events.<kind>.
	EventSubject = "tinkerbell.dhcp.events"

	// EventTypePrefix starts the CloudEvents type of a decision event:
	// org.tinkerbell.dhcp.event.<kind>.
	EventTypePrefix = "org.tinkerbell.dhcp.event."
)

// Wire error codes, carried in [Status.Code]. They follow HTTP status codes
// so that people and tools recognise them.
const (
	CodeOK          = 0   // success
	CodeBadRequest  = 400 // the request was malformed
	CodeNotFound    = 404 // no reservation for this client
	CodeInternal    = 500 // the backend failed
	CodeUnavailable = 503 // the backend is unavailable or timed out
)

// Subject joins an optional prefix and a subject with a dot: the subject a
// requester publishes to and a responder serves. An empty subject means
// [DefaultSubject]; a trailing dot on prefix is ignored.
//
//	Subject("", "")       == "tinkerbell.dhcp.backend"
//	Subject("site-a", "") == "site-a.tinkerbell.dhcp.backend"
func Subject(prefix, subject string) string {
	if subject == "" {
		subject = DefaultSubject
	}
	prefix = strings.TrimSuffix(prefix, ".")
	if prefix == "" {
		return subject
	}
	return prefix + "." + subject
}
