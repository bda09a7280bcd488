// Package jsonx is a small, allocation-conscious JSON scanner and writer used
// by the wire codecs of this module.
//
// It exists because the wire messages are tiny, fixed-shape objects that are
// decoded on every DHCP lookup: a reflection-based decoder spends most of its
// time and allocations on machinery these messages do not need. The scanner
// is strict (it accepts RFC 8259 JSON and nothing else, except that, as in
// encoding/json, invalid UTF-8 in a string is accepted and decoded as
// U+FFFD), never panics on any input, and reports errors with byte offsets.
package jsonx

import (
	"bytes"
	"fmt"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// MaxDepth bounds nesting when skipping unknown values, so that hostile
// input cannot exhaust the stack.
const MaxDepth = 64

// SyntaxError describes malformed JSON.
type SyntaxError struct {
	Offset int    // byte offset of the problem in the input
	Msg    string // what was wrong
}

// Error implements the error interface.
func (e *SyntaxError) Error() string {
	return fmt.Sprintf("invalid JSON at offset %d: %s", e.Offset, e.Msg)
}

// Decoder scans one JSON document held in memory.
//
// When the decoder is created with [NewDecoderString], strings without
// escapes are returned as substrings of the input without allocating.
type Decoder struct {
	b   []byte
	s   string // the same bytes as b, when created from a string
	pos int
}

// NewDecoder returns a decoder over b. Strings it returns are copies.
func NewDecoder(b []byte) *Decoder { return &Decoder{b: b} }

// NewDecoderString returns a decoder over s. Strings it returns may share
// memory with s.
func NewDecoderString(s string) *Decoder {
	return &Decoder{b: unsafe.Slice(unsafe.StringData(s), len(s)), s: s}
}

// Reset makes d scan b from its start.
func (d *Decoder) Reset(b []byte) { *d = Decoder{b: b} }

// ResetString makes d scan s from its start; see [NewDecoderString].
func (d *Decoder) ResetString(s string) {
	*d = Decoder{b: unsafe.Slice(unsafe.StringData(s), len(s)), s: s}
}

func (d *Decoder) errf(format string, args ...any) error {
	return &SyntaxError{Offset: d.pos, Msg: fmt.Sprintf(format, args...)}
}

func (d *Decoder) ws() {
	b, i := d.b, d.pos
	if i < len(b) && b[i] > ' ' {
		return // the common case in compact JSON
	}
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	d.pos = i
}

// plain marks the bytes that may appear in a string without forcing the
// slow path: printable ASCII other than '"' and '\\'.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// scanPlain returns the index of the first byte at or after i that is not
// plain.
func scanPlain(b []byte, i int) int {
	for i < len(b) && plain[b[i]] {
		i++
	}
	return i
}

// Kind classifies the next value.
type Kind byte

// The kinds of JSON values, as returned by [Decoder.Peek].
const (
	Invalid Kind = iota
	Null
	Bool
	Number
	String
	Array
	Object
)

// Peek skips white space and reports the kind of the next value without
// consuming it. It returns [Invalid] at the end of input or on a byte that
// cannot start a value.
func (d *Decoder) Peek() Kind {
	d.ws()
	if d.pos >= len(d.b) {
		return Invalid
	}
	switch c := d.b[d.pos]; {
	case c == 'n':
		return Null
	case c == 't' || c == 'f':
		return Bool
	case c == '"':
		return String
	case c == '[':
		return Array
	case c == '{':
		return Object
	case c == '-' || (c >= '0' && c <= '9'):
		return Number
	}
	return Invalid
}

// End reports an error unless only white space remains.
func (d *Decoder) End() error {
	d.ws()
	if d.pos != len(d.b) {
		return d.errf("unexpected data after top-level value")
	}
	return nil
}

func (d *Decoder) literal(lit string) bool {
	if len(d.b)-d.pos >= len(lit) && string(d.b[d.pos:d.pos+len(lit)]) == lit {
		d.pos += len(lit)
		return true
	}
	return false
}

// TryNull consumes a null literal if one is next and reports whether it did.
func (d *Decoder) TryNull() bool {
	d.ws()
	return d.literal("null")
}

// Bool decodes true or false.
func (d *Decoder) Bool() (bool, error) {
	d.ws()
	if d.literal("true") {
		return true, nil
	}
	if d.literal("false") {
		return false, nil
	}
	return false, d.errf("expected true or false")
}

// NumberBytes consumes a number and returns its text, which is valid JSON
// number syntax.
func (d *Decoder) NumberBytes() ([]byte, error) {
	d.ws()
	start := d.pos
	b := d.b
	i := d.pos
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		d.pos = i
		return nil, d.errf("invalid number")
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			d.pos = i
			return nil, d.errf("invalid number fraction")
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			d.pos = i
			return nil, d.errf("invalid number exponent")
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	d.pos = i
	return b[start:i], nil
}

// String decodes a string value.
func (d *Decoder) String() (string, error) {
	d.ws()
	if d.pos >= len(d.b) || d.b[d.pos] != '"' {
		return "", d.errf("expected string")
	}
	start := d.pos + 1
	b := d.b
	i := scanPlain(b, start)
	if i < len(b) && b[i] == '"' {
		d.pos = i + 1
		if d.s != "" {
			return d.s[start:i], nil
		}
		return string(b[start:i]), nil
	}
	return d.slowString(start, i)
}

// slowString handles escapes, control characters and non-ASCII text. Invalid
// UTF-8 is replaced by U+FFFD, as encoding/json does.
func (d *Decoder) slowString(start, i int) (string, error) {
	b := d.b
	out := make([]byte, 0, i-start+16)
	out = append(out, b[start:i]...)
	for i < len(b) {
		c := b[i]
		switch {
		case c == '"':
			d.pos = i + 1
			return string(out), nil
		case c < 0x20:
			d.pos = i
			return "", d.errf("control character in string")
		case c == '\\':
			if i+1 >= len(b) {
				d.pos = i
				return "", d.errf("unterminated escape")
			}
			switch e := b[i+1]; e {
			case '"', '\\', '/':
				out = append(out, e)
				i += 2
			case 'b':
				out = append(out, '\b')
				i += 2
			case 'f':
				out = append(out, '\f')
				i += 2
			case 'n':
				out = append(out, '\n')
				i += 2
			case 'r':
				out = append(out, '\r')
				i += 2
			case 't':
				out = append(out, '\t')
				i += 2
			case 'u':
				r, ok := hex4(b, i+2)
				if !ok {
					d.pos = i
					return "", d.errf("invalid \\u escape")
				}
				i += 6
				if utf16.IsSurrogate(r) {
					r2, ok2 := rune(-1), false
					if i+1 < len(b) && b[i] == '\\' && b[i+1] == 'u' {
						r2, ok2 = hex4(b, i+2)
					}
					if dec := utf16.DecodeRune(r, r2); ok2 && dec != utf8.RuneError {
						r = dec
						i += 6
					} else {
						r = utf8.RuneError
					}
				}
				out = utf8.AppendRune(out, r)
			default:
				d.pos = i
				return "", d.errf("invalid escape \\%c", e)
			}
		case c < utf8.RuneSelf:
			out = append(out, c)
			i++
		default:
			r, size := utf8.DecodeRune(b[i:])
			out = utf8.AppendRune(out, r) // RuneError for invalid bytes
			i += size
		}
	}
	d.pos = i
	return "", d.errf("unterminated string")
}

func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// Object iterates over the members of an object. For each member it calls fn
// with the key (valid only during the call); fn must consume the value with
// one of the decoder's methods, or call [Decoder.Skip].
func (d *Decoder) Object(fn func(key string) error) error {
	d.ws()
	if d.pos >= len(d.b) || d.b[d.pos] != '{' {
		return d.errf("expected object")
	}
	d.pos++
	d.ws()
	if d.pos < len(d.b) && d.b[d.pos] == '}' {
		d.pos++
		return nil
	}
	for {
		key, err := d.key()
		if err != nil {
			return err
		}
		d.ws()
		if d.pos >= len(d.b) || d.b[d.pos] != ':' {
			return d.errf("expected ':' after object key")
		}
		d.pos++
		if err := fn(key); err != nil {
			return err
		}
		d.ws()
		if d.pos >= len(d.b) {
			return d.errf("unterminated object")
		}
		switch d.b[d.pos] {
		case ',':
			d.pos++
		case '}':
			d.pos++
			return nil
		default:
			return d.errf("expected ',' or '}' in object")
		}
	}
}

// key reads an object key. Keys without escapes are returned without
// allocating (they alias the input and must not be retained).
func (d *Decoder) key() (string, error) {
	d.ws()
	if d.pos >= len(d.b) || d.b[d.pos] != '"' {
		return "", d.errf("expected string key")
	}
	start := d.pos + 1
	if i := scanPlain(d.b, start); i < len(d.b) && d.b[i] == '"' {
		d.pos = i + 1
		return unsafe.String(unsafe.SliceData(d.b[start:i]), i-start), nil
	}
	return d.String()
}

// Array iterates over the elements of an array, calling fn once per element;
// fn must consume the element.
func (d *Decoder) Array(fn func() error) error {
	d.ws()
	if d.pos >= len(d.b) || d.b[d.pos] != '[' {
		return d.errf("expected array")
	}
	d.pos++
	d.ws()
	if d.pos < len(d.b) && d.b[d.pos] == ']' {
		d.pos++
		return nil
	}
	for {
		if err := fn(); err != nil {
			return err
		}
		d.ws()
		if d.pos >= len(d.b) {
			return d.errf("unterminated array")
		}
		switch d.b[d.pos] {
		case ',':
			d.pos++
		case ']':
			d.pos++
			return nil
		default:
			return d.errf("expected ',' or ']' in array")
		}
	}
}

// Raw consumes the next value and returns its bytes (which alias the input).
func (d *Decoder) Raw() ([]byte, error) {
	d.ws()
	start := d.pos
	if err := d.skip(0); err != nil {
		return nil, err
	}
	return d.b[start:d.pos], nil
}

// SkipObjectLoose consumes an object by matching braces outside strings,
// without validating what is inside, and returns its bytes. It is for
// callers that parse those bytes strictly afterwards: on valid JSON it ends
// exactly where [Decoder.Raw] would. An object nested deeper than
// [MaxDepth] is consumed by [Decoder.Raw] instead, so that the depth limit
// is the same as the strict scanner's.
func (d *Decoder) SkipObjectLoose() ([]byte, error) {
	d.ws()
	b, start := d.b, d.pos
	if start >= len(b) || b[start] != '{' {
		return nil, d.errf("expected object")
	}
	depth := 0
	for i := start; i < len(b); i++ {
		switch b[i] {
		case '{', '[':
			depth++
			if depth > MaxDepth {
				d.pos = start
				return d.Raw()
			}
		case '}', ']':
			depth--
			if depth == 0 {
				d.pos = i + 1
				return b[start:d.pos], nil
			}
		case '"':
			// Find the closing quote: one not preceded by an odd number
			// of backslashes.
			for {
				j := bytes.IndexByte(b[i+1:], '"')
				if j < 0 {
					d.pos = len(b)
					return nil, d.errf("unterminated string")
				}
				i += 1 + j
				n := 0
				for k := i - 1; k > start && b[k] == '\\'; k-- {
					n++
				}
				if n%2 == 0 {
					break
				}
			}
		}
	}
	d.pos = len(b)
	return nil, d.errf("unterminated object")
}

// Skip consumes the next value, whatever it is.
func (d *Decoder) Skip() error { return d.skip(0) }

func (d *Decoder) skip(depth int) error {
	if depth > MaxDepth {
		return d.errf("nesting deeper than %d", MaxDepth)
	}
	switch d.Peek() {
	case Null:
		if !d.literal("null") {
			return d.errf("invalid literal")
		}
		return nil
	case Bool:
		_, err := d.Bool()
		return err
	case Number:
		_, err := d.NumberBytes()
		return err
	case String:
		return d.skipString()
	case Array:
		return d.Array(func() error { return d.skip(depth + 1) })
	case Object:
		return d.Object(func(string) error { return d.skip(depth + 1) })
	}
	if d.pos >= len(d.b) {
		return d.errf("unexpected end of input")
	}
	return d.errf("invalid character %q", d.b[d.pos])
}

func (d *Decoder) skipString() error {
	i := d.pos + 1
	for i < len(d.b) {
		i = scanPlain(d.b, i)
		if i >= len(d.b) {
			break
		}
		switch c := d.b[i]; {
		case c == '"':
			d.pos = i + 1
			return nil
		case c < 0x20:
			d.pos = i
			return d.errf("control character in string")
		case c == '\\':
			if i+1 >= len(d.b) {
				d.pos = i
				return d.errf("unterminated escape")
			}
			switch d.b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if _, ok := hex4(d.b, i+2); !ok {
					d.pos = i
					return d.errf("invalid \\u escape")
				}
				i += 6
			default:
				d.pos = i
				return d.errf("invalid escape")
			}
		default: // non-ASCII: validated by whoever decodes the string
			i++
		}
	}
	d.pos = i
	return d.errf("unterminated string")
}
