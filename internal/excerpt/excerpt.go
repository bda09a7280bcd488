// Package excerpt makes short, printable excerpts of untrusted text for
// error messages and logs: one helper for the whole module, so that a
// sender's bytes never flood a log or break a terminal.
package excerpt

import (
	"strconv"
	"unicode/utf8"
)

// Max is the length, in bytes of input, of the excerpts that [Short] and
// [Quote] keep.
const Max = 64

// Short returns [Cut](s, [Max]): the excerpt of a value in an error.
func Short(s string) string { return Cut(s, Max) }

// Cut returns s cut to at most n bytes on a rune boundary, with "..."
// appended when it was cut. It does not escape.
func Cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "..."
}

// Quote returns the first [Max] bytes of b as a Go-quoted string (control
// characters and invalid UTF-8 escaped), followed by the total length when
// b was longer.
func Quote(b []byte) string {
	if len(b) <= Max {
		return strconv.Quote(string(b))
	}
	return strconv.Quote(Cut(string(b), Max)) + " (" + strconv.Itoa(len(b)) + " bytes)"
}
