package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/internal/wire"
)

// errHelp is returned for -h: the usage is printed, nothing else.
var errHelp = flag.ErrHelp

// config holds the parsed flags.
type config struct {
	natsURL, natsCreds, natsNKey, natsCA string
	subject                              string

	macs     []net.HardwareAddr         // known MAC addresses, -mac and those of -want
	want     map[string]backend.Message // expected answers by MAC (text form)
	unknown  net.HardwareAddr
	errorMAC map[int]net.HardwareAddr // -error-mac code=MAC

	signer   string // nkeys public key replies must be signed with
	timeout  time.Duration
	budget   time.Duration
	overrun  time.Duration
	discover time.Duration
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	c := &config{want: map[string]backend.Message{}, errorMAC: map[int]net.HardwareAddr{}}
	fs := flag.NewFlagSet("backendcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: backendcheck -nats-url URL [-subject S] [-mac MAC]... [-want FILE] [flags]\n\n"+
			"Checks a live responder against the tinkerbell/backend wire protocol; one line per check.\n\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&c.natsURL, "nats-url", nats.DefaultURL, "NATS server `URL`")
	fs.StringVar(&c.natsCreds, "nats-creds", "", "NATS credentials `file` (JWT and nkey)")
	fs.StringVar(&c.natsNKey, "nats-nkey", "", "NATS nkey seed `file`")
	fs.StringVar(&c.natsCA, "nats-ca", "", "CA certificate `file` for TLS to NATS")
	fs.StringVar(&c.subject, "subject", backend.DefaultSubject, "`subject` the responder serves")
	prefix := fs.String("subject-prefix", "", "tenant `prefix` of the subject")
	fs.Func("mac", "a `MAC` address the responder has a reservation for (repeatable)", func(s string) error {
		mac, err := net.ParseMAC(s)
		if err != nil {
			return err
		}
		c.macs = append(c.macs, mac)
		return nil
	})
	wantFile := fs.String("want", "", "JSON `file` mapping MAC addresses to the expected answers")
	unknown := fs.String("unknown-mac", "00:00:5e:00:53:01", "a `MAC` address the responder has no reservation for")
	fs.Func("error-mac", "`code=MAC`: the responder answers MAC with this error code, e.g. 503=52:54:00:00:00:03 (repeatable)", func(s string) error {
		code, m, ok := strings.Cut(s, "=")
		n, err := strconv.Atoi(code)
		if !ok || err != nil || n <= 0 {
			return fmt.Errorf("want code=MAC, got %q", s)
		}
		mac, err := net.ParseMAC(m)
		if err != nil {
			return err
		}
		c.errorMAC[n] = mac
		return nil
	})
	fs.StringVar(&c.signer, "signer", "", "nkeys public `key` (U...) every reply must be signed with")
	fs.DurationVar(&c.timeout, "timeout", 2*time.Second, "time budget of each lookup")
	fs.DurationVar(&c.budget, "budget", 500*time.Millisecond, "the short time budget of the budget check")
	fs.DurationVar(&c.overrun, "overrun", 250*time.Millisecond, "how late after the short budget a reply may come, for the trip")
	fs.DurationVar(&c.discover, "discovery-wait", 500*time.Millisecond, "how long to collect $SRV discovery replies")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	c.subject = backend.Subject(*prefix, c.subject)
	if !wire.ValidSubject(c.subject) {
		return nil, fmt.Errorf("-subject: invalid subject %q", c.subject)
	}
	var err error
	if c.unknown, err = net.ParseMAC(*unknown); err != nil {
		return nil, fmt.Errorf("-unknown-mac: %w", err)
	}
	if *wantFile != "" {
		if err := c.readWant(*wantFile); err != nil {
			return nil, fmt.Errorf("-want: %w", err)
		}
	}
	if c.signer != "" && !nkeys.IsValidPublicUserKey(c.signer) {
		return nil, fmt.Errorf("-signer: %q is not an nkeys public user key", c.signer)
	}
	if c.timeout <= 0 || c.budget <= 0 || c.overrun < 0 || c.discover < 0 {
		return nil, errors.New("-timeout and -budget must be positive, -overrun and -discovery-wait not negative")
	}
	for _, m := range c.macs {
		if m.String() == c.unknown.String() {
			return nil, fmt.Errorf("%s is both -mac and -unknown-mac", m)
		}
	}
	return c, nil
}

// readWant reads the -want file.
func (c *config) readWant(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return err
	}
	if h, ok := top["hosts"]; ok && len(top) == 1 {
		top = nil
		if err := json.Unmarshal(h, &top); err != nil {
			return fmt.Errorf("hosts: %w", err)
		}
	}
	keys := make([]string, 0, len(top))
	for k := range top {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		mac, err := net.ParseMAC(k)
		if err != nil {
			return err
		}
		var m backend.Message
		if err := m.UnmarshalJSON(top[k]); err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		if len(m.MACAddress) == 0 {
			m.MACAddress = mac
		}
		if _, dup := c.want[mac.String()]; !dup {
			c.want[mac.String()] = m
			if !slices.ContainsFunc(c.macs, func(x net.HardwareAddr) bool { return x.String() == mac.String() }) {
				c.macs = append(c.macs, mac)
			}
		}
	}
	return nil
}

func (c *config) connect() (*nats.Conn, error) {
	opts := []nats.Option{nats.Name("backendcheck")}
	if c.natsCreds != "" {
		opts = append(opts, nats.UserCredentials(c.natsCreds))
	}
	if c.natsNKey != "" {
		opt, err := nats.NkeyOptionFromSeed(c.natsNKey)
		if err != nil {
			return nil, fmt.Errorf("-nats-nkey: %w", err)
		}
		opts = append(opts, opt)
	}
	if c.natsCA != "" {
		opts = append(opts, nats.RootCAs(c.natsCA))
	}
	nc, err := nats.Connect(c.natsURL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", c.natsURL, err)
	}
	return nc, nil
}
