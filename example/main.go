// Command example runs the whole loop of this module: an embedded NATS
// server, a responder that serves reservations from a hosts file, and a
// DHCP server that asks over NATS.
//
// One command shows it all, without root or flags:
//
//	go run ./example -demo
//
// starts every piece in one process (the DHCP server in UDP mode on
// loopback), runs a DHCP exchange for each host of testdata/hosts.yaml and
// one unknown MAC address, prints the leases and exits.
//
// For real, run the pieces separately (each until SIGINT or SIGTERM):
//
//	go run ./example -server                        # embedded NATS server
//	go run ./example -responder -hosts hosts.yaml   # serves reservations
//	sudo go run ./example -iface eth1 -server-addr 198.18.0.1   # DHCP server
//
// Exit codes: 0 success, 1 runtime failure, 2 bad flags or configuration.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/cache"
	"github.com/tinkerbell/backend/dhcpserver"
	"github.com/tinkerbell/backend/events"
	"github.com/tinkerbell/backend/hostsfile"
	"github.com/tinkerbell/backend/metrics"
	natsbackend "github.com/tinkerbell/backend/nats"
	"github.com/tinkerbell/backend/responder"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// options are the command's flags.
type options struct {
	server, responder, demo bool

	// Logging.
	logFormat string
	verbose   bool

	// Embedded NATS server (-server).
	natsAddr   string
	natsConfig string

	// NATS client connections (-responder and the DHCP server).
	natsURL      string
	natsCreds    string
	natsNKey     string
	natsUser     string
	natsPassword string
	natsCA       string
	natsCert     string
	natsKey      string
	subject      string
	prefix       string

	// HTTP endpoint of -responder and the DHCP server.
	httpAddr string
	pprof    bool
	events   bool // DHCP server: publish decision events

	// Responder.
	hosts          string
	reloadInterval time.Duration

	// DHCP server.
	iface         string
	udpAddr       string
	serverAddr    string
	lookupTimeout time.Duration
	macBurst      int
	bootServer    string
	tftpBase      string
	httpBase      string
	scriptURL     string
	userClass     string
	proxy         bool
	inProcess     bool // serve -hosts in the DHCP server's own process
	syslogServer  string
	macFormat     string

	// Availability of the DHCP server (issue 9). Each is on by default;
	// 0 (or a negative value) turns a piece off.
	natsHealth        bool          // natsbackend.ConnectionOptions on the DHCP server's connection
	hedgeDelay        time.Duration // natsbackend.Config.HedgeDelay
	attempts          int           // natsbackend.RetryPolicy.MaxAttempts
	staleMaxAge       time.Duration // cache.Config.MaxAge
	cacheSize         int           // cache.Config.MaxEntries
	answerReuse       time.Duration // dhcpserver.Config.AnswerReuse
	negativeTTL       time.Duration // dhcpserver.Config.NegativeTTL
	minLookupInterval time.Duration // dhcpserver.Config.MinLookupInterval
	notFoundRate      float64       // dhcpserver.Config.NotFoundRate
	notFoundBurst     int           // dhcpserver.Config.NotFoundBurst
	knownTTL          time.Duration // dhcpserver.Config.KnownTTL
	maxClients        int           // dhcpserver.Config.MaxClients
	maxConcurrent     int           // dhcpserver.Config.MaxConcurrent
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("example", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: example [-demo | -server | -responder | (DHCP server)] [flags]\n\n")
		fs.PrintDefaults()
	}
	fs.BoolVar(&o.demo, "demo", false, "run everything in one process on loopback (no root), print the leases of the example hosts and exit")
	fs.BoolVar(&o.server, "server", false, "run an embedded NATS server")
	fs.BoolVar(&o.responder, "responder", false, "serve the reservations of -hosts on the NATS subject")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.BoolVar(&o.verbose, "v", false, "debug logging")

	fs.StringVar(&o.natsAddr, "nats-addr", "127.0.0.1:4222", "-server: client listen address")
	fs.StringVar(&o.natsConfig, "nats-config", "", "-server: nats-server configuration file (TLS, accounts, users, permissions, cluster)")

	fs.StringVar(&o.natsURL, "nats-url", nats.DefaultURL, "NATS server URL(s), comma separated")
	fs.StringVar(&o.natsCreds, "nats-creds", "", "NATS user credentials file (JWT + nkey seed)")
	fs.StringVar(&o.natsNKey, "nats-nkey", "", "NATS nkey seed file")
	fs.StringVar(&o.natsUser, "nats-user", "", "NATS user name")
	fs.StringVar(&o.natsPassword, "nats-password", "", "NATS password (or set NATS_PASSWORD)")
	fs.StringVar(&o.natsCA, "nats-ca", "", "PEM file of CAs that sign the NATS server's certificate (enables TLS)")
	fs.StringVar(&o.natsCert, "nats-cert", "", "PEM client certificate for NATS mutual TLS")
	fs.StringVar(&o.natsKey, "nats-key", "", "PEM client key for NATS mutual TLS")
	fs.StringVar(&o.subject, "subject", backend.DefaultSubject, "NATS subject of lookups")
	fs.StringVar(&o.prefix, "subject-prefix", "", "prefix of the subject, for tenants sharing NATS")

	fs.StringVar(&o.httpAddr, "http-addr", "", "-responder, DHCP server: listen address of /metrics (Prometheus) and /healthz, e.g. 127.0.0.1:9090; empty: none")
	fs.BoolVar(&o.events, "events", false, "DHCP server: publish a CloudEvent per decision on <prefix>.tinkerbell.dhcp.events.<kind> (watch: nats sub 'tinkerbell.dhcp.events.>')")
	fs.BoolVar(&o.pprof, "pprof", false, "also serve net/http/pprof under /debug/pprof/ on -http-addr")
	fs.StringVar(&o.hosts, "hosts", "example/testdata/hosts.yaml", "-responder, -demo, -in-process: hosts file (YAML or .json)")
	fs.BoolVar(&o.inProcess, "in-process", false, "DHCP server: serve the reservations of -hosts from this process instead of asking over NATS (no hop, no NATS; a single-machine setup, and the baseline of example/perf/run.sh)")
	fs.DurationVar(&o.reloadInterval, "reload-interval", 2*time.Second, "-responder, -in-process: how often to check the hosts file for changes (SIGHUP reloads at once)")

	fs.StringVar(&o.iface, "iface", "", "DHCP server: network interface for raw sockets (Linux, needs CAP_NET_RAW)")
	fs.StringVar(&o.udpAddr, "udp", "", "DHCP server: plain UDP listen address instead of -iface, e.g. 0.0.0.0:67 behind a relay")
	fs.StringVar(&o.serverAddr, "server-addr", "", "DHCP server: our IPv4 address (server identifier, source of replies); default: the first IPv4 address of -iface")
	fs.DurationVar(&o.lookupTimeout, "lookup-timeout", dhcpserver.DefaultLookupTimeout, "DHCP server: deadline of each backend lookup")
	fs.IntVar(&o.macBurst, "mac-lookup-burst", dhcpserver.DefaultMACLookupBurst, "DHCP server: per-MAC limit, the burst of lookups")
	fs.StringVar(&o.bootServer, "boot-server", "", "DHCP server: next-server (siaddr) for PXE ROMs; default the TFTP host or -server-addr")
	fs.StringVar(&o.tftpBase, "tftp-base", "", "DHCP server: TFTP base URL of the iPXE binaries, e.g. tftp://198.18.0.1")
	fs.StringVar(&o.httpBase, "http-base", "", "DHCP server: HTTP base URL of the iPXE binaries, e.g. http://198.18.0.1:8080/ipxe")
	fs.StringVar(&o.scriptURL, "ipxe-script-url", "", "DHCP server: iPXE script URL when the backend sends none")
	fs.StringVar(&o.userClass, "user-class", dhcpserver.DefaultUserClass, "DHCP server: iPXE user class that gets the script URL")
	fs.BoolVar(&o.proxy, "proxy", false, "DHCP server: proxyDHCP mode: answer only PXE and UEFI HTTP boot clients, with boot information only (another server assigns addresses)")
	fs.StringVar(&o.syslogServer, "syslog-server", "", "DHCP server: IPv4 address sent as option 7 (log server)")
	fs.StringVar(&o.macFormat, "mac-format", string(dhcpserver.MACColon), "DHCP server: MAC address in binary URLs: colon, dot, dash, no-delimiter or empty")

	fs.BoolVar(&o.natsHealth, "nats-health", true, "-responder, DHCP server: connection health settings that notice a frozen NATS server within ~2s (ping 1s, 2 pings out, write timeout, reconnect jitter); false: nats.go's defaults")
	fs.DurationVar(&o.hedgeDelay, "hedge-delay", natsbackend.DefaultHedgeDelay, "DHCP server: send a lookup again (to another responder) when no reply came within this; 0 or negative: no hedging")
	fs.IntVar(&o.attempts, "lookup-attempts", natsbackend.DefaultMaxAttempts, "DHCP server: attempts per lookup, sharing -lookup-timeout; 1: no retries")
	fs.DurationVar(&o.staleMaxAge, "stale-max-age", cache.DefaultMaxAge, "DHCP server: while the backend is unavailable, answer a known MAC from its last answer if younger than this, never with netboot; 0 or negative: off")
	fs.IntVar(&o.cacheSize, "cache-size", cache.DefaultMaxEntries, "DHCP server: MAC addresses remembered for -stale-max-age (least recently used evicted)")
	fs.DurationVar(&o.answerReuse, "answer-reuse", dhcpserver.DefaultAnswerReuse, "DHCP server: the OFFER's answer serves the REQUEST and retransmissions that follow (one lookup per DORA); 0 or negative: off")
	fs.DurationVar(&o.negativeTTL, "negative-ttl", dhcpserver.DefaultNegativeTTL, "DHCP server: remember a not-found MAC this long without asking the backend; 0 or negative: off")
	fs.DurationVar(&o.minLookupInterval, "min-lookup-interval", dhcpserver.DefaultMinLookupInterval, "DHCP server: at most one lookup per MAC address in this interval (after -mac-lookup-burst; over it, the last answer younger than -answer-reuse); 0 or negative: no limit")
	fs.Float64Var(&o.notFoundRate, "not-found-rate", dhcpserver.DefaultNotFoundRate, "DHCP server: not-found budget (flood protection), refilled at this many per second: each not-found answer takes one; while it is empty, clients not answered recently are not looked up; 0 or negative: no limit")
	fs.IntVar(&o.notFoundBurst, "not-found-burst", dhcpserver.DefaultNotFoundBurst, "DHCP server: size of the not-found budget (see -not-found-rate)")
	fs.DurationVar(&o.knownTTL, "known-ttl", dhcpserver.DefaultKnownTTL, "DHCP server: how long an answered client counts as known (own queue, not limited by the not-found budget)")
	fs.IntVar(&o.maxConcurrent, "max-concurrent", dhcpserver.DefaultMaxConcurrent, "DHCP server: packets handled (and lookups running) at once")
	fs.IntVar(&o.maxClients, "max-clients", dhcpserver.DefaultMaxClients, "DHCP server: clients remembered for -answer-reuse, -negative-ttl, -min-lookup-interval and -known-ttl")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	n := 0
	for _, b := range []bool{o.demo, o.server, o.responder} {
		if b {
			n++
		}
	}
	if n > 1 {
		return nil, errors.New("choose one of -demo, -server and -responder")
	}
	if o.logFormat != "text" && o.logFormat != "json" {
		return nil, fmt.Errorf("-log-format %q: want text or json", o.logFormat)
	}
	if o.natsPassword == "" {
		o.natsPassword = os.Getenv("NATS_PASSWORD")
	}
	return o, nil
}

// usageError marks errors that exit with code 2.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "example:", err)
		return exitUsage
	}
	level := slog.LevelInfo
	if o.verbose {
		level = slog.LevelDebug
	} else if o.demo {
		level = slog.LevelWarn // keep the demo's table readable
	}
	hopts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(stderr, hopts)
	if o.logFormat == "json" {
		h = slog.NewJSONHandler(stderr, hopts)
	}
	log := slog.New(h)

	switch {
	case o.demo:
		err = runDemo(ctx, o, stdout, log)
	case o.server:
		err = runServer(ctx, o, log)
	case o.responder:
		err = runResponder(ctx, o, log)
	default:
		err = runDHCP(ctx, o, log)
	}
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue) || errors.Is(err, backend.ErrInvalidConfig):
		log.Error("bad configuration", "error", err)
		return exitUsage
	default:
		log.Error("failed", "error", err)
		return exitFailure
	}
}

// natsServerOptions builds the embedded server's options from -nats-addr
// and -nats-config.
func natsServerOptions(o *options) (*server.Options, error) {
	opts := &server.Options{}
	if o.natsConfig != "" {
		var err error
		if opts, err = server.ProcessConfigFile(o.natsConfig); err != nil {
			return nil, usageError{fmt.Errorf("-nats-config: %w", err)}
		}
	}
	if o.natsAddr != "" && (o.natsConfig == "" || opts.Port == 0) {
		ap, err := netip.ParseAddrPort(o.natsAddr)
		if err != nil {
			return nil, usageError{fmt.Errorf("-nats-addr: %w", err)}
		}
		opts.Host, opts.Port = ap.Addr().String(), int(ap.Port())
		if opts.Port == 0 {
			opts.Port = server.RANDOM_PORT
		}
	}
	opts.NoSigs = true
	return opts, nil
}

// openToNetwork reports whether a server with opts accepts clients from
// beyond this host without any authentication: it listens on a
// non-loopback address (or on all addresses) and has no users, nkeys,
// token, operator, auth callout or client certificates configured.
func openToNetwork(opts *server.Options) bool {
	if loopbackHost(opts.Host) {
		return false
	}
	authenticated := opts.Username != "" || opts.Authorization != "" || len(opts.Users) > 0 || len(opts.Nkeys) > 0 ||
		len(opts.TrustedOperators) > 0 || len(opts.TrustedKeys) > 0 || opts.AuthCallout != nil ||
		opts.TLSVerify || opts.CustomClientAuthentication != nil
	return !authenticated
}

// loopbackHost reports whether host names a loopback address only. The
// empty host, like 0.0.0.0 and ::, means every address.
func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil && a.IsLoopback()
}

// startNATS starts an embedded NATS server and waits until it is ready.
func startNATS(opts *server.Options, log *slog.Logger) (*server.Server, error) {
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, usageError{fmt.Errorf("nats server: %w", err)}
	}
	if log.Enabled(context.Background(), slog.LevelDebug) {
		s.SetLoggerV2(natsLogger{log}, true, false, false)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, errors.New("nats server: not ready after 10s (is the port in use?)")
	}
	return s, nil
}

func runServer(ctx context.Context, o *options, log *slog.Logger) error {
	opts, err := natsServerOptions(o)
	if err != nil {
		return err
	}
	s, err := startNATS(opts, log)
	if err != nil {
		return err
	}
	log.Info("nats server ready", "url", s.ClientURL())
	if openToNetwork(opts) {
		log.Warn("nats server: listening beyond loopback without authentication: anyone who can reach it can answer lookups and so decide what machines boot; "+
			"give each role a user with permissions (-nats-config, see the README's security section), and sign answers (responder.Config.SigningKey)",
			"host", opts.Host, "port", opts.Port)
	}
	<-ctx.Done()
	log.Info("nats server shutting down")
	s.Shutdown()
	s.WaitForShutdown()
	return nil
}

// connect opens a NATS connection with the flags' credentials and TLS. It
// keeps retrying while the server is away, so that the pieces may start in
// any order.
func connect(o *options, name string, log *slog.Logger) (*nats.Conn, error) {
	var opts []nats.Option
	if o.natsHealth {
		// Notice a frozen or stalled NATS server within ~2 s and fail over
		// (reconnect forever, with jitter); see natsbackend.ConnectionOptions.
		opts = natsbackend.ConnectionOptions()
	} else {
		opts = []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond)}
	}
	opts = append(opts,
		nats.Name(name),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "error", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted()) }),
	)
	if o.natsCreds != "" {
		opts = append(opts, nats.UserCredentials(o.natsCreds))
	}
	if o.natsNKey != "" {
		opt, err := nats.NkeyOptionFromSeed(o.natsNKey)
		if err != nil {
			return nil, usageError{fmt.Errorf("-nats-nkey: %w", err)}
		}
		opts = append(opts, opt)
	}
	if o.natsUser != "" {
		opts = append(opts, nats.UserInfo(o.natsUser, o.natsPassword))
	}
	if o.natsCA != "" {
		opts = append(opts, nats.RootCAs(o.natsCA))
	}
	if o.natsCert != "" || o.natsKey != "" {
		opts = append(opts, nats.ClientCert(o.natsCert, o.natsKey))
	}
	nc, err := nats.Connect(o.natsURL, opts...)
	if err != nil {
		return nil, fmt.Errorf("nats connect %s: %w", o.natsURL, err)
	}
	return nc, nil
}

func runResponder(ctx context.Context, o *options, log *slog.Logger) error {
	hosts, err := hostsfile.New(hostsfile.Config{Path: o.hosts, ReloadInterval: o.reloadInterval, Logger: log})
	if err != nil {
		return usageError{fmt.Errorf("hosts file: %w", err)}
	}
	nc, err := connect(o, "tinkerbell-example-responder", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	srv, err := responder.New(responder.Config{
		Conn:          nc,
		Backend:       hosts,
		Subject:       o.subject,
		SubjectPrefix: o.prefix,
		Metadata:      map[string]string{"hosts": o.hosts},
		Logger:        log,
	})
	if err != nil {
		return err
	}
	defer watchHosts(ctx, hosts, o.hosts, log)()

	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewResponderCollector(srv))
	h := &health{nc: nc}
	h.serving.Store(true) // New has subscribed
	obs, err := startObserver(o.httpAddr, o.pprof, reg, h, log)
	if err != nil {
		_ = srv.Close()
		return err
	}
	defer obs.stop()

	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	log.Info("responder ready", "subject", srv.Subject(), "hosts", hosts.Len(), "file", o.hosts)
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	h.serving.Store(false)
	log.Info("responder draining")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-served; !errors.Is(err, responder.ErrServerClosed) {
		return err
	}
	return nil
}

// dhcpConfig builds the DHCP server's configuration from the flags.
func dhcpConfig(o *options, b backend.Backend, log *slog.Logger) (dhcpserver.Config, error) {
	cfg := dhcpserver.Config{
		Backend:       b,
		Interface:     o.iface,
		LookupTimeout: o.lookupTimeout,
		Logger:        log,

		MACLookupBurst: o.macBurst,
	}
	if err := admission(o, &cfg); err != nil {
		return cfg, err
	}
	if o.udpAddr != "" {
		ap, err := netip.ParseAddrPort(o.udpAddr)
		if err != nil {
			return cfg, usageError{fmt.Errorf("-udp: %w", err)}
		}
		cfg.UDPAddr = ap
	}
	if o.iface == "" && o.udpAddr == "" {
		return cfg, usageError{errors.New("the DHCP server needs -iface (raw sockets) or -udp; or run -demo, -server or -responder")}
	}
	var err error
	if o.serverAddr != "" {
		if cfg.ServerAddr, err = netip.ParseAddr(o.serverAddr); err != nil {
			return cfg, usageError{fmt.Errorf("-server-addr: %w", err)}
		}
	} else if o.iface == "" { // with -iface, dhcpserver takes the interface's address
		return cfg, usageError{errors.New("-server-addr is required with -udp")}
	}
	if o.bootServer != "" {
		if cfg.Netboot.NextServer, err = netip.ParseAddr(o.bootServer); err != nil {
			return cfg, usageError{fmt.Errorf("-boot-server: %w", err)}
		}
	}
	for _, u := range []struct {
		flag string
		val  string
		dst  **url.URL
	}{{"-tftp-base", o.tftpBase, &cfg.Netboot.TFTPBaseURL}, {"-http-base", o.httpBase, &cfg.Netboot.HTTPBaseURL}} {
		if u.val == "" {
			continue
		}
		p, err := url.Parse(u.val)
		if err != nil || p.Scheme == "" || p.Host == "" {
			return cfg, usageError{fmt.Errorf("%s %q: want an absolute URL", u.flag, u.val)}
		}
		*u.dst = p
	}
	if o.scriptURL != "" {
		if cfg.Netboot.IPXEScriptURL, err = backend.ParseURL(o.scriptURL); err != nil {
			return cfg, usageError{fmt.Errorf("-ipxe-script-url %q: want an absolute http, https or tftp URL", o.scriptURL)}
		}
	}
	cfg.Netboot.UserClass = o.userClass
	cfg.Netboot.MACFormat = dhcpserver.MACFormat(o.macFormat)
	cfg.Proxy = o.proxy
	if o.syslogServer != "" {
		if cfg.SyslogServer, err = netip.ParseAddr(o.syslogServer); err != nil {
			return cfg, usageError{fmt.Errorf("-syslog-server: %w", err)}
		}
	}
	return cfg, nil
}

func runDHCP(ctx context.Context, o *options, log *slog.Logger) error {
	// Validate the flags before connecting anywhere.
	if _, err := dhcpConfig(o, backend.BackendFunc(nil), log); err != nil {
		return err
	}
	if o.inProcess {
		return runDHCPInProcess(ctx, o, log)
	}
	nc, err := connect(o, "tinkerbell-example-dhcp", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	requester, err := natsbackend.New(requesterConfig(o, nc, log))
	if err != nil {
		return err
	}
	lookups, err := newCache(o, requester, log)
	if err != nil {
		return err
	}
	cfg, _ := dhcpConfig(o, lookups, log)
	reg := prometheus.NewRegistry()
	if o.events {
		pub, err := events.New(events.Config{Conn: nc, SubjectPrefix: o.prefix, Logger: log})
		if err != nil {
			return err
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = pub.Shutdown(sctx)
		}()
		cfg.OnDecision = pub.OnDecision
		reg.MustRegister(metrics.NewEventsCollector(pub))
	}
	srv, err := dhcpserver.New(cfg)
	if err != nil {
		return err
	}
	reg.MustRegister(metrics.NewDHCPServerCollector(srv), metrics.NewRequesterCollector(requester), metrics.NewCacheCollector(lookups))
	log.Info("dhcp server starting", "iface", o.iface, "udp", o.udpAddr, "subject", requester.Subject())
	return serveDHCP(ctx, o, srv, reg, &health{nc: nc}, log)
}

// watchHosts reloads hosts when its file changes, and at once on SIGHUP,
// until the returned function is called (which waits for the watchers).
func watchHosts(ctx context.Context, hosts *hostsfile.Backend, path string, log *slog.Logger) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	wctx, cancel := context.WithCancel(ctx)
	var watchers sync.WaitGroup
	watchers.Go(func() { _ = hosts.Watch(wctx) })
	watchers.Go(func() {
		for {
			select {
			case <-wctx.Done():
				return
			case <-hup:
				if err := hosts.Reload(); err != nil {
					log.Error("hosts file reload failed, keeping the previous reservations", "path", path, "error", err)
				}
			}
		}
	})
	return func() {
		signal.Stop(hup)
		cancel()
		watchers.Wait()
	}
}

// runDHCPInProcess is the DHCP server with the hosts file linked in: no
// NATS, so no requester, no last-known-good cache (the file is always
// there) and no decision events; the admission control stays.
func runDHCPInProcess(ctx context.Context, o *options, log *slog.Logger) error {
	if o.events {
		return usageError{errors.New("-events publishes on NATS: not with -in-process")}
	}
	hosts, err := hostsfile.New(hostsfile.Config{Path: o.hosts, ReloadInterval: o.reloadInterval, Logger: log})
	if err != nil {
		return usageError{fmt.Errorf("hosts file: %w", err)}
	}
	cfg, _ := dhcpConfig(o, hosts, log)
	srv, err := dhcpserver.New(cfg)
	if err != nil {
		return err
	}
	defer watchHosts(ctx, hosts, o.hosts, log)()
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewDHCPServerCollector(srv))
	log.Info("dhcp server starting", "iface", o.iface, "udp", o.udpAddr, "hosts", hosts.Len(), "file", o.hosts)
	return serveDHCP(ctx, o, srv, reg, &health{}, log)
}

// serveDHCP runs srv until ctx ends, with the observer on -http-addr, and
// shuts it down.
func serveDHCP(ctx context.Context, o *options, srv *dhcpserver.Server, reg *prometheus.Registry, h *health, log *slog.Logger) error {
	obs, err := startObserver(o.httpAddr, o.pprof, reg, h, log)
	if err != nil {
		return err
	}
	defer obs.stop()

	served := make(chan error, 1)
	h.serving.Store(true)
	go func() { served <- srv.ListenAndServe() }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	h.serving.Store(false)
	log.Info("dhcp server shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-served; !errors.Is(err, dhcpserver.ErrServerClosed) {
		return err
	}
	return nil
}

// natsLogger sends the embedded server's logs to slog.
type natsLogger struct{ log *slog.Logger }

func (l natsLogger) Noticef(format string, v ...any) {
	l.log.Info("nats: " + fmt.Sprintf(format, v...))
}
func (l natsLogger) Warnf(format string, v ...any) { l.log.Warn("nats: " + fmt.Sprintf(format, v...)) }
func (l natsLogger) Fatalf(format string, v ...any) {
	l.log.Error("nats: " + fmt.Sprintf(format, v...))
}
func (l natsLogger) Errorf(format string, v ...any) {
	l.log.Error("nats: " + fmt.Sprintf(format, v...))
}
func (l natsLogger) Debugf(format string, v ...any) {
	l.log.Debug("nats: " + fmt.Sprintf(format, v...))
}
func (l natsLogger) Tracef(format string, v ...any) {
	l.log.Debug("nats: " + strings.TrimSpace(fmt.Sprintf(format, v...)))
}
