package dhcpserver

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"time"

	"github.com/insomniacslk/dhcp/iana"
	"go.opentelemetry.io/otel/trace"

	"github.com/tinkerbell/backend"
)

// Defaults of [Config] fields left zero.
const (
	// DefaultLookupTimeout bounds each Backend lookup: well under the ~4 s
	// after which DHCP clients retransmit.
	DefaultLookupTimeout = 2 * time.Second

	// DefaultLeaseTime is sent as option 51 when the Backend's LeaseTime
	// is 0 (RFC 2131 forbids a zero lease).
	DefaultLeaseTime = 24 * time.Hour

	// DefaultMaxConcurrent is the number of packets handled at once.
	DefaultMaxConcurrent = 64

	// DefaultAnswerReuse is how long the answer of a lookup serves the
	// rest of the client's transaction (see [Config].AnswerReuse).
	DefaultAnswerReuse = 5 * time.Second

	// DefaultNegativeTTL is how long a not-found answer is remembered.
	DefaultNegativeTTL = 5 * time.Second

	// DefaultMinLookupInterval and DefaultMACLookupBurst are the per-MAC
	// limit: a burst of 5 lookups per client, then one per second.
	DefaultMinLookupInterval = time.Second
	DefaultMACLookupBurst    = 5

	// DefaultNotFoundRate and DefaultNotFoundBurst are the not-found
	// budget: 100 not-found answers at once, then 100 per second.
	DefaultNotFoundRate  = 100
	DefaultNotFoundBurst = 100

	// DefaultKnownTTL is how long a client the server answered counts as
	// known: twice the default lease, so a client that renews at half its
	// lease stays known.
	DefaultKnownTTL = 48 * time.Hour

	// DefaultMaxClients bounds the clients remembered for the above (a
	// few hundred bytes each).
	DefaultMaxClients = 65536

	// DefaultUserClass is the iPXE user class (option 77) that marks an
	// iPXE built for Tinkerbell: it gets the iPXE script URL directly.
	DefaultUserClass = "Tinkerbell"
)

// DefaultBinaries maps client architectures (DHCP option 93, RFC 4578 and
// the IANA registry) to iPXE binaries: the Tinkerbell DHCP server's map.
// It is what [NetbootConfig].Binaries defaults to; an architecture missing
// from the map gets the boot file "/netboot-not-allowed" (unless the
// reservation names an IPXEBinary).
func DefaultBinaries() map[iana.Arch]string {
	return map[iana.Arch]string{
		iana.INTEL_X86PC:       "undionly.kpxe", // 0: legacy BIOS
		iana.NEC_PC98:          "undionly.kpxe", // 1
		iana.EFI_ITANIUM:       "undionly.kpxe", // 2
		iana.DEC_ALPHA:         "undionly.kpxe", // 3
		iana.ARC_X86:           "undionly.kpxe", // 4
		iana.INTEL_LEAN_CLIENT: "undionly.kpxe", // 5
		iana.EFI_IA32:          "ipxe.efi",      // 6
		iana.EFI_X86_64:        "ipxe.efi",      // 7
		iana.EFI_XSCALE:        "ipxe.efi",      // 8
		iana.EFI_BC:            "ipxe.efi",      // 9: x86-64 UEFI, as many firmwares send it
		iana.EFI_ARM32:         "snp-arm64.efi", // 10
		iana.EFI_ARM64:         "snp-arm64.efi", // 11
		iana.EFI_X86_HTTP:      "ipxe.efi",      // 15
		iana.EFI_X86_64_HTTP:   "ipxe.efi",      // 16
		iana.EFI_ARM32_HTTP:    "snp-arm64.efi", // 18
		iana.EFI_ARM64_HTTP:    "snp-arm64.efi", // 19
		iana.INTEL_X86PC_HTTP:  "undionly.kpxe", // 20
		iana.Arch(41):          "snp-arm64.efi", // ARM rpiboot (and every Raspberry Pi, by MAC prefix)
	}
}

// Config configures a [Server]. Backend is required, and ServerAddr unless
// it can be taken from Interface or UDPAddr; every other zero field takes
// the documented default.
//
// The server runs in one of two modes:
//
//   - Raw mode (Interface set; Linux only, needs CAP_NET_RAW): an AF_PACKET
//     socket on that interface sees every DHCP request arriving there and
//     sends replies exactly as RFC 2131 §4.1 asks, including unicast to a
//     client that has no address yet (without ARP). This is the mode for
//     real networks. Frames that the interface hands up for another host
//     (promiscuous mode) or for a VLAN interface on top of it are ignored.
//   - UDP mode (UDPAddr set, or [Server.Serve] with a socket of your
//     own): a plain UDP socket, no privileges needed beyond the port. A
//     relayed request (giaddr set) is answered at giaddr:67; every other
//     request is answered at the source address and port it came from, so
//     a client on loopback that sends from any port receives its reply.
//     Clients without an address (the usual broadcast DISCOVER) cannot be
//     reached this way: use UDP mode behind a relay, or for tests and
//     demos on loopback.
type Config struct {
	// Backend answers every lookup. Required.
	Backend backend.Backend

	// ServerAddr is the server identifier (option 54) and the IPv4 source
	// address of raw-mode replies. In raw mode it should be an address of
	// Interface. Zero means the first IPv4 address of Interface (looked
	// up by New, in the caller's network namespace), else the address of
	// UDPAddr if it is not 0.0.0.0; New fails when there is neither.
	ServerAddr netip.Addr

	// Interface selects raw mode on the named network interface.
	Interface string

	// UDPAddr selects UDP mode on this address for
	// [Server.ListenAndServe], such as 0.0.0.0:67. It must be unset in raw
	// mode. To know the port of 127.0.0.1:0, open the socket yourself and
	// pass it to [Server.Serve].
	UDPAddr netip.AddrPort

	// LookupTimeout bounds each Backend lookup. Zero means
	// [DefaultLookupTimeout].
	LookupTimeout time.Duration

	// DefaultLeaseTime is the lease sent when the Backend's LeaseTime is 0.
	// Zero means [DefaultLeaseTime]. It is rounded down to whole seconds.
	DefaultLeaseTime time.Duration

	// MaxConcurrent bounds the packets handled (and lookups running) at
	// once; packets arriving while all are busy and the queue (four times
	// as long for clients answered recently, a quarter for the others) is
	// full are dropped (clients retransmit). Zero means
	// [DefaultMaxConcurrent].
	MaxConcurrent int

	// AnswerReuse is how long the answer of a lookup serves the rest of
	// the client's transaction: the DISCOVER retransmissions and the
	// REQUEST (SELECTING, option 54 ours) with the transaction id (xid)
	// of the DISCOVER that caused it, so that a DORA costs one lookup and
	// the ACK agrees with the OFFER. A new transaction, renewals (REQUEST
	// with ciaddr), INIT-REBOOT and INFORM ask the Backend: they are how
	// changes reach clients. Zero means [DefaultAnswerReuse]; negative
	// turns reuse off.
	AnswerReuse time.Duration

	// NegativeTTL is how long a not-found answer is remembered: requests
	// from that MAC address within it get no reply without a lookup.
	// Zero means [DefaultNegativeTTL]; negative turns it off.
	NegativeTTL time.Duration

	// MinLookupInterval and MACLookupBurst limit the lookups per MAC
	// address, with a token bucket of MACLookupBurst lookups refilled at
	// one per MinLookupInterval: a client (or a forger of its MAC) that
	// starts transactions faster is answered from the last reservation
	// the Backend gave for it if that is younger than AnswerReuse
	// (counted as reused), and otherwise gets no reply ([DropMACLimited])
	// and retransmits. Zero means [DefaultMinLookupInterval] and
	// [DefaultMACLookupBurst]; a negative MinLookupInterval turns the
	// limit off.
	MinLookupInterval time.Duration
	MACLookupBurst    int

	// NotFoundRate and NotFoundBurst are the not-found budget: a token
	// bucket of NotFoundBurst tokens refilled at NotFoundRate per second,
	// charged by results rather than requests. Each not-found answer from
	// the Backend takes a token (the bucket may go into debt by the
	// lookups running when it empties); other answers and errors take
	// none. Lookups for clients that the server has not answered within
	// KnownTTL are admitted freely while the bucket holds a token, and
	// dropped ([DropUnknownLimited]; their clients retransmit) while it is
	// empty. So a mass boot of known machines after a restart runs at full
	// speed, while a flood of distinct unknown MAC addresses reaches the
	// Backend at NotFoundRate per second (after the burst), plus the
	// lookups of the unknown queue's workers. Zero means
	// [DefaultNotFoundRate]; a negative NotFoundRate means no limit. Zero
	// NotFoundBurst means [DefaultNotFoundBurst]; negative is invalid.
	NotFoundRate  float64
	NotFoundBurst int

	// KnownTTL is how long a client the server replied to counts as
	// known: its packets go to the known queue, served by MaxConcurrent
	// workers of their own, and its lookups are not rate-limited. Other
	// packets share a queue and MaxConcurrent/4 workers (at least 1).
	// Zero means [DefaultKnownTTL].
	KnownTTL time.Duration

	// MaxClients bounds the clients remembered for AnswerReuse,
	// NegativeTTL, the per-MAC limit and KnownTTL. When full, clients the
	// server never answered are forgotten first. Zero means
	// [DefaultMaxClients].
	MaxClients int

	// Netboot configures PXE and iPXE clients.
	Netboot NetbootConfig

	// Proxy selects proxyDHCP mode, for networks where another DHCP
	// server assigns the addresses: the server answers only PXE and UEFI
	// HTTP boot clients, and only with boot information (see the package
	// documentation). False is the ordinary reservation server.
	Proxy bool

	// SyslogServer, when set, is sent as option 7 (log server) in every
	// reply that carries configuration (not in proxy mode).
	SyslogServer netip.Addr

	// TracerProvider, when set, starts a span around each Backend lookup.
	// Whether set or not, a valid span context in the lookup's context
	// (from the tracer, or from the ctx given to [Server.Handle]) is sent
	// as the request's Traceparent and in option 43 sub-option 69.
	TracerProvider trace.TracerProvider

	// OnDecision, when set, is called with every decision the server makes
	// about a client (see [Decision]): synchronously, on the goroutine
	// handling the packet, before the reply is sent. It must not block
	// (hand the Decision to a buffered channel, and drop when it is full)
	// and is called concurrently. Nil costs nothing.
	OnDecision func(Decision)

	// Logger receives debug logs for dropped packets and errors for failed
	// lookups. Nil discards them.
	Logger *slog.Logger
}

// NetbootConfig configures how the server answers PXE, iPXE and UEFI HTTP boot
// clients whose reservation allows netboot.
//
// What a netboot client gets (as the Tinkerbell DHCP server does it):
//   - a PXE ROM (option 60 "PXEClient…"): the binary name for its
//     architecture (see Binaries; the reservation's IPXEBinary overrides
//     it) in the file field, to fetch by TFTP from next-server (siaddr);
//   - stock iPXE (option 77 "iPXE"): the full URL of the binary:
//     TFTPBaseURL/<mac>/<binary> when TFTPBaseURL is set, otherwise
//     HTTPBaseURL/<mac>/<binary> (the MAC address as MACFormat says);
//   - iPXE with the custom user class (UserClass): the iPXE script URL of
//     the reservation, verbatim, or IPXEScriptURL when the Backend gives
//     none;
//   - a UEFI HTTP boot client (option 60 "HTTPClient…"):
//     HTTPBaseURL/<mac>/<binary>, and option 60 "HTTPClient" echoed;
//
// plus option 43 sub-option 6 = 8 (PXE boot server discovery off: use the
// boot file), sub-option 69 = the lookup's binary traceparent (26 bytes:
// version, trace id, span id, flags) when the lookup is traced,
// sub-option 116 = the reservation's VLANID, and for iPXE clients option
// 175 sub-option 176 = 1 (no-pxedhcp: do not wait for ProxyDHCP offers).
// A Raspberry Pi, known by its MAC address prefix, counts as architecture
// 41 whatever its option 93 says, and gets option 43 sub-options 9 (a boot
// menu entry "Raspberry Pi Boot") and 10 (menu prompt "PXE"), without
// which its bootloader ignores the offer.
//
// A netboot client whose reservation has AllowNetboot false, or whose
// architecture has no binary, gets the boot file "/netboot-not-allowed"
// and siaddr 0.0.0.0 (and option 60 "HTTPClient" if it is one), so that
// its boot fails at once. A client that is not a netboot client, or one
// for whose boot method no URL is configured, gets its address and
// configuration only: an empty file field, siaddr 0.0.0.0 and no options
// 43, 60 or 175. A reservation with TFTPServerName or BootFileName (and
// AllowNetboot) gets options 66 and 67 instead of all of the above.
type NetbootConfig struct {
	// NextServer is sent as siaddr (the TFTP server of PXE ROMs). Zero
	// means the host of TFTPBaseURL if it is an IPv4 address, otherwise
	// [Config].ServerAddr.
	NextServer netip.Addr

	// TFTPBaseURL is where iPXE binaries are served by TFTP, such as
	// tftp://198.18.0.1 or tftp://198.18.0.1:69/ipxe. Nil means
	// tftp://<NextServer> when HTTPBaseURL is nil too.
	TFTPBaseURL *url.URL

	// HTTPBaseURL is where iPXE binaries are served by HTTP, such as
	// http://198.18.0.1:8080/ipxe. UEFI HTTP boot clients need it.
	HTTPBaseURL *url.URL

	// Binaries maps the client architecture (option 93) to an iPXE binary
	// name. Nil means [DefaultBinaries].
	Binaries map[iana.Arch]string

	// UserClass is the option 77 user class of iPXE builds that should get
	// the script URL. Empty means [DefaultUserClass].
	UserClass string

	// IPXEScriptURL is the script URL sent when the Backend's
	// IPXEScriptURL is empty, verbatim (iPXE settings such as ${mac}
	// survive). Empty means such clients get no boot file.
	IPXEScriptURL backend.URL

	// MACFormat is how the client's MAC address is written in the path of
	// binary URLs (HTTPBaseURL/<mac>/<binary>, TFTPBaseURL/<mac>/<binary>).
	// Empty means [MACColon]; [MACEmpty] leaves the segment out.
	MACFormat MACFormat
}

// config is a validated Config with defaults applied: the server never
// writes to it after New.
type config struct {
	Config
	lease       uint32
	tracer      trace.Tracer
	nextServer  netip.Addr
	tftpBase    string // without trailing slash; "" = none
	httpBase    string
	binaries    map[iana.Arch]string
	userClass   string
	defaultPXE  string // default iPXE script URL, "" = none
	logger      *slog.Logger
	maxInFlight int
	unknownWork int // workers (and queue length) for packets from unknown clients
}

var errConfig = backend.ErrInvalidConfig

func (c Config) validate() (*config, error) {
	out := &config{Config: c}
	for _, check := range []func(*config) error{
		checkBackend, checkServerAddr, checkMode, checkLimits, checkAdmission, checkNetbootURLs, checkNetboot,
	} {
		if err := check(out); err != nil {
			return nil, fmt.Errorf("%w: dhcpserver: %w", errConfig, err)
		}
	}
	if c.TracerProvider != nil {
		out.tracer = c.TracerProvider.Tracer("github.com/tinkerbell/backend/dhcpserver")
	}
	out.logger = c.Logger
	if out.logger == nil {
		out.logger = slog.New(slog.DiscardHandler)
	}
	return out, nil
}

func checkBackend(c *config) error {
	if c.Backend == nil {
		return errors.New("Backend is required")
	}
	return nil
}

// checkServerAddr defaults ServerAddr (from Interface, else UDPAddr) and
// checks that it is a unicast IPv4 address: option 54 and the source of
// replies.
func checkServerAddr(c *config) error {
	if !c.ServerAddr.IsValid() {
		switch {
		case c.Interface != "":
			ifi, err := net.InterfaceByName(c.Interface)
			if err != nil {
				return fmt.Errorf("ServerAddr not set, and %w", err)
			}
			if c.ServerAddr, err = interfaceAddr(ifi); err != nil {
				return fmt.Errorf("ServerAddr not set, and %w", err)
			}
		case c.UDPAddr.IsValid() && !c.UDPAddr.Addr().IsUnspecified():
			c.ServerAddr = c.UDPAddr.Addr().Unmap()
		default:
			return errors.New("ServerAddr is required unless Interface (or UDPAddr) names an IPv4 address")
		}
	}
	c.ServerAddr = c.ServerAddr.Unmap()
	if !c.ServerAddr.Is4() {
		return fmt.Errorf("ServerAddr %v is not an IPv4 address", c.ServerAddr)
	}
	if c.ServerAddr.IsUnspecified() || c.ServerAddr.IsMulticast() || c.ServerAddr == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return fmt.Errorf("ServerAddr %v is not a unicast address", c.ServerAddr)
	}
	return nil
}

func checkMode(c *config) error {
	if c.Interface != "" && c.UDPAddr.IsValid() {
		return errors.New("set Interface (raw mode) or UDPAddr (UDP mode), not both")
	}
	if c.UDPAddr.IsValid() && !c.UDPAddr.Addr().Unmap().Is4() {
		return fmt.Errorf("UDPAddr %v is not IPv4", c.UDPAddr)
	}
	return nil
}

// checkLimits checks and defaults the durations and sizes.
func checkLimits(c *config) error {
	if c.LookupTimeout < 0 || c.DefaultLeaseTime < 0 || c.MaxConcurrent < 0 {
		return errors.New("negative LookupTimeout, DefaultLeaseTime or MaxConcurrent")
	}
	if c.LookupTimeout == 0 {
		c.LookupTimeout = DefaultLookupTimeout
	}
	lease := c.DefaultLeaseTime
	if lease == 0 {
		lease = DefaultLeaseTime
	}
	if lease < time.Second || lease/time.Second > 0xffffffff {
		return fmt.Errorf("DefaultLeaseTime %v out of range", c.DefaultLeaseTime)
	}
	c.lease = uint32(lease / time.Second)
	c.maxInFlight = c.MaxConcurrent
	if c.maxInFlight == 0 {
		c.maxInFlight = DefaultMaxConcurrent
	}
	return nil
}

// checkAdmission checks and defaults the admission-control knobs; a
// negative duration becomes 0 (off).
func checkAdmission(c *config) error {
	if c.KnownTTL < 0 || c.MaxClients < 0 || c.MACLookupBurst < 0 || c.NotFoundBurst < 0 {
		return errors.New("negative KnownTTL, MaxClients, MACLookupBurst or NotFoundBurst")
	}
	if c.MACLookupBurst == 0 {
		c.MACLookupBurst = DefaultMACLookupBurst
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&c.AnswerReuse, DefaultAnswerReuse},
		{&c.NegativeTTL, DefaultNegativeTTL},
		{&c.MinLookupInterval, DefaultMinLookupInterval},
		{&c.KnownTTL, DefaultKnownTTL},
	} {
		switch {
		case *d.v == 0:
			*d.v = d.def
		case *d.v < 0:
			*d.v = 0
		}
	}
	if c.NotFoundRate == 0 {
		c.NotFoundRate = DefaultNotFoundRate
	}
	if c.NotFoundRate != c.NotFoundRate { // NaN
		return errors.New("NotFoundRate is NaN")
	}
	if c.NotFoundBurst == 0 {
		c.NotFoundBurst = DefaultNotFoundBurst
	}
	if c.MaxClients == 0 {
		c.MaxClients = DefaultMaxClients
	}
	c.unknownWork = max(1, c.maxInFlight/4)
	return nil
}

// checkNetbootURLs checks that the configured URLs are absolute URLs of a
// scheme their clients can use.
func checkNetbootURLs(c *config) error {
	nb := c.Netboot
	for _, u := range []struct {
		name  string
		u     *url.URL
		allow []string
	}{
		{"Netboot.TFTPBaseURL", nb.TFTPBaseURL, []string{"tftp"}},
		{"Netboot.HTTPBaseURL", nb.HTTPBaseURL, []string{"http", "https"}},
	} {
		if u.u != nil && (u.u.Host == "" || !contains(u.allow, u.u.Scheme)) {
			return fmt.Errorf("%s %q is not an absolute %v URL", u.name, u.u, u.allow)
		}
	}
	if nb.IPXEScriptURL != "" && !nb.IPXEScriptURL.IsValid() {
		return fmt.Errorf("Netboot.IPXEScriptURL %q is not an absolute http, https or tftp URL", nb.IPXEScriptURL)
	}
	return nil
}

// checkNetboot derives next-server, the base URLs, the binaries and the
// user class from Netboot.
func checkNetboot(c *config) error {
	nb := c.Netboot
	c.nextServer = nb.NextServer
	if c.nextServer.IsValid() && !c.nextServer.Is4() {
		return fmt.Errorf("Netboot.NextServer %v is not IPv4", nb.NextServer)
	}
	if !c.nextServer.IsValid() && nb.TFTPBaseURL != nil {
		if a, err := netip.ParseAddr(nb.TFTPBaseURL.Hostname()); err == nil && a.Is4() {
			c.nextServer = a
		}
	}
	if !c.nextServer.IsValid() {
		c.nextServer = c.ServerAddr
	}
	switch {
	case nb.TFTPBaseURL != nil:
		c.tftpBase = trimSlash(nb.TFTPBaseURL.String())
	case nb.HTTPBaseURL == nil:
		c.tftpBase = "tftp://" + c.nextServer.String()
	}
	if nb.HTTPBaseURL != nil {
		c.httpBase = trimSlash(nb.HTTPBaseURL.String())
	}
	c.binaries = nb.Binaries
	if c.binaries == nil {
		c.binaries = DefaultBinaries()
	}
	for arch, name := range c.binaries {
		if name == "" || len(name) > 100 {
			return fmt.Errorf("Netboot.Binaries[%d] = %q: empty or too long", arch, name)
		}
	}
	if !nb.MACFormat.valid() {
		return fmt.Errorf("Netboot.MACFormat %q is not one of colon, dot, dash, no-delimiter, empty", nb.MACFormat)
	}
	if c.SyslogServer.IsValid() && !c.SyslogServer.Unmap().Is4() {
		return fmt.Errorf("SyslogServer %v is not IPv4", c.SyslogServer)
	}
	c.userClass = nb.UserClass
	if c.userClass == "" {
		c.userClass = DefaultUserClass
	}
	c.defaultPXE = string(nb.IPXEScriptURL)
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func trimSlash(s string) string {
	for len(s) > 0 && s[len(s)-1] == '/' {
		s = s[:len(s)-1]
	}
	return s
}

// ErrUnsupported is returned by [ListenRaw] and [Server.ListenAndServe]
// for raw mode on systems other than Linux.
var ErrUnsupported = errors.New("dhcpserver: raw mode is only supported on Linux")
