package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/dhcpserver"
	"github.com/tinkerbell/backend/hostsfile"
	natsbackend "github.com/tinkerbell/backend/nats"
	"github.com/tinkerbell/backend/responder"
)

// demoUnknownMAC is a MAC address the example hosts file does not list: it
// gets no offer, since the DHCP server stays silent for unknown clients.
var demoUnknownMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0x00, 0x00, 0x99}

// demoWait is how long the demo client waits for each reply.
const demoWait = 2 * time.Second

// runDemo runs the whole loop in one process on loopback and prints one
// lease per host of the hosts file.
func runDemo(ctx context.Context, o *options, stdout io.Writer, log *slog.Logger) error {
	path := o.hosts
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) && path == "example/testdata/hosts.yaml" {
		path = "testdata/hosts.yaml" // run from inside example/
	}
	hosts, err := hostsfile.New(hostsfile.Config{Path: path, Logger: log})
	if err != nil {
		return usageError{fmt.Errorf("hosts file: %w", err)}
	}

	// 1. An embedded NATS server on a random loopback port.
	ns, err := startNATS(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true}, log)
	if err != nil {
		return err
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()

	// 2. The responder, serving the hosts file on its own connection.
	rc, err := nats.Connect(ns.ClientURL(), nats.Name("demo-responder"))
	if err != nil {
		return err
	}
	defer rc.Close()
	resp, err := responder.New(responder.Config{Conn: rc, Backend: hosts, Logger: log})
	if err != nil {
		return err
	}
	respDone := make(chan error, 1)
	go func() { respDone <- resp.Serve() }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = resp.Shutdown(sctx)
		<-respDone
	}()

	// 3. The DHCP server in UDP mode on loopback, asking over NATS.
	dc, err := nats.Connect(ns.ClientURL(), nats.Name("demo-dhcp"))
	if err != nil {
		return err
	}
	defer dc.Close()
	// The same availability pieces as the real DHCP server.
	rcfg := requesterConfig(o, dc, log)
	rcfg.Subject, rcfg.SubjectPrefix = "", ""
	requester, err := natsbackend.New(rcfg)
	if err != nil {
		return err
	}
	lookups, err := newCache(o, requester, log)
	if err != nil {
		return err
	}
	cfg, err := demoDHCPConfig(o, lookups, log)
	if err != nil {
		return err
	}
	dhcp, err := dhcpserver.New(cfg)
	if err != nil {
		return err
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	dhcpDone := make(chan error, 1)
	go func() { dhcpDone <- dhcp.Serve(conn) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = dhcp.Shutdown(sctx)
		<-dhcpDone
	}()
	serverAddr := conn.LocalAddr().(*net.UDPAddr)

	fmt.Fprintf(stdout, "NATS server %s, responder on %q serving %d hosts from %s, DHCP server on udp %s\n\n",
		ns.ClientURL(), resp.Subject(), hosts.Len(), path, serverAddr)

	// 4. A DHCP client: DISCOVER, OFFER, REQUEST, ACK for every host, as a
	//    PXE client running Tinkerbell's iPXE, and one unknown MAC.
	macs := append(hosts.MACs(), demoUnknownMAC)

	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MAC\tIP\tMASK\tGATEWAY\tDNS\tHOSTNAME\tNETBOOT\tTIME")
	failed := 0
	for _, mac := range macs {
		l, err := demoDORA(ctx, serverAddr, mac, o.userClass)
		switch {
		case errors.Is(err, errNoOffer):
			fmt.Fprintf(tw, "%s\tno offer (not in the hosts file)\t\t\t\t\t\t%s\n", mac, l.took.Round(time.Millisecond))
			if slices.Equal(mac, demoUnknownMAC) {
				continue
			}
			failed++
		case err != nil:
			return fmt.Errorf("DHCP exchange for %s: %w", mac, err)
		default:
			if slices.Equal(mac, demoUnknownMAC) {
				failed++ // the unknown MAC must not get a lease
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", mac, l.ip, l.mask, l.router, l.dns, l.hostname, l.boot, l.took.Round(100*time.Microsecond))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("%d DHCP exchanges did not go as the hosts file says", failed)
	}
	st := dhcp.Stats()
	fmt.Fprintf(stdout, "\nDHCP server: %d DISCOVER, %d REQUEST received; %d OFFER, %d ACK sent; %d lookups, %d not found.\n",
		st.Received[dhcpv4.MessageTypeDiscover], st.Received[dhcpv4.MessageTypeRequest],
		st.Answered[dhcpv4.MessageTypeOffer], st.Answered[dhcpv4.MessageTypeAck], st.Lookups, st.NotFound)
	return nil
}

func demoDHCPConfig(o *options, b backend.Backend, log *slog.Logger) (dhcpserver.Config, error) {
	cfg := dhcpserver.Config{
		Backend:       b,
		ServerAddr:    netip.MustParseAddr("127.0.0.1"),
		LookupTimeout: o.lookupTimeout,
		Logger:        log,
	}
	if err := admission(o, &cfg); err != nil {
		return cfg, err
	}
	cfg.Netboot.UserClass = o.userClass
	// Hosts that may netboot but name no script get this one.
	script := o.scriptURL
	if script == "" {
		script = demoDefaultScript
	}
	u, err := backend.ParseURL(script)
	if err != nil || u == "" {
		return cfg, usageError{fmt.Errorf("-ipxe-script-url %q: want an absolute URL", script)}
	}
	cfg.Netboot.IPXEScriptURL = u
	return cfg, nil
}

// demoDefaultScript is the iPXE script of netbooting hosts whose
// reservation names none.
const demoDefaultScript = "http://198.18.0.1:8080/default.ipxe"

// demoLease is what the demo prints of an ACK.
type demoLease struct {
	ip, mask, router, dns, hostname, boot string
	took                                  time.Duration
}

var errNoOffer = errors.New("no offer")

// demoDORA runs DISCOVER/OFFER/REQUEST/ACK for mac against the server at
// addr from a fresh loopback socket, presenting itself as an x86-64 UEFI
// PXE client running iPXE with the given user class.
func demoDORA(ctx context.Context, addr *net.UDPAddr, mac net.HardwareAddr, userClass string) (demoLease, error) {
	var l demoLease
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return l, err
	}
	defer conn.Close()
	pxe := []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003016")),
		dhcpv4.WithGeneric(dhcpv4.OptionClientSystemArchitectureType, []byte{0, byte(iana.EFI_X86_64)}),
		dhcpv4.WithGeneric(dhcpv4.OptionClientNetworkInterfaceIdentifier, []byte{1, 3, 16}),
		dhcpv4.WithGeneric(dhcpv4.OptionUserClassInformation, []byte(userClass)),
		dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer,
			dhcpv4.OptionHostName, dhcpv4.OptionDomainName, dhcpv4.OptionBootfileName),
	}
	start := time.Now()
	discover, err := dhcpv4.NewDiscovery(mac, pxe...)
	if err != nil {
		return l, err
	}
	offer, err := exchange(ctx, conn, addr, discover, dhcpv4.MessageTypeOffer)
	l.took = time.Since(start)
	if err != nil {
		return l, err
	}
	request, err := dhcpv4.NewRequestFromOffer(offer, pxe...)
	if err != nil {
		return l, err
	}
	ack, err := exchange(ctx, conn, addr, request, dhcpv4.MessageTypeAck)
	l.took = time.Since(start)
	if err != nil {
		return l, err
	}
	l.ip = ack.YourIPAddr.String()
	if m := ack.SubnetMask(); m != nil {
		l.mask = net.IP(m).String()
	}
	l.router = joinIPs(ack.Router())
	l.dns = joinIPs(ack.DNS())
	l.hostname = ack.HostName()
	if d := ack.DomainName(); d != "" {
		l.hostname += "." + d
	}
	l.boot = ack.BootFileNameOption()
	if l.boot == "" {
		l.boot = ack.BootFileName
	}
	if l.boot == "" || l.boot == "/netboot-not-allowed" { // the DHCP server's "may not netboot"
		l.boot = "-"
	}
	return l, nil
}

// exchange sends req and waits for a reply of type want with req's
// transaction id, or errNoOffer when none comes within demoWait.
func exchange(ctx context.Context, conn *net.UDPConn, addr *net.UDPAddr, req *dhcpv4.DHCPv4, want dhcpv4.MessageType) (*dhcpv4.DHCPv4, error) {
	if _, err := conn.WriteToUDP(req.ToBytes(), addr); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(demoWait)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	if err := conn.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	buf := make([]byte, 1500)
	for {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		n, _, err := conn.ReadFromUDP(buf)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			if want == dhcpv4.MessageTypeOffer {
				return nil, errNoOffer
			}
			return nil, fmt.Errorf("no %s within %v", want, demoWait)
		}
		if err != nil {
			return nil, err
		}
		reply, err := dhcpv4.FromBytes(buf[:n])
		if err != nil || reply.TransactionID != req.TransactionID {
			continue
		}
		switch reply.MessageType() {
		case want:
			return reply, nil
		case dhcpv4.MessageTypeNak:
			return nil, fmt.Errorf("NAK: %s", reply.Message())
		}
	}
}

func joinIPs(ips []net.IP) string {
	if len(ips) == 0 {
		return "-"
	}
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return strings.Join(s, ",")
}
