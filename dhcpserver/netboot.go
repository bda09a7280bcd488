package dhcpserver

import (
	"bytes"
	"encoding/binary"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
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

// netboot adds the boot file, next-server and netboot options for a
// netboot client whose reservation allows it; see [NetbootConfig].
func (s *Server) netboot(sc *scratch, req *dhcpv4.DHCPv4, f *flight) {
	if !f.netboot.AllowNetboot {
		return
	}
	kind := netbootKind(req)
	if kind == notNetboot {
		return
	}
	arch := iana.Arch(binary.BigEndian.Uint16(get(req, optClientArch)))
	bin, ok := s.cfg.binaries[arch]
	if !ok {
		s.cfg.logger.Debug("dhcp netboot: unknown client architecture", "mac", macText(req.ClientHWAddr), "arch", uint16(arch))
		return
	}
	custom := hasUserClass(req, s.cfg.userClass)
	ipxe := custom || hasUserClass(req, "iPXE") || has(req, optIPXEEncap)
	var file string
	switch {
	case custom:
		file = string(f.netboot.IPXEScriptURL) // verbatim: iPXE expands ${...}
		if file == "" {
			file = s.cfg.defaultPXE
		}
	case kind == httpClient:
		if s.cfg.httpBase != "" {
			file = s.cfg.httpBase + "/" + bin
		}
	case ipxe:
		if s.cfg.tftpBase != "" {
			file = s.cfg.tftpBase + "/" + bin
		} else {
			file = s.cfg.httpBase + "/" + bin
		}
	default: // a PXE ROM: TFTP from next-server
		file = bin
	}
	if file == "" {
		return
	}
	if len(file) > 127 {
		sc.addString(67, prioMandatory, file) // too long for the file field
	} else {
		sc.file = file
	}
	sc.siaddr = s.cfg.nextServer.As4()
	if kind == httpClient {
		sc.addString(60, prioMandatory, "HTTPClient") // UEFI HTTP boot needs it echoed
	}
	off := sc.begin()
	sc.arena = append(sc.arena, pxeDiscoveryCtl, 1, 8)
	if f.traced {
		sc.arena = append(sc.arena, subTraceparent, byte(len(f.traceparent)))
		sc.arena = append(sc.arena, f.traceparent[:]...)
	}
	sc.arena = append(sc.arena, 255)
	sc.commit(43, sc.prio(req, 43), off)
	if ipxe {
		sc.add(optIPXEEncap, sc.prio(req, optIPXEEncap), ipxeNoPXEDHCP, 1, 1)
	}
}
