package backend

import (
	"net"
	"net/netip"
	"strconv"

	"github.com/tinkerbell/backend/internal/excerpt"
	"github.com/tinkerbell/backend/internal/jsonx"
)

// Message is the data of a response event: the answer to a [DHCPRequest].
//
// Its canonical JSON form has the DHCP and Netboot fields flat at the top
// level and the error nested:
//
//	{"MACAddress":"52:54:00:66:ea:9a","IPAddress":"198.18.0.10","SubnetMask":"255.255.255.0",
//	 "DefaultGateway":"198.18.0.1","NameServers":["198.18.0.2"],"Hostname":"node-1",
//	 "DomainName":"example.test","BroadcastAddress":"198.18.0.255","NTPServers":null,
//	 "LeaseTime":86400,"DomainSearch":["example.test"],"AllowNetboot":true,
//	 "IPXEScriptURL":"http://198.18.0.1/auto.ipxe","Error":{"Code":0,"Message":""}}
//
// Decoding also accepts the DHCP and Netboot fields nested in "DHCP" and
// "Netboot" objects, null, "" or a missing key for any unset value, a MAC
// address or subnet mask in base64, Code and Message flat at the top level
// (as encoding/json writes the seed's Go structs), and keys in any letter
// case. Unknown keys are ignored. Decoding validates the result with
// [Message.Validate].
type Message struct {
	DHCP
	Netboot

	// Error is the outcome: the zero Status for an answer, otherwise the
	// code and text of the error the backend reported (wire key "Error").
	Error Status
}

// DHCP holds the headers and options a DHCP server puts in its reply. It is
// the reservation of one client. The zero value of each field means unset.
//
// The fields after DomainSearch are those of the Tinkerbell DHCP server's
// hardware model (smee's DHCP type), under its names; they are optional on
// the wire and left out of the canonical form when unset.
type DHCP struct {
	MACAddress       net.HardwareAddr // chaddr DHCP header.
	IPAddress        netip.Addr       // yiaddr DHCP header.
	SubnetMask       Mask             // DHCP option 1.
	DefaultGateway   netip.Addr       // DHCP option 3.
	NameServers      []netip.Addr     // DHCP option 6.
	Hostname         string           // DHCP option 12.
	DomainName       string           // DHCP option 15.
	BroadcastAddress netip.Addr       // DHCP option 28.
	NTPServers       []netip.Addr     // DHCP option 42.
	LeaseTime        uint32           // DHCP option 51, in seconds; 0 lets the server choose.
	DomainSearch     []string         // DHCP option 119.

	// VLANID is the VLAN the client should boot on, in decimal ("1" to
	// "4094"): DHCP option 43 sub-option 116, which iPXE reads as
	// ${43.116}. "" means none.
	VLANID string

	// TFTPServerName overrides the TFTP server of the boot file: DHCP
	// option 66. A reservation with TFTPServerName or BootFileName set
	// boots what they say instead of the server's netboot logic.
	TFTPServerName string

	// BootFileName overrides the boot file: DHCP option 67 (and the file
	// header when it fits), sent verbatim.
	BootFileName string

	// Arch is the machine's architecture as recorded in the inventory,
	// such as "x86_64" or "aarch64" (the client reports its own in DHCP
	// option 93). It is not sent in DHCP; netboot services use it.
	Arch string

	// ClasslessStaticRoutes are sent as DHCP option 121 (RFC 3442).
	ClasslessStaticRoutes []Route

	// Disabled tells the DHCP server to stay silent for this client, as
	// if there were no reservation.
	Disabled bool
}

// Netboot holds what a client needs to boot from the network.
//
// The fields after IPXEScriptURL are those of the Tinkerbell DHCP server's
// hardware model (smee's Netboot type, and its ISO boot source), under its
// names; they are optional on the wire and left out of the canonical form
// when unset.
type Netboot struct {
	// AllowNetboot says whether the client may netboot. When false, the DHCP
	// server sends no boot file name or next-server.
	AllowNetboot bool

	// IPXEScriptURL is the iPXE script a booting client fetches (DHCP
	// option 67 once iPXE runs), sent verbatim. Empty means the DHCP
	// server's default. It must be an absolute http, https or tftp URL.
	IPXEScriptURL URL

	// IPXEScript is the text of an iPXE script, for services that serve
	// the script themselves. It is not sent in DHCP.
	IPXEScript string

	// IPXEBinary overrides the iPXE binary the DHCP server picks from the
	// client's architecture, such as "snp-arm64.efi": a file name without
	// a slash, at most 100 bytes. Empty means the server's choice.
	IPXEBinary string

	// Console is the kernel console of the installation environment,
	// such as "ttyS1,115200". It is not sent in DHCP.
	Console string

	// Facility is the facility (site) code of the machine, passed to the
	// installation environment. It is not sent in DHCP.
	Facility string

	// OSIE is the operating system installation environment the machine
	// boots (wire key "OSIE"). It is not sent in DHCP.
	OSIE OSIE

	// Isoboot is where the machine's boot ISO comes from (wire key
	// "Isoboot"). It is not sent in DHCP.
	Isoboot Isoboot
}

// OSIE locates the kernel and initrd of the operating system installation
// environment (Tinkerbell's HookOS) a machine boots. The zero value means
// the netboot service's defaults.
type OSIE struct {
	// BaseURL is where Kernel and Initrd are found: an absolute http,
	// https or tftp URL, carried verbatim.
	BaseURL URL

	// Kernel is the kernel's file name under BaseURL.
	Kernel string

	// Initrd is the initrd's file name under BaseURL.
	Initrd string

	// KernelParams are extra kernel parameters, after the service's own.
	KernelParams []string
}

// IsZero reports whether no field of o is set.
func (o *OSIE) IsZero() bool {
	return o.BaseURL == "" && o.Kernel == "" && o.Initrd == "" && len(o.KernelParams) == 0
}

// Isoboot is the ISO boot source of a machine.
type Isoboot struct {
	// SourceISO is the URL of the ISO image: an absolute http, https or
	// tftp URL, carried verbatim.
	SourceISO URL
}

// Status is the outcome of a lookup on the wire, the "Error" object of a
// [Message]: a code (one of the Code constants; [CodeOK] for success) and a
// text. It is not a Go error itself: [Status.Err] converts it, [StatusOf]
// makes one from a Go error.
type Status struct {
	Code    int    // wire key "Code"
	Message string // wire key "Message": the error text, "" for success
}

// Error is the former name of [Status].
//
// Deprecated: use [Status]; the wire form is unchanged.
type Error = Status

// MarshalJSON implements [encoding/json.Marshaler] with the canonical form.
func (m Message) MarshalJSON() ([]byte, error) {
	return m.AppendJSON(make([]byte, 0, 512)), nil
}

// AppendJSON appends the canonical JSON form of m to dst.
func (m *Message) AppendJSON(dst []byte) []byte {
	dst = append(dst, '{')
	dst = m.DHCP.appendFields(dst)
	dst = append(dst, ',')
	dst = m.Netboot.appendFields(dst)
	dst = append(dst, `,"Error":`...)
	dst = m.Error.appendJSON(dst)
	return append(dst, '}')
}

// UnmarshalJSON implements [encoding/json.Unmarshaler]. Errors match
// [ErrInvalidMessage]; invalid fields are reported as [*FieldError].
//
// Strings in the result may share one copy of b's bytes.
func (m *Message) UnmarshalJSON(b []byte) error {
	return m.decode(jsonx.NewDecoderString(string(b)))
}

func (m *Message) decode(d *jsonx.Decoder) error {
	var out Message
	err := d.Object(func(key string) error {
		switch k := canonical(key, messageKeys[:]); k {
		case "DHCP":
			if d.TryNull() {
				return nil
			}
			return d.Object(func(key string) error { return out.DHCP.decodeField(d, canonical(key, dhcpKeys[:])) })
		case "Netboot":
			if d.TryNull() {
				return nil
			}
			return d.Object(func(key string) error { return out.Netboot.decodeField(d, canonical(key, netbootKeys[:])) })
		case "Error":
			return out.Error.decode(d)
		case "Code", "Message":
			// The seed's Go structs embed Error with `json:",inline"`,
			// which encoding/json ignores: their Code and Message come
			// flat. Reading them as success would hide the error.
			return out.Error.decodeField(d, k)
		default:
			if isDHCPKey(k) {
				return out.DHCP.decodeField(d, k)
			}
			return out.Netboot.decodeField(d, k)
		}
	})
	if err == nil {
		err = d.End()
	}
	if err != nil {
		return wrapSyntax(err)
	}
	if err := out.Validate(); err != nil {
		return err
	}
	*m = out
	return nil
}

// Validate reports the first field of m that a DHCPv4 server could not
// send, as a [*FieldError]; see [DHCP.Validate] and [Netboot.Validate].
func (m *Message) Validate() error {
	if err := m.DHCP.Validate(); err != nil {
		return err
	}
	return m.Netboot.Validate()
}

// MarshalJSON implements [encoding/json.Marshaler]: the DHCP fields of the
// canonical [Message] form.
func (h DHCP) MarshalJSON() ([]byte, error) {
	dst := append(make([]byte, 0, 384), '{')
	return append(h.appendFields(dst), '}'), nil
}

// UnmarshalJSON implements [encoding/json.Unmarshaler]. It validates the
// result with [DHCP.Validate].
func (h *DHCP) UnmarshalJSON(b []byte) error { return unmarshalObject(b, dhcpKeys[:], h) }

// Validate reports, as a [*FieldError], the first field of h that cannot go
// into a DHCPv4 reply: an address that is not IPv4, a hostname or domain
// name longer than 255 bytes, or a search domain that is not a valid domain
// name. The MAC address, when set, must be 6, 8 or 20 bytes.
func (h *DHCP) Validate() error {
	if n := len(h.MACAddress); n != 0 && n != 6 && n != 8 && n != 20 {
		return &FieldError{Field: "MACAddress", Value: h.MACAddress.String(), Err: ErrBadMAC}
	}
	for _, f := range [...]struct {
		name string
		a    netip.Addr
	}{{"IPAddress", h.IPAddress}, {"DefaultGateway", h.DefaultGateway}, {"BroadcastAddress", h.BroadcastAddress}} {
		if f.a.IsValid() && !f.a.Is4() {
			return &FieldError{Field: f.name, Value: f.a.String(), Err: ErrNotIPv4}
		}
	}
	for _, a := range h.NameServers {
		if !a.Is4() {
			return &FieldError{Field: "NameServers", Value: a.String(), Err: ErrNotIPv4}
		}
	}
	for _, a := range h.NTPServers {
		if !a.Is4() {
			return &FieldError{Field: "NTPServers", Value: a.String(), Err: ErrNotIPv4}
		}
	}
	if len(h.Hostname) > 255 {
		return &FieldError{Field: "Hostname", Value: excerpt.Short(h.Hostname), Err: ErrTooLong}
	}
	if len(h.DomainName) > 255 {
		return &FieldError{Field: "DomainName", Value: excerpt.Short(h.DomainName), Err: ErrTooLong}
	}
	for _, s := range h.DomainSearch {
		if !validDomain(s) {
			return &FieldError{Field: "DomainSearch", Value: excerpt.Short(s), Err: ErrBadName}
		}
	}
	if h.VLANID != "" && !validVLAN(h.VLANID) {
		return &FieldError{Field: "VLANID", Value: excerpt.Short(h.VLANID), Err: ErrOutOfRange}
	}
	if len(h.TFTPServerName) > 255 {
		return &FieldError{Field: "TFTPServerName", Value: excerpt.Short(h.TFTPServerName), Err: ErrTooLong}
	}
	if len(h.BootFileName) > 255 {
		return &FieldError{Field: "BootFileName", Value: excerpt.Short(h.BootFileName), Err: ErrTooLong}
	}
	for _, r := range h.ClasslessStaticRoutes {
		if err := r.validate(); err != nil {
			return &FieldError{Field: "ClasslessStaticRoutes", Value: r.String(), Err: err}
		}
	}
	return nil
}

// validVLAN reports whether s is a VLAN ID in decimal, 1 to 4094, without
// a sign or leading zeros.
func validVLAN(s string) bool {
	if len(s) == 0 || len(s) > 4 || s[0] == '0' {
		return false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n <= 4094
}

// MarshalJSON implements [encoding/json.Marshaler]: the Netboot fields of
// the canonical [Message] form.
func (n Netboot) MarshalJSON() ([]byte, error) {
	dst := append(make([]byte, 0, 128), '{')
	return append(n.appendFields(dst), '}'), nil
}

// UnmarshalJSON implements [encoding/json.Unmarshaler]. It validates the
// result with [Netboot.Validate].
func (n *Netboot) UnmarshalJSON(b []byte) error { return unmarshalObject(b, netbootKeys[:], n) }

// Validate reports a [*FieldError] when a URL field (IPXEScriptURL,
// OSIE.BaseURL, Isoboot.SourceISO) is set but is not an absolute http,
// https or tftp URL with a host (see [URL]), or when IPXEBinary is not a
// file name.
func (n *Netboot) Validate() error {
	for _, f := range [...]struct {
		name string
		u    URL
	}{{"IPXEScriptURL", n.IPXEScriptURL}, {"OSIE.BaseURL", n.OSIE.BaseURL}, {"Isoboot.SourceISO", n.Isoboot.SourceISO}} {
		if f.u != "" && !validURL(string(f.u)) {
			return &FieldError{Field: f.name, Value: excerpt.Short(string(f.u)), Err: ErrBadURL}
		}
	}
	if n.IPXEBinary != "" && !validFileName(n.IPXEBinary) {
		return &FieldError{Field: "IPXEBinary", Value: excerpt.Short(n.IPXEBinary), Err: ErrBadFileName}
	}
	return nil
}

// validFileName reports whether s can be the last segment of a URL path:
// 1 to 100 printable ASCII bytes, no slash, backslash or space, not "." or
// "..".
func validFileName(s string) bool {
	if s == "" || len(s) > 100 || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '/' || c == '\\' {
			return false
		}
	}
	return true
}

func (h *DHCP) appendFields(dst []byte) []byte {
	dst = append(dst, `"MACAddress":`...)
	dst = appendMAC(dst, h.MACAddress)
	dst = append(dst, `,"IPAddress":`...)
	dst = appendAddr(dst, h.IPAddress)
	dst = append(dst, `,"SubnetMask":`...)
	dst = h.SubnetMask.appendJSON(dst)
	dst = append(dst, `,"DefaultGateway":`...)
	dst = appendAddr(dst, h.DefaultGateway)
	dst = append(dst, `,"NameServers":`...)
	dst = appendAddrs(dst, h.NameServers)
	dst = append(dst, `,"Hostname":`...)
	dst = jsonx.AppendString(dst, h.Hostname)
	dst = append(dst, `,"DomainName":`...)
	dst = jsonx.AppendString(dst, h.DomainName)
	dst = append(dst, `,"BroadcastAddress":`...)
	dst = appendAddr(dst, h.BroadcastAddress)
	dst = append(dst, `,"NTPServers":`...)
	dst = appendAddrs(dst, h.NTPServers)
	dst = append(dst, `,"LeaseTime":`...)
	dst = appendUint(dst, uint64(h.LeaseTime))
	dst = append(dst, `,"DomainSearch":`...)
	if h.DomainSearch == nil {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, '[')
		for i, s := range h.DomainSearch {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = jsonx.AppendString(dst, s)
		}
		dst = append(dst, ']')
	}
	// The fields below are optional: left out when unset, so that the
	// canonical form of a message without them is what it always was.
	if h.VLANID != "" {
		dst = append(dst, `,"VLANID":`...)
		dst = jsonx.AppendString(dst, h.VLANID)
	}
	if h.TFTPServerName != "" {
		dst = append(dst, `,"TFTPServerName":`...)
		dst = jsonx.AppendString(dst, h.TFTPServerName)
	}
	if h.BootFileName != "" {
		dst = append(dst, `,"BootFileName":`...)
		dst = jsonx.AppendString(dst, h.BootFileName)
	}
	if h.Arch != "" {
		dst = append(dst, `,"Arch":`...)
		dst = jsonx.AppendString(dst, h.Arch)
	}
	if len(h.ClasslessStaticRoutes) != 0 {
		dst = append(dst, `,"ClasslessStaticRoutes":`...)
		dst = appendRoutes(dst, h.ClasslessStaticRoutes)
	}
	if h.Disabled {
		dst = append(dst, `,"Disabled":true`...)
	}
	return dst
}

var dhcpKeys = [...]string{
	"MACAddress", "IPAddress", "SubnetMask", "DefaultGateway", "NameServers", "Hostname",
	"DomainName", "BroadcastAddress", "NTPServers", "LeaseTime", "DomainSearch",
	"VLANID", "TFTPServerName", "BootFileName", "Arch", "ClasslessStaticRoutes", "Disabled",
}

var netbootKeys = [...]string{
	"AllowNetboot", "IPXEScriptURL",
	"IPXEScript", "IPXEBinary", "Console", "Facility", "OSIE", "Isoboot",
}

var osieKeys = [...]string{"BaseURL", "Kernel", "Initrd", "KernelParams"}

var isobootKeys = [...]string{"SourceISO"}

var errorKeys = [...]string{"Code", "Message"}

var messageKeys = [...]string{
	"DHCP", "Netboot", "Error",
	"MACAddress", "IPAddress", "SubnetMask", "DefaultGateway", "NameServers", "Hostname",
	"DomainName", "BroadcastAddress", "NTPServers", "LeaseTime", "DomainSearch",
	"VLANID", "TFTPServerName", "BootFileName", "Arch", "ClasslessStaticRoutes", "Disabled",
	"AllowNetboot", "IPXEScriptURL",
	"IPXEScript", "IPXEBinary", "Console", "Facility", "OSIE", "Isoboot",
	"Code", "Message",
}

// decodeField decodes the value of the canonical key k into h, or skips the
// value when k is not a DHCP field.
func (h *DHCP) decodeField(d *jsonx.Decoder, k string) error {
	var err error
	switch k {
	case "MACAddress":
		h.MACAddress, err = decodeMAC(d, k)
	case "IPAddress":
		h.IPAddress, err = decodeAddr(d, k)
	case "SubnetMask":
		h.SubnetMask, err = decodeMask(d, k)
	case "DefaultGateway":
		h.DefaultGateway, err = decodeAddr(d, k)
	case "NameServers":
		h.NameServers, err = decodeAddrs(d, k)
	case "Hostname":
		h.Hostname, err = decodeString(d, k)
	case "DomainName":
		h.DomainName, err = decodeString(d, k)
	case "BroadcastAddress":
		h.BroadcastAddress, err = decodeAddr(d, k)
	case "NTPServers":
		h.NTPServers, err = decodeAddrs(d, k)
	case "LeaseTime":
		var n uint64
		n, err = decodeUint(d, k, 32)
		h.LeaseTime = uint32(n)
	case "DomainSearch":
		h.DomainSearch, err = decodeStrings(d, k)
	case "VLANID":
		h.VLANID, err = decodeVLAN(d, k)
	case "TFTPServerName":
		h.TFTPServerName, err = decodeString(d, k)
	case "BootFileName":
		h.BootFileName, err = decodeString(d, k)
	case "Arch":
		h.Arch, err = decodeString(d, k)
	case "ClasslessStaticRoutes":
		h.ClasslessStaticRoutes, err = decodeRoutes(d, k)
	case "Disabled":
		h.Disabled, err = decodeBool(d, k)
	default:
		err = d.Skip()
	}
	return err
}

func (n *Netboot) appendFields(dst []byte) []byte {
	dst = append(dst, `"AllowNetboot":`...)
	if n.AllowNetboot {
		dst = append(dst, "true"...)
	} else {
		dst = append(dst, "false"...)
	}
	dst = append(dst, `,"IPXEScriptURL":`...)
	if n.IPXEScriptURL == "" {
		dst = append(dst, "null"...)
	} else {
		dst = jsonx.AppendString(dst, string(n.IPXEScriptURL))
	}
	// Optional, as the DHCP fields after DomainSearch.
	for _, f := range [...]struct{ key, val string }{
		{`,"IPXEScript":`, n.IPXEScript}, {`,"IPXEBinary":`, n.IPXEBinary},
		{`,"Console":`, n.Console}, {`,"Facility":`, n.Facility},
	} {
		if f.val != "" {
			dst = append(dst, f.key...)
			dst = jsonx.AppendString(dst, f.val)
		}
	}
	if !n.OSIE.IsZero() {
		dst = append(dst, `,"OSIE":`...)
		dst = n.OSIE.appendJSON(dst)
	}
	if n.Isoboot.SourceISO != "" {
		dst = append(dst, `,"Isoboot":{"SourceISO":`...)
		dst = jsonx.AppendString(dst, string(n.Isoboot.SourceISO))
		dst = append(dst, '}')
	}
	return dst
}

// appendJSON appends the JSON object of o, with only the fields that are
// set.
func (o *OSIE) appendJSON(dst []byte) []byte {
	dst = append(dst, '{')
	sep := false
	for _, f := range [...]struct{ key, val string }{
		{`"BaseURL":`, string(o.BaseURL)}, {`"Kernel":`, o.Kernel}, {`"Initrd":`, o.Initrd},
	} {
		if f.val == "" {
			continue
		}
		if sep {
			dst = append(dst, ',')
		}
		dst = append(dst, f.key...)
		dst = jsonx.AppendString(dst, f.val)
		sep = true
	}
	if len(o.KernelParams) != 0 {
		if sep {
			dst = append(dst, ',')
		}
		dst = append(dst, `"KernelParams":[`...)
		for i, p := range o.KernelParams {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = jsonx.AppendString(dst, p)
		}
		dst = append(dst, ']')
	}
	return append(dst, '}')
}

func (n *Netboot) decodeField(d *jsonx.Decoder, k string) error {
	var err error
	switch k {
	case "AllowNetboot":
		n.AllowNetboot, err = decodeBool(d, k)
	case "IPXEScriptURL":
		n.IPXEScriptURL, err = decodeURL(d, k)
	case "IPXEScript":
		n.IPXEScript, err = decodeString(d, k)
	case "IPXEBinary":
		n.IPXEBinary, err = decodeString(d, k)
	case "Console":
		n.Console, err = decodeString(d, k)
	case "Facility":
		n.Facility, err = decodeString(d, k)
	case "OSIE":
		n.OSIE = OSIE{}
		if !d.TryNull() {
			if d.Peek() != jsonx.Object {
				return wrongType(d, k)
			}
			err = d.Object(func(key string) error { return n.OSIE.decodeField(d, canonical(key, osieKeys[:])) })
		}
	case "Isoboot":
		n.Isoboot = Isoboot{}
		if !d.TryNull() {
			if d.Peek() != jsonx.Object {
				return wrongType(d, k)
			}
			err = d.Object(func(key string) error {
				if canonical(key, isobootKeys[:]) != "SourceISO" {
					return d.Skip()
				}
				var err error
				n.Isoboot.SourceISO, err = decodeURL(d, "Isoboot.SourceISO")
				return err
			})
		}
	default:
		err = d.Skip()
	}
	return err
}

func (o *OSIE) decodeField(d *jsonx.Decoder, k string) error {
	var err error
	switch k {
	case "BaseURL":
		o.BaseURL, err = decodeURL(d, "OSIE.BaseURL")
	case "Kernel":
		o.Kernel, err = decodeString(d, "OSIE.Kernel")
	case "Initrd":
		o.Initrd, err = decodeString(d, "OSIE.Initrd")
	case "KernelParams":
		o.KernelParams, err = decodeStrings(d, "OSIE.KernelParams")
	default:
		err = d.Skip()
	}
	return err
}

func (e *Status) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"Code":`...)
	dst = appendInt(dst, int64(e.Code))
	dst = append(dst, `,"Message":`...)
	dst = jsonx.AppendString(dst, e.Message)
	return append(dst, '}')
}

func (e *Status) decode(d *jsonx.Decoder) error {
	if d.TryNull() {
		*e = Status{}
		return nil
	}
	return d.Object(func(key string) error { return e.decodeField(d, canonical(key, errorKeys[:])) })
}

// decodeField decodes the value of the canonical key k into e, or skips the
// value when k is not a Status field.
func (e *Status) decodeField(d *jsonx.Decoder, k string) error {
	switch k {
	case "Code":
		if d.TryNull() {
			e.Code = 0
			return nil
		}
		if d.Peek() != jsonx.Number {
			return wrongType(d, "Error.Code")
		}
		nb, err := d.NumberBytes()
		if err != nil {
			return err
		}
		n, err := strconv.ParseInt(string(nb), 10, 32)
		if err != nil {
			return &FieldError{Field: "Error.Code", Value: excerpt.Short(string(nb)), Err: ErrOutOfRange}
		}
		e.Code = int(n)
		return nil
	case "Message":
		s, err := decodeString(d, "Error.Message")
		e.Message = s
		return err
	}
	return d.Skip()
}
