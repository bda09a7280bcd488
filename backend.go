package backend

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Backend answers lookups: given the MAC address of a DHCP client, or
// the IP address of a machine (see [DHCPRequest]), it returns the
// reservation the DHCP server hands out and the netboot settings of that
// machine.
//
// Lookup may be called concurrently from many goroutines; implementations
// must be safe for that. It must honour ctx: when ctx is done, it should
// return promptly with an error that wraps ctx.Err().
//
// Lookup returns [ErrNotFound] (possibly wrapped) when it holds no
// reservation for the address in req; a DHCP server then stays silent,
// since another server may own the client. A backend that does not index
// machines by IP address needs no code for lookups by IP: their
// req.MACAddress is nil, a lookup keyed by it finds nothing, and
// [ErrNotFound] is the right answer. Any other non-nil error means the
// backend failed; the DHCP and Netboot values are then ignored.
//
// The returned values belong to the caller: an implementation must not keep
// and modify them (or the slices they point to) after returning. Lookup
// must not modify req or retain req.MACAddress after it returns.
type Backend interface {
	Lookup(ctx context.Context, req DHCPRequest) (DHCP, Netboot, error)
}

// BackendFunc adapts an ordinary function to the [Backend] interface.
type BackendFunc func(ctx context.Context, req DHCPRequest) (DHCP, Netboot, error)

// Lookup calls f(ctx, req).
func (f BackendFunc) Lookup(ctx context.Context, req DHCPRequest) (DHCP, Netboot, error) {
	return f(ctx, req)
}

// The errors a lookup may return. Match them with [errors.Is]: they are
// usually wrapped, and errors that crossed the wire are [*RemoteError] values
// whose Is method matches by code.
var (
	// ErrNotFound means the backend holds no reservation for the MAC
	// address, or no machine with the IP address (wire code 404). A DHCP
	// server stays silent.
	ErrNotFound = errors.New("backend: no reservation for this MAC address")

	// ErrNoBackend means no backend answered at all: nobody listens on the
	// subject (NATS "no responders"), even after retries.
	ErrNoBackend = errors.New("backend: no backend answered")

	// ErrUnavailable means the backend is unavailable or did not answer in
	// time (wire code 503).
	ErrUnavailable = errors.New("backend: backend unavailable")

	// ErrInvalidMessage means a message on the wire could not be decoded or
	// failed validation, or (wire code 400) that the remote side judged our
	// request malformed. Decoding errors are [*FieldError] or
	// [*SyntaxError] values that match it.
	ErrInvalidMessage = errors.New("backend: invalid message")

	// ErrInvalidConfig is wrapped by the errors of every constructor in
	// this module that rejects its configuration.
	ErrInvalidConfig = errors.New("backend: invalid configuration")

	// ErrTooLarge means a message exceeded the size limit. It matches
	// [ErrInvalidMessage] too.
	ErrTooLarge = fmt.Errorf("%w: too large", ErrInvalidMessage)

	// ErrBadSignature means a requester that trusts signing keys received
	// a reply that is unsigned, signed by a key it does not trust, or
	// whose signature does not match the request and the data (see
	// [SignatureExtension]): someone other than a trusted responder tried
	// to decide what a machine boots. It deliberately does not match
	// [ErrInvalidMessage]: the reply is well formed, and the event is a
	// security alarm, not a peer's bug; [CodeOf] maps it to [CodeInternal].
	ErrBadSignature = errors.New("backend: reply not signed by a trusted key")
)

// RemoteError is an error reported by the remote backend on the wire, as a
// code and a message. Its Is method matches [ErrNotFound] for code 404,
// [ErrUnavailable] for 503 and [ErrInvalidMessage] for 400, so callers need
// not look at codes.
type RemoteError struct {
	Code    int    // wire code, one of the Code constants or another value
	Message string // the text the backend chose to send
}

// Error implements the error interface.
//
// A message that already starts with "backend: " (the text of an error of
// this package, sent by a Go responder) is not prefixed twice.
func (e *RemoteError) Error() string {
	if e.Message == "" {
		return "backend: remote error " + strconv.Itoa(e.Code)
	}
	return "backend: remote error " + strconv.Itoa(e.Code) + ": " + strings.TrimPrefix(e.Message, "backend: ")
}

// Is reports whether the code of e corresponds to target.
func (e *RemoteError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Code == CodeNotFound
	case ErrUnavailable:
		return e.Code == CodeUnavailable
	case ErrInvalidMessage:
		return e.Code == CodeBadRequest
	}
	return false
}

// CodeOf returns the wire code that describes err: [CodeOK] for nil, the
// code of a [*RemoteError] in err's chain, [CodeNotFound] for
// [ErrNotFound], [CodeBadRequest] for [ErrInvalidMessage],
// [CodeUnavailable] for [ErrUnavailable], [ErrNoBackend],
// [context.DeadlineExceeded] and [context.Canceled], and [CodeInternal]
// otherwise.
func CodeOf(err error) int {
	if err == nil {
		return CodeOK
	}
	var re *RemoteError
	if errors.As(err, &re) {
		return re.Code
	}
	switch {
	case errors.Is(err, ErrNotFound):
		return CodeNotFound
	case errors.Is(err, ErrInvalidMessage):
		return CodeBadRequest
	case errors.Is(err, ErrUnavailable), errors.Is(err, ErrNoBackend), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return CodeUnavailable
	}
	return CodeInternal
}

// StatusOf returns the wire form of err: a zero [Status] for nil, otherwise
// the code from [CodeOf] and err's text as the message.
func StatusOf(err error) Status {
	if err == nil {
		return Status{}
	}
	return Status{Code: CodeOf(err), Message: err.Error()}
}

// ErrorOf is the former name of [StatusOf].
//
// Deprecated: use [StatusOf].
func ErrorOf(err error) Status { return StatusOf(err) }

// Err returns the Go error that e describes: nil when Code is [CodeOK],
// otherwise a [*RemoteError].
func (e Status) Err() error {
	if e.Code == CodeOK {
		return nil
	}
	return &RemoteError{Code: e.Code, Message: e.Message}
}

// FieldError reports a field of a wire message that is missing or invalid.
// It matches [ErrInvalidMessage].
type FieldError struct {
	Field string // the field's JSON name, e.g. "SubnetMask" or "specversion"
	Value string // the offending value as received (truncated), if any
	Err   error  // why it was rejected
}

// Error implements the error interface.
func (e *FieldError) Error() string {
	s := "backend: invalid message: field " + strconv.Quote(e.Field)
	if e.Value != "" {
		s += " (" + strconv.Quote(e.Value) + ")"
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the reason.
func (e *FieldError) Unwrap() error { return e.Err }

// Is reports whether target is [ErrInvalidMessage].
func (e *FieldError) Is(target error) bool { return target == ErrInvalidMessage }

// SyntaxError reports input that is not well-formed JSON. It matches
// [ErrInvalidMessage].
type SyntaxError struct {
	Offset int    // byte offset of the problem
	Msg    string // what was wrong
}

// Error implements the error interface.
func (e *SyntaxError) Error() string {
	return "backend: invalid message: malformed JSON at offset " + strconv.Itoa(e.Offset) + ": " + e.Msg
}

// Is reports whether target is [ErrInvalidMessage].
func (e *SyntaxError) Is(target error) bool { return target == ErrInvalidMessage }

// Reasons carried in [FieldError.Err].
var (
	ErrMissing     = errors.New("missing")                      // a required field is absent, null or empty
	ErrWrongType   = errors.New("wrong JSON type")              // e.g. a number where a string belongs
	ErrNotIPv4     = errors.New("not an IPv4 address")          // DHCPv4 needs IPv4
	ErrBadMAC      = errors.New("not a hardware address")       // neither text nor base64 of a known length
	ErrBadMask     = errors.New("not a contiguous IPv4 mask")   // e.g. 255.0.255.0
	ErrTooLong     = errors.New("too long for its DHCP option") // over 255 bytes
	ErrBadURL      = errors.New("not an absolute http, https or tftp URL")
	ErrBadPrefix   = errors.New("not a network prefix (host bits set)")
	ErrBadFileName = errors.New("not a file name")
	ErrConflict    = errors.New("conflicts with another field") // e.g. both MACAddress and IPAddress in a request
	ErrBadName     = errors.New("not a valid domain name")
	ErrOutOfRange  = errors.New("number out of range")
	ErrUnexpected  = errors.New("unexpected value") // e.g. a wrong CloudEvents type or specversion
)
