// Package hostsfile is a [backend.Backend] that serves DHCP reservations
// from a file: the "file backend", as Tinkerbell's smee calls its
// equivalent. It is what a responder serves when the reservations live in
// a file under version control rather than in a CMDB or Kubernetes, and it
// is the backend of this module's example command.
//
// The file maps MAC addresses to reservations, in YAML (any name) or JSON
// (a name ending in ".json"):
//
//	hosts:
//	  "52:54:00:66:ea:9a":
//	    IPAddress: 198.18.0.10        # required
//	    SubnetMask: 255.255.255.0
//	    DefaultGateway: 198.18.0.1
//	    NameServers: [198.18.0.2]
//	    Hostname: node-1
//	    LeaseTime: 86400              # seconds
//	    AllowNetboot: true
//	    IPXEScriptURL: http://198.18.0.1:8080/auto.ipxe
//
//	{"hosts": {"52:54:00:66:ea:9a": {"IPAddress": "198.18.0.10", "AllowNetboot": true}}}
//
// Each host holds the fields of a [backend.Message] in its wire form (the
// DHCP and Netboot fields, flat, under their wire names; see the README's
// wire protocol), and is decoded with the wire decoder, so a hosts file
// accepts and rejects exactly what a responder may send. A MAC key may be
// written in any form [net.ParseMAC] accepts; listing a MAC twice, an
// unknown top-level key, a field that does not decode, or a missing
// IPAddress is an [*Error] naming the file, line and host:
//
//	hosts.yaml:4: host 52:54:00:66:ea:9a: backend: field "SubnetMask": ...
//
// Lookups by IP address (see [backend.DHCPRequest]) find the host whose
// IPAddress is asked for; an address that several hosts share is an error
// rather than one of them.
//
// [Backend.Reload] re-reads the file (on SIGHUP, say) and [Backend.Watch]
// polls its size and modification time; either swaps the whole table at
// once, and a malformed file keeps the previous table in service.
//
// Serve it on NATS with the responder package:
//
//	hosts, err := hostsfile.New(hostsfile.Config{Path: "/etc/tinkerbell/hosts.yaml"})
//	...
//	srv, err := responder.New(responder.Config{Conn: nc, Backend: hosts})
//	go hosts.Watch(ctx)
//	err = srv.Serve()
package hostsfile
