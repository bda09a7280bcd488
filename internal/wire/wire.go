// Package wire holds the NATS wire protocol shared by the requester (package
// nats) and the responder: the CloudEvents envelope codec, subject rules and
// header names. Everything here is documented for users in the README's wire
// protocol section and re-exported where users need it.
package wire

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/internal/excerpt"
	"github.com/tinkerbell/backend/internal/jsonx"
)

// ValidSubject reports whether s is a NATS subject a request can be
// published to: non-empty dot-separated tokens without white space or
// wildcards.
func ValidSubject(s string) bool {
	if s == "" {
		return false
	}
	for tok := range strings.SplitSeq(s, ".") {
		if tok == "" || tok == "*" || tok == ">" {
			return false
		}
		if strings.ContainsAny(tok, " \t\r\n") {
			return false
		}
	}
	return true
}

// ValidSource reports whether s can be a CloudEvents source attribute: a
// non-empty URI reference that reads back unchanged.
func ValidSource(s string) bool {
	u, err := url.Parse(s)
	return s != "" && err == nil && u.String() == s
}

// Attrs are the CloudEvents context attributes of one event.
type Attrs struct {
	ID          string    // required, unique per source
	Source      string    // required, a URI reference
	Type        string    // required
	Time        time.Time // optional; zero means absent
	Traceparent string    // optional distributed-tracing extension

	// Signature and Signer are the extension attributes
	// [backend.SignatureExtension] and [backend.SignerExtension] of a
	// signed response (see [Verify]); empty when absent. The encoder
	// writes them as given, after data; [AppendSignedResponse] computes
	// them.
	Signature string
	Signer    string
}

// IDs generates event ids: a random per-generator prefix and a counter, so
// ids are unique across processes without coordination. The zero value is
// ready to use and safe for concurrent use.
type IDs struct {
	once   sync.Once
	prefix [16]byte
	n      atomic.Uint64
}

// Append appends a fresh id to dst.
func (g *IDs) Append(dst []byte) []byte {
	g.once.Do(func() {
		var r [12]byte
		_, _ = rand.Read(r[:]) // crypto/rand.Read never fails on Linux
		base64.RawURLEncoding.Encode(g.prefix[:], r[:])
	})
	dst = append(dst, g.prefix[:]...)
	dst = append(dst, '-')
	return strconv.AppendUint(dst, g.n.Add(1), 10)
}

// Next returns a fresh id.
func (g *IDs) Next() string { return string(g.Append(make([]byte, 0, 40))) }

// AppendEvent appends a structured-mode JSON event with attributes a and the
// JSON object produced by data. If a.ID is empty, an id from ids is used.
func AppendEvent(dst []byte, a *Attrs, ids *IDs, data func([]byte) []byte) []byte {
	dst, _ = appendEvent(dst, a, ids, data, "", nil)
	return dst
}

// appendEvent is [AppendEvent]; with a signer, it signs requestID and the
// data bytes and writes the signature attributes instead of a's.
func appendEvent(dst []byte, a *Attrs, ids *IDs, data func([]byte) []byte, requestID string, s *Signer) ([]byte, error) {
	dst = append(dst, `{"specversion":"1.0","id":`...)
	if a.ID == "" {
		dst = append(dst, '"')
		dst = ids.Append(dst)
		dst = append(dst, '"')
	} else {
		dst = jsonx.AppendString(dst, a.ID)
	}
	dst = append(dst, `,"source":`...)
	dst = jsonx.AppendString(dst, a.Source)
	dst = append(dst, `,"type":`...)
	dst = jsonx.AppendString(dst, a.Type)
	if !a.Time.IsZero() {
		dst = append(dst, `,"time":"`...)
		dst = a.Time.UTC().AppendFormat(dst, time.RFC3339Nano)
		dst = append(dst, '"')
	}
	dst = append(dst, `,"datacontenttype":"application/json"`...)
	if a.Traceparent != "" {
		dst = append(dst, `,"traceparent":`...)
		dst = jsonx.AppendString(dst, a.Traceparent)
	}
	dst = append(dst, `,"data":`...)
	start := len(dst)
	dst = data(dst)
	// The signature attributes follow data, so that the signer signs the
	// data bytes where they lie.
	if s != nil {
		end := len(dst)
		dst = append(dst, `,"`+backend.SignatureExtension+`":"`...)
		var err error
		if dst, err = s.AppendSignature(dst, requestID, dst[start:end]); err != nil {
			return dst, err
		}
		dst = append(dst, `","`+backend.SignerExtension+`":`...)
		dst = jsonx.AppendString(dst, s.pub)
	} else if a.Signature != "" || a.Signer != "" {
		dst = append(dst, `,"`+backend.SignatureExtension+`":`...)
		dst = jsonx.AppendString(dst, a.Signature)
		dst = append(dst, `,"`+backend.SignerExtension+`":`...)
		dst = jsonx.AppendString(dst, a.Signer)
	}
	return append(dst, '}'), nil
}

// AppendRequest appends a request event carrying req.
func AppendRequest(dst []byte, a *Attrs, ids *IDs, req *backend.DHCPRequest) []byte {
	return AppendEvent(dst, a, ids, req.AppendJSON)
}

// AppendResponse appends a response event carrying m.
func AppendResponse(dst []byte, a *Attrs, ids *IDs, m *backend.Message) []byte {
	return AppendEvent(dst, a, ids, m.AppendJSON)
}

// AppendSignedResponse appends a response event carrying m, answering the
// request whose id attribute is requestID, signed by s (see [Verify]). On
// error, dst may hold a partial event.
func AppendSignedResponse(dst []byte, a *Attrs, ids *IDs, m *backend.Message, requestID string, s *Signer) ([]byte, error) {
	return appendEvent(dst, a, ids, m.AppendJSON, requestID, s)
}

// Event is a decoded event: its attributes and its data, a JSON object.
type Event struct {
	Attrs
	Data []byte // the JSON object in data, data (as a string) or data_base64
}

// Decode decodes a structured-mode JSON CloudEvent of type wantType ("" to
// accept any type) and validates its required attributes. Errors match
// [backend.ErrInvalidMessage]: [*backend.FieldError] names the attribute,
// [*backend.SyntaxError] reports malformed JSON, and an event larger than
// [backend.MaxEventSize] matches [backend.ErrTooLarge].
//
// Data and string attributes alias b, which must not be modified while the
// event is in use; so may the strings of a returned error.
func Decode(b []byte, wantType string) (Event, error) { return decode(b, wantType, false) }

// decode is [Decode]. With loose set, a data object is only located, not
// parsed: for callers that decode it strictly afterwards.
func decode(b []byte, wantType string, loose bool) (Event, error) {
	var ev Event
	if len(b) > backend.MaxEventSize {
		return ev, fmt.Errorf("%w: event of %d bytes exceeds the limit of %d", backend.ErrTooLarge, len(b), backend.MaxEventSize)
	}
	var (
		d                   jsonx.Decoder
		spec, ctype         string
		seenSpec, seenCtype bool
		data, looseData     []byte
		dataKind            jsonx.Kind
		data64              string
		seenData, seenData6 bool
		err                 error
	)
	d.ResetString(unsafe.String(unsafe.SliceData(b), len(b)))
	if d.Peek() != jsonx.Object {
		if len(b) == 0 {
			return ev, &backend.SyntaxError{Msg: "empty message"}
		}
		return ev, &backend.SyntaxError{Msg: "not a JSON object"}
	}
	err = d.Object(func(key string) error {
		var err error
		switch key {
		case "specversion":
			seenSpec = true
			spec, err = attrString(&d, key)
		case "id":
			ev.ID, err = attrString(&d, key)
		case "source":
			ev.Source, err = attrString(&d, key)
		case "type":
			ev.Type, err = attrString(&d, key)
		case "datacontenttype":
			seenCtype = true
			ctype, err = attrString(&d, key)
		case "time":
			var s string
			if s, err = attrString(&d, key); err == nil {
				ev.Time, err = time.Parse(time.RFC3339Nano, s)
				if err != nil {
					err = &backend.FieldError{Field: key, Value: excerpt.Short(s), Err: errBadTime}
				}
			}
		case "traceparent":
			ev.Traceparent, err = attrString(&d, key)
		case backend.SignatureExtension:
			ev.Signature, err = attrString(&d, key)
		case backend.SignerExtension:
			ev.Signer, err = attrString(&d, key)
		case "data":
			if looseData != nil {
				// A duplicate key replaces the data object found
				// loosely, which nothing would parse then: check it as
				// the strict scanner would have.
				if err := validObject(looseData); err != nil {
					return err
				}
				looseData = nil
			}
			seenData = true
			dataKind = d.Peek()
			if dataKind == jsonx.Object && loose {
				// The data object is decoded strictly later: here it
				// only needs to be found, fast.
				data, err = d.SkipObjectLoose()
				looseData = data
			} else {
				data, err = d.Raw()
			}
		case "data_base64":
			seenData6 = true
			data64, err = attrString(&d, key)
		default:
			err = d.Skip()
		}
		return err
	})
	if err == nil {
		err = d.End()
	}
	if err != nil {
		return Event{}, syntax(err)
	}
	switch {
	case !seenSpec || spec == "":
		return Event{}, &backend.FieldError{Field: "specversion", Err: backend.ErrMissing}
	case spec != backend.SpecVersion:
		return Event{}, &backend.FieldError{Field: "specversion", Value: excerpt.Short(spec), Err: backend.ErrUnexpected}
	case ev.ID == "":
		return Event{}, &backend.FieldError{Field: "id", Err: backend.ErrMissing}
	case ev.Source == "":
		return Event{}, &backend.FieldError{Field: "source", Err: backend.ErrMissing}
	case ev.Type == "":
		return Event{}, &backend.FieldError{Field: "type", Err: backend.ErrMissing}
	case wantType != "" && ev.Type != wantType:
		return Event{}, &backend.FieldError{Field: "type", Value: excerpt.Short(ev.Type), Err: backend.ErrUnexpected}
	case seenCtype && !jsonContentType(ctype):
		return Event{}, &backend.FieldError{Field: "datacontenttype", Value: excerpt.Short(ctype), Err: backend.ErrUnexpected}
	case seenData && seenData6:
		return Event{}, &backend.FieldError{Field: "data_base64", Err: errBothData}
	}
	switch {
	case seenData6:
		raw, err := base64.StdEncoding.DecodeString(data64)
		if err != nil {
			return Event{}, &backend.FieldError{Field: "data_base64", Value: excerpt.Short(data64), Err: errBase64}
		}
		data = raw
	case !seenData || dataKind == jsonx.Null:
		return Event{}, &backend.FieldError{Field: "data", Err: backend.ErrMissing}
	case dataKind == jsonx.String:
		var sd jsonx.Decoder
		sd.Reset(data)
		s, err := sd.String()
		if err != nil {
			return Event{}, syntax(err)
		}
		data = []byte(s)
	}
	var od jsonx.Decoder
	od.Reset(data)
	if od.Peek() != jsonx.Object {
		return Event{}, &backend.FieldError{Field: "data", Value: excerpt.Short(string(data)), Err: errNotObject}
	}
	ev.Data = data
	return ev, nil
}

// validObject reports a *jsonx.SyntaxError, with an offset relative to b,
// unless b is exactly one valid JSON value.
func validObject(b []byte) error {
	var d jsonx.Decoder
	d.Reset(b)
	if _, err := d.Raw(); err != nil {
		return err
	}
	return d.End()
}

// DecodeRequest decodes a request event and its [backend.DHCPRequest].
func DecodeRequest(b []byte) (Event, backend.DHCPRequest, error) {
	ev, err := decode(b, backend.RequestEventType, true)
	if err != nil {
		return ev, backend.DHCPRequest{}, err
	}
	var req backend.DHCPRequest
	if err := req.UnmarshalJSON(ev.Data); err != nil {
		return ev, req, dataErr(err)
	}
	return ev, req, nil
}

// DecodeResponse decodes a response event and its [backend.Message].
func DecodeResponse(b []byte) (Event, backend.Message, error) {
	ev, err := decode(b, backend.ResponseEventType, true)
	if err != nil {
		return ev, backend.Message{}, err
	}
	var m backend.Message
	if err := m.UnmarshalJSON(ev.Data); err != nil {
		return ev, m, dataErr(err)
	}
	return ev, m, nil
}

// dataErr prefixes field names of errors inside data with "data.".
func dataErr(err error) error {
	if fe, ok := err.(*backend.FieldError); ok {
		c := *fe
		c.Field = "data." + c.Field
		return &c
	}
	return err
}

func jsonContentType(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	return mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "+json")
}

func attrString(d *jsonx.Decoder, key string) (string, error) {
	if d.Peek() != jsonx.String {
		if err := d.Skip(); err != nil {
			return "", err
		}
		return "", &backend.FieldError{Field: key, Err: backend.ErrWrongType}
	}
	return d.String()
}

func syntax(err error) error {
	if se, ok := err.(*jsonx.SyntaxError); ok {
		return &backend.SyntaxError{Offset: se.Offset, Msg: se.Msg}
	}
	return err
}

// Reasons for attribute errors that have no sentinel in package backend.
var (
	errBadTime   = fmt.Errorf("not an RFC 3339 timestamp")
	errBothData  = fmt.Errorf("both data and data_base64 are present")
	errBase64    = fmt.Errorf("not valid base64")
	errNotObject = fmt.Errorf("not a JSON object")
)
