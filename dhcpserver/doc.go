// Package dhcpserver is a reservation-only DHCPv4 server: every answer
// comes from a [backend.Backend] (in process, or another process reached
// through the nats package), and there are no address pools and no lease
// database. It speaks RFC 2131 as real clients and PXE ROMs expect.
//
// # Protocol
//
// DISCOVER gets an OFFER and REQUEST an ACK, following RFC 2131 §4.3.2: a
// REQUEST naming another server (option 54) gets no answer; in INIT-REBOOT
// (option 50 without ciaddr) and RENEWING/REBINDING (ciaddr) a client that
// asks for an address other than its reservation gets a NAK. RELEASE gets
// nothing (reservations outlive leases); DECLINE is logged as an address
// conflict; INFORM gets an ACK with the configuration but no address or
// lease time. A MAC address the Backend does not know (it returns
// [backend.ErrNotFound]) gets no answer, since another server may own the
// client; a Backend error or timeout gets none either, and is logged. Each
// lookup has a deadline ([Config].LookupTimeout) well under the ~4 s after
// which clients retransmit, and concurrent requests for one MAC address
// (retransmissions, DISCOVER then REQUEST) share one lookup, each waiting
// only as long as its own context allows. A RELEASE or DECLINE naming another server (option 54)
// is ignored.
//
// Replies carry options 1, 3, 6, 12, 15, 28, 42, 51, 119 (compressed as
// RFC 3397 asks, a pointer only to identical bytes, so every name keeps
// its spelling) and 121 (RFC 3442) from the reservation, 7 from
// [Config].SyslogServer, 54 (the server identifier), 58 and 59 (renewal
// at 50 % and rebinding at 87.5 % of the lease), option 61 echoed (RFC
// 6842) and option 82 echoed last (RFC 3046). A reservation with a zero
// lease time gets [Config].DefaultLeaseTime; one with Disabled set gets no
// reply at all. Replies fit the client's option 57, or 576 bytes without
// it. When the options do not fit the options field, the file and sname
// header fields carry options too if the reply does not use them (option
// overload, RFC 2132 §9.3, as dnsmasq does). Only when that is not enough
// are options left out: the most important are placed first (options the
// client asked for in option 55 before the others), and every option that
// still fits is kept, so leaving out a long search list does not lose
// options 58 and 59. A reply whose essential options do not fit is not
// sent rather than sent corrupt.
//
// Netboot follows the Tinkerbell DHCP server (smee, in the
// tinkerbell/tinkerbell repository); see [NetbootConfig]. Where this
// server differs from smee on purpose:
//
//   - options 58 and 59 are sent (RFC 2131 §4.4.5 defaults, which some
//     clients need explicitly); smee sends neither;
//   - option 43 carries no sub-option 69 when the lookup is not traced
//     (smee sends 26 zero bytes), and carries the reservation's VLANID as
//     sub-option 116, which iPXE reads as ${43.116} (smee never sends it);
//   - iPXE clients get option 175 sub-option 176 = 1 (no-pxedhcp), so
//     iPXE does not wait for ProxyDHCP offers;
//   - INFORM gets an ACK (RFC 2131 §4.3.5); smee ignores it;
//   - a zero LeaseTime means [Config].DefaultLeaseTime; smee sends a zero
//     lease;
//   - TFTPServerName and BootFileName (options 66 and 67) are sent only
//     when AllowNetboot is true, so that an answer with netboot withheld
//     (a stale cached answer, say) boots nothing; smee sends them
//     regardless. When TFTPServerName is an IPv4 address it is siaddr too;
//   - option 249 is not sent with 121, as smee does not either.
//
// # Proxy mode
//
// With [Config].Proxy the server is a proxyDHCP server (the PXE
// specification's, and smee's proxy handler): another server assigns the
// addresses, and this one answers PXE and UEFI HTTP boot clients (option
// 60, 93 and 94 as above) with boot information only. A DISCOVER gets an
// OFFER and a REQUEST an ACK, with yiaddr 0.0.0.0 and none of the address
// options (no 1, 3, 6, 12, 15, 28, 42, 51, 58, 59, 119, 121, 7): the boot
// file as a reservation server would send it, siaddr and sname the
// next-server (sname as its dotted quad), option 60 "PXEClient" or
// "HTTPClient" as the client is, option 97 (the client's machine
// identifier) echoed, option 43 (discovery control 8, the Raspberry Pi
// menu, the traceparent, the VLAN), option 54 ([Config].ServerAddr), and
// options 61 and 82 echoed. A client that is not a netboot client, whose
// architecture has no binary, for whose boot method no URL is configured,
// or that the Backend does not know (or marks Disabled) gets nothing
// ([DropNotPXE], [DropNotFound], [DropDisabled]); other message types get
// nothing either. A reservation with AllowNetboot false gets the boot file
// "/<mac>/netboot-not-allowed", as smee's proxy sends it. Unlike smee's
// proxy, the reservation's IPXEScriptURL and IPXEBinary apply (smee's
// proxy uses only its global script URL), option 54 is this server's
// address rather than the next-server's (the two are the same unless
// NextServer is set), option 97 is echoed only when the client sent it
// (smee sends an empty one), and iPXE gets no option 175. Replies go as
// RFC 2131 §4.1 says for a reply without yiaddr: to the relay, to ciaddr,
// or broadcast. Nothing listens on port 4011.
//
// Reply addressing is RFC 2131 §4.1: to the relay (giaddr:67) if there is
// one, else to ciaddr:68 if set, else broadcast if the client set the
// broadcast flag, else unicast to the offered address at the client's
// hardware address without ARP. NAKs are broadcast (or go to the relay).
//
// # Availability
//
// A DORA costs one lookup: the answer that produced an OFFER serves the
// DISCOVER retransmissions and the REQUEST of the same transaction (xid)
// for [Config].AnswerReuse (default 5 s), so OFFER and ACK always agree.
// New transactions, renewals, INIT-REBOOT and INFORM ask the Backend
// again: they are how changes reach clients.
//
// Admission control keeps a flood of unknown MAC addresses from starving
// known clients, with knobs in [Config] that are on by default:
//
//   - a negative cache: a not-found answer is remembered for
//     NegativeTTL (default 5 s);
//   - a per-MAC limit: a token bucket of MACLookupBurst lookups (default
//     5) refilled at one per MinLookupInterval (default 1 s); over it, a
//     client is answered from its last reservation if that is younger
//     than AnswerReuse, and otherwise not at all;
//   - two queues: packets from clients the server replied to within
//     KnownTTL (default 48 h) have MaxConcurrent workers of their own
//     and a queue four times as long;
//     the others share a short queue and MaxConcurrent/4 workers;
//   - a not-found budget: a token bucket of NotFoundBurst (default 100)
//     refilled at NotFoundRate (default 100 per second), charged by
//     results: each not-found answer from the Backend takes a token.
//     Lookups for clients not answered recently are admitted freely while
//     the bucket holds a token and dropped while it is empty, so that
//     known machines booting at once after a restart (none of which the
//     new server has answered yet) are all looked up at full speed, while
//     a flood of unknown MAC addresses reaches the Backend only at the
//     budget's rate, plus the unknown queue's workers.
//
// What this remembers is bounded by MaxClients (default 65,536), and
// clients never answered are forgotten first. A client that is new during
// a flood competes with the flood for the unknown share (it retransmits
// until it gets through); once answered, it is served first. Every drop is
// counted by reason in [Stats].Dropped.
//
// # Sockets
//
// Raw mode ([ListenRaw], or [Config].Interface; Linux only) reads requests
// on one interface through an AF_PACKET socket with a BPF filter for UDP
// port 67 and writes replies as whole Ethernet frames from
// [Config].ServerAddr (by default the interface's first IPv4 address), on
// the same interface. It also binds a UDP socket to port 67 on that
// interface and never reads it, so that the kernel does not answer unicast
// RENEW and RELEASE packets with ICMP port unreachable. UDP mode
// ([Config].UDPAddr, or [Server.Serve] with a socket of your own) needs no
// privileges; see [Config] for its limits. Packets are handled by
// [Config].MaxConcurrent workers with reused buffers; malformed packets,
// BOOTREPLY packets, other hardware types and oversize packets are dropped
// and counted ([Server.Stats]).
//
// The lifecycle is that of net/http: [New] validates the configuration;
// [Server.Serve] serves a socket the caller opened ([ListenRaw], or any
// [net.PacketConn] such as a *net.UDPConn), so the server is ready as soon
// as the socket is open, or [Server.ListenAndServe] opens the one the
// configuration names. Serve blocks until [Server.Shutdown] (which lets the
// packets being handled be answered, and returns the context's error if
// they outlast it) or [Server.Close] (which stops now), then returns
// [ErrServerClosed].
//
// # Observing
//
// [Server.Stats] returns every counter a metrics collector needs: packets
// received and replies sent by message type, drops by [DropReason] (all
// listed by [DropReasons]), lookups, coalesced and reused requests, the
// lookups in flight and the requests waiting for them, and a lookup
// latency histogram. [Config].OnDecision receives a [Decision] for every
// offer, ack, nak, inform, release, decline, not-found and backend error,
// synchronously: it must not block. Both cost nothing beyond atomic adds
// when nobody looks.
//
// With [Config].TracerProvider set, each lookup runs in a server-kind
// span "dhcp.lookup" (the server handling a client's transaction; the
// Backend's own spans, such as the NATS requester's client-kind span,
// are its children). When an iPXE client sends back the binary
// traceparent it was given (option 43 sub-option 69), the lookup
// continues that trace, so the chain of boots of one machine is one
// trace.
//
// # Testing without root
//
// [Server.Handle] answers one parsed request without any socket, and
// [Server.Serve] serves a UDP socket of your own: on loopback, a client
// that sends requests (giaddr zero) from any local port gets its replies
// back at that address and port.
package dhcpserver
