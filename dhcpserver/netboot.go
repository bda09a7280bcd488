package dhcpserver

import (
	"bytes"
	"encoding/binary"
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/tinkerbell/backend"
)

const (
	optUserClass    uint8 = 77
	optClientArch   uint8 = 93
	optClientNDI    uint8 = 94
	optClientUUID   uint8 = 97
	optIPXEEncap    uint8 = 175
	ipxeNoPXEDHCP         = 176
	pxeDiscoveryCtl       = 6  // option 43 sub-option: PXE_DISCOVERY_CONTROL
	subTraceparent        = 69 // option 43 sub-option: Tinkerbell's binary traceparent
)

// get returns option code of req (nil when absent).
func get[C ~uint8](req *dhcpv4.DHCPv4, code C) []byte { return req.Options[uint8(code)] }

func has[C ~uint8](req *dhcpv4.DHCPv4, code C) bool {
	_, ok := req.Options[uint8(code)]
	return ok
}

// clientKind is what option 60 says about a netboot client.
type clientKind uint8

const (
	notNetboot clientKind = iota
	pxeClient
	httpClient
)

// netbootKind reports whether req comes from a PXE or UEFI HTTP boot client,
// with the checks the Tinkerbell DHCP server makes: option 60 starting with
// "PXEClient" or "HTTPClient", options 93 and 94 present, and option 97, if
// present, 17 bytes starting with a zero byte.
func netbootKind(req *dhcpv4.DHCPv4) clientKind {
	vc := get(req, dhcpv4.OptionClassIdentifier)
	kind := notNetboot
	switch {
	case bytes.HasPrefix(vc, []byte("PXEClient")):
		kind = pxeClient
	case bytes.HasPrefix(vc, []byte("HTTPClient")):
		kind = httpClient
	default:
		return notNetboot
	}
	if len(get(req, optClientArch)) < 2 || !has(req, optClientNDI) {
		return notNetboot
	}
	switch uuid := get(req, optClientUUID); len(uuid) {
	case 0: // missing, which some PXE ROMs do; accept as Tinkerbell does
	case 17:
		if uuid[0] != 0 {
			return notNetboot
		}
	default:
		return notNetboot
	}
	return kind
}

// hasUserClass reports whether option 77 is class, either as raw text (as
// iPXE sends it) or as the RFC 3004 list of length-prefixed classes.
func hasUserClass(req *dhcpv4.DHCPv4, class string) bool {
	uc := get(req, optUserClass)
	if string(uc) == class {
		return true
	}
	for len(uc) > 0 {
		n := int(uc[0])
		if n == 0 || 1+n > len(uc) {
			return false
		}
		if string(uc[1:1+n]) == class {
			return true
		}
		uc = uc[1+n:]
	}
	return false
}

// Boot file names of the Tinkerbell conventions.
const (
	// notAllowedFile is the boot file of a netboot client that may not
	// netboot (or whose architecture has no binary): a name no server
	// serves, so that the client's boot fails at once.
	notAllowedFile = "/netboot-not-allowed"
)

// Raspberry Pi option 43 sub-options: a PXE boot menu entry (type 0, 17
// bytes of description) and a menu prompt (timeout 0, "PXE"), without
// which the Pi's bootloader ignores the offer.
var (
	rpiBootMenu   = []byte("\x00\x00\x11Raspberry Pi Boot")
	rpiMenuPrompt = []byte("\x00PXE")
)

const (
	subBootMenu   = 9   // option 43 sub-option: PXE_BOOT_MENU
	subMenuPrompt = 10  // option 43 sub-option: PXE_MENU_PROMPT
	subVLAN       = 116 // option 43 sub-option iPXE reads as ${43.116}: the VLAN to boot on
)

// rpiOUIs are the MAC address prefixes of Raspberry Pi boards.
var rpiOUIs = [...][3]byte{
	{0xb8, 0x27, 0xeb}, {0xdc, 0xa6, 0x32}, {0xe4, 0x5f, 0x01}, {0x28, 0xcd, 0xc1}, {0xd8, 0x3a, 0xdd},
}

func isRaspberryPi(mac []byte) bool {
	if len(mac) < 3 {
		return false
	}
	for _, oui := range rpiOUIs {
		if [3]byte(mac[:3]) == oui {
			return true
		}
	}
	return false
}

// clientArch returns the client's architecture: 41 (ARM rpiboot) for a
// Raspberry Pi, whose firmware may say 0, otherwise option 93.
func clientArch(req *dhcpv4.DHCPv4) iana.Arch {
	if isRaspberryPi(req.ClientHWAddr) {
		return 41
	}
	return iana.Arch(binary.BigEndian.Uint16(get(req, optClientArch)))
}

// netboot adds the boot file, next-server and netboot options; see
// [NetbootConfig].
func (s *Server) netboot(sc *scratch, req *dhcpv4.DHCPv4, f *flight) {
	d, n := &f.dhcp, &f.netboot
	if n.AllowNetboot && (d.TFTPServerName != "" || d.BootFileName != "") {
		s.bootOverride(sc, req, d)
		return
	}
	kind := netbootKind(req)
	if kind == notNetboot {
		return
	}
	if kind == httpClient {
		sc.addString(60, prioMandatory, "HTTPClient") // UEFI HTTP boot needs it echoed
	}
	if !n.AllowNetboot {
		sc.file = notAllowedFile
		return
	}
	file, ipxe, ok := s.bootFileFor(req, f, kind)
	if !ok {
		sc.file = notAllowedFile
		return
	}
	if file == "" {
		return
	}
	s.bootFile(sc, file)
	sc.siaddr = s.cfg.nextServer.As4()
	s.option43(sc, req, f)
	if ipxe {
		sc.add(optIPXEEncap, sc.prio(req, optIPXEEncap), ipxeNoPXEDHCP, 1, 1)
	}
}

// bootFileFor returns the boot file for a netboot client of kind whose
// reservation allows netboot ("" when the configuration has no URL for
// its boot method), and whether the client is an iPXE; ok is false when
// there is no binary for the client's architecture.
func (s *Server) bootFileFor(req *dhcpv4.DHCPv4, f *flight, kind clientKind) (file string, ipxe, ok bool) {
	n := &f.netboot
	arch := clientArch(req)
	bin := n.IPXEBinary
	if bin == "" {
		if bin, ok = s.cfg.binaries[arch]; !ok {
			s.cfg.logger.Debug("dhcp netboot: unknown client architecture", "mac", macText(req.ClientHWAddr), "arch", uint16(arch))
			return "", false, false
		}
	}
	custom := hasUserClass(req, s.cfg.userClass)
	ipxe = custom || hasUserClass(req, "iPXE") || has(req, optIPXEEncap)
	switch {
	case custom:
		file = string(n.IPXEScriptURL) // verbatim: iPXE expands ${...}
		if file == "" {
			file = s.cfg.defaultPXE
		}
	case kind == httpClient:
		if s.cfg.httpBase != "" {
			file = s.binaryURL(s.cfg.httpBase, req.ClientHWAddr, bin)
		}
	case ipxe:
		base := s.cfg.tftpBase
		if base == "" {
			base = s.cfg.httpBase
		}
		file = s.binaryURL(base, req.ClientHWAddr, bin)
	default: // a PXE ROM: TFTP from next-server
		file = bin
	}
	return file, ipxe, true
}

// option43 adds the vendor-specific options of a netboot reply: PXE
// discovery control, the Raspberry Pi boot menu, the traceparent, the
// VLAN.
func (s *Server) option43(sc *scratch, req *dhcpv4.DHCPv4, f *flight) {
	off := sc.begin()
	sc.arena = append(sc.arena, pxeDiscoveryCtl, 1, 8)
	if isRaspberryPi(req.ClientHWAddr) {
		sc.arena = append(sc.arena, subBootMenu, byte(len(rpiBootMenu)))
		sc.arena = append(sc.arena, rpiBootMenu...)
		sc.arena = append(sc.arena, subMenuPrompt, byte(len(rpiMenuPrompt)))
		sc.arena = append(sc.arena, rpiMenuPrompt...)
	}
	if f.traced {
		sc.arena = append(sc.arena, subTraceparent, byte(len(f.traceparent)))
		sc.arena = append(sc.arena, f.traceparent[:]...)
	}
	if v := f.dhcp.VLANID; v != "" {
		sc.arena = append(sc.arena, subVLAN, byte(len(v)))
		sc.arena = append(sc.arena, v...)
	}
	sc.arena = append(sc.arena, 255)
	sc.commit(43, sc.prio(req, 43), off)
}

// bootFile sets the boot file: in the file header when it fits, otherwise
// in option 67.
func (s *Server) bootFile(sc *scratch, file string) {
	if len(file) > 127 {
		sc.addString(67, prioMandatory, file) // too long for the file field
	} else {
		sc.file = file
	}
}

// bootOverride sends the reservation's own TFTP server name (option 66)
// and boot file name (option 67, and the file header when it fits)
// instead of the netboot logic, as the Tinkerbell DHCP server does. When
// the TFTP server name is an IPv4 address it is next-server (siaddr) too,
// for PXE ROMs that look only there.
func (s *Server) bootOverride(sc *scratch, req *dhcpv4.DHCPv4, d *backend.DHCP) {
	if d.TFTPServerName != "" {
		sc.addString(66, prioMandatory, d.TFTPServerName)
		if a, err := netip.ParseAddr(d.TFTPServerName); err == nil && a.Is4() {
			sc.siaddr = a.As4()
		}
	}
	if d.BootFileName != "" {
		sc.addString(67, prioMandatory, d.BootFileName)
		if len(d.BootFileName) <= 127 {
			sc.file = d.BootFileName
		}
	}
}

// binaryURL returns base/<mac>/bin, the MAC address written in
// NetbootConfig.MACFormat (no segment for [MACEmpty]).
func (s *Server) binaryURL(base string, mac []byte, bin string) string {
	seg := formatMAC(s.cfg.Netboot.MACFormat, mac)
	if seg == "" {
		return base + "/" + bin
	}
	return base + "/" + seg + "/" + bin
}

// MACFormat is how the server writes a client's MAC address in the path
// of the binary URLs it sends, as the Tinkerbell DHCP server's MAC
// injection formats do; the binary servers serve a file by its base name
// and use the MAC address to log who fetched it.
type MACFormat string

// The formats, shown for 01:02:03:04:05:06.
const (
	MACColon       MACFormat = "colon"        // 01:02:03:04:05:06 (the default)
	MACDot         MACFormat = "dot"          // 0102.0304.0506
	MACDash        MACFormat = "dash"         // 01-02-03-04-05-06
	MACNoDelimiter MACFormat = "no-delimiter" // 010203040506
	MACEmpty       MACFormat = "empty"        // no MAC segment: base/binary
)

func (f MACFormat) valid() bool {
	switch f {
	case "", MACColon, MACDot, MACDash, MACNoDelimiter, MACEmpty:
		return true
	}
	return false
}

func formatMAC(f MACFormat, mac []byte) string {
	const hexDigit = "0123456789abcdef"
	var sep byte
	every := 1
	switch f {
	case MACEmpty:
		return ""
	case MACDot:
		sep, every = '.', 2
	case MACDash:
		sep = '-'
	case MACNoDelimiter:
	default:
		sep = ':'
	}
	b := make([]byte, 0, 3*len(mac))
	for i, x := range mac {
		if i > 0 && sep != 0 && i%every == 0 {
			b = append(b, sep)
		}
		b = append(b, hexDigit[x>>4], hexDigit[x&0xf])
	}
	return string(b)
}
