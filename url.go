package backend

import (
	"net/url"
	"strings"

	"github.com/tinkerbell/backend/internal/excerpt"
)

// URL is the text of an absolute http, https or tftp URL, such as
// "http://198.18.0.1:8080/${mac:hexhyp}.ipxe". The zero value is unset.
//
// A URL is carried verbatim: the bytes the backend wrote are the bytes the
// DHCP client receives. Nothing re-encodes it, so iPXE settings such as
// ${mac} or ${net0/ip} survive to be expanded by iPXE (net/url would turn
// "${" into "$%7B"). Validation ([ParseURL], [Netboot.Validate]) checks
// the text as net/url would parse it after replacing each ${...} setting
// with a plain placeholder, so a setting may stand in the host too.
type URL string

// ParseURL returns s as a [URL] when it is an absolute http, https or tftp
// URL with a host (the scheme in any letter case), and otherwise a
// [*FieldError] with Field "URL" that matches [ErrBadURL]. The text is not
// changed. An empty s is the unset URL.
func ParseURL(s string) (URL, error) {
	if s != "" && !validURL(s) {
		return "", &FieldError{Field: "URL", Value: excerpt.Short(s), Err: ErrBadURL}
	}
	return URL(s), nil
}

// URLFrom returns the text of u as a URL, or the unset URL for nil. It is
// for callers that hold a [*url.URL]; the text is u.String(), which
// percent-encodes what net/url encodes.
func URLFrom(u *url.URL) URL {
	if u == nil {
		return ""
	}
	return URL(u.String())
}

// String returns the URL's text.
func (u URL) String() string { return string(u) }

// IsValid reports whether u is set and an absolute http, https or tftp URL
// with a host.
func (u URL) IsValid() bool { return u != "" && validURL(string(u)) }

// validURL reports whether s is an absolute http, https or tftp URL with a
// host, once every iPXE setting ${...} in it is replaced by a placeholder.
func validURL(s string) bool {
	if strings.Contains(s, "${") {
		s = expandSettings(s)
	}
	u, err := url.Parse(s)
	if err != nil {
		return false
	}
	switch u.Scheme { // net/url lowercases the scheme
	case "http", "https", "tftp":
	default:
		return false
	}
	return u.Host != "" && u.Opaque == ""
}

// expandSettings replaces each iPXE setting "${...}" in s with "x" (an
// unterminated "${" is left alone, so that url.Parse judges it).
func expandSettings(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			break
		}
		j := strings.IndexByte(s[i+2:], '}')
		if j < 0 {
			break
		}
		b.WriteString(s[:i])
		b.WriteByte('x')
		s = s[i+2+j+1:]
	}
	b.WriteString(s)
	return b.String()
}
