package hostsfile

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tinkerbell/backend"
)

// MaxFileSize is the largest hosts file read; bytes beyond it are ignored
// (and then the file fails to parse).
const MaxFileSize = 16 << 20

// DefaultReloadInterval is how often [Backend.Watch] checks the file when
// [Config.ReloadInterval] is zero.
const DefaultReloadInterval = 2 * time.Second

// hostsTable is one parsed hosts file, keyed by the canonical MAC text.
type hostsTable struct {
	hosts   map[string]backend.Message
	byIP    map[netip.Addr]string // IPAddress → MAC key; "" when several hosts share the address
	modTime time.Time
	size    int64
}

// newTable indexes hosts by IP address too.
func newTable(hosts map[string]backend.Message) *hostsTable {
	t := &hostsTable{hosts: hosts, byIP: make(map[netip.Addr]string, len(hosts))}
	for mac, m := range hosts {
		if _, dup := t.byIP[m.IPAddress]; dup {
			t.byIP[m.IPAddress] = ""
		} else {
			t.byIP[m.IPAddress] = mac
		}
	}
	return t
}

// Error reports a problem in a hosts file, with its line. Its text reads
// "path:line: host MAC: problem", like a compiler's.
type Error struct {
	Path string // the file
	Line int    // 1-based; 0 when unknown
	MAC  string // the host's MAC address in canonical text; "" when the problem is not in one host
	Err  error  // the problem; a *backend.FieldError for a bad reservation field
}

// Error implements error.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Path)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.MAC != "" {
		fmt.Fprintf(&b, ": host %s", e.MAC)
	}
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	return b.String()
}

// Unwrap returns e.Err.
func (e *Error) Unwrap() error { return e.Err }

// loadHosts reads and parses the hosts file at path.
func loadHosts(path string) (*hostsTable, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize))
	if err != nil {
		return nil, err
	}
	hosts, err := parseHosts(path, data)
	if err != nil {
		return nil, err
	}
	t := newTable(hosts)
	t.modTime, t.size = st.ModTime(), st.Size()
	return t, nil
}

// parseHosts parses a hosts file; the format follows the extension of
// path (.json is JSON, anything else YAML).
func parseHosts(path string, data []byte) (map[string]backend.Message, error) {
	if strings.EqualFold(filepath.Ext(path), ".json") {
		return parseHostsJSON(path, data)
	}
	return parseHostsYAML(path, data)
}

func parseHostsYAML(path string, data []byte) (map[string]backend.Message, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, &Error{Path: path, Err: err} // yaml.v3 errors name the line
	}
	if len(doc.Content) == 0 {
		return nil, &Error{Path: path, Err: errors.New(`empty file: want a "hosts" mapping`)}
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, &Error{Path: path, Line: root.Line, Err: errors.New(`want a mapping with a "hosts" key`)}
	}
	var hostsNode *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		if k := root.Content[i]; k.Value == "hosts" {
			hostsNode = root.Content[i+1]
		} else {
			return nil, &Error{Path: path, Line: k.Line, Err: fmt.Errorf("unknown key %q (want only \"hosts\")", k.Value)}
		}
	}
	if hostsNode == nil || (hostsNode.Kind != yaml.MappingNode && hostsNode.Tag != "!!null") {
		return nil, &Error{Path: path, Line: root.Line, Err: errors.New(`"hosts" must be a mapping from MAC address to reservation`)}
	}
	out := make(map[string]backend.Message, len(hostsNode.Content)/2)
	for i := 0; i+1 < len(hostsNode.Content); i += 2 {
		k, v := hostsNode.Content[i], hostsNode.Content[i+1]
		mac, err := net.ParseMAC(k.Value)
		if err != nil {
			return nil, &Error{Path: path, Line: k.Line, Err: fmt.Errorf("%q is not a MAC address", k.Value)}
		}
		if v.Kind != yaml.MappingNode {
			return nil, &Error{Path: path, Line: v.Line, MAC: mac.String(), Err: errors.New("want a mapping of reservation fields")}
		}
		var fields map[string]any
		if err := v.Decode(&fields); err != nil {
			return nil, &Error{Path: path, Line: v.Line, MAC: mac.String(), Err: err}
		}
		raw, err := json.Marshal(fields)
		if err != nil {
			return nil, &Error{Path: path, Line: v.Line, MAC: mac.String(), Err: err}
		}
		m, err := decodeHost(mac, raw)
		if err != nil {
			line := v.Line
			var fe *backend.FieldError
			if errors.As(err, &fe) {
				line = yamlFieldLine(v, fe.Field, line)
			}
			return nil, &Error{Path: path, Line: line, MAC: mac.String(), Err: err}
		}
		if _, dup := out[mac.String()]; dup {
			return nil, &Error{Path: path, Line: k.Line, MAC: mac.String(), Err: errors.New("listed twice")}
		}
		out[mac.String()] = m
	}
	return out, nil
}

// yamlFieldLine returns the line of the key field (possibly nested as
// "DHCP.IPAddress" or "Error.Code") in mapping n, or def.
func yamlFieldLine(n *yaml.Node, field string, def int) int {
	name := field[strings.LastIndexByte(field, '.')+1:]
	var walk func(*yaml.Node) int
	walk = func(n *yaml.Node) int {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if strings.EqualFold(n.Content[i].Value, name) {
				return n.Content[i].Line
			}
			if n.Content[i+1].Kind == yaml.MappingNode {
				if l := walk(n.Content[i+1]); l > 0 {
					return l
				}
			}
		}
		return 0
	}
	if l := walk(n); l > 0 {
		return l
	}
	return def
}

func parseHostsJSON(path string, data []byte) (map[string]backend.Message, error) {
	lineAt := func(off int64) int { return 1 + bytes.Count(data[:min(int(off), len(data))], []byte("\n")) }
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, &Error{Path: path, Line: lineAt(se.Offset), Err: err}
		}
		return nil, &Error{Path: path, Err: err}
	}
	for k := range top {
		if k != "hosts" {
			return nil, &Error{Path: path, Line: lineAt(int64(bytes.Index(data, []byte(`"`+k+`"`)))), Err: fmt.Errorf("unknown key %q (want only \"hosts\")", k)}
		}
	}
	raw, ok := top["hosts"]
	if !ok {
		return nil, &Error{Path: path, Err: errors.New(`missing "hosts" object`)}
	}
	// Walk the hosts object with a token decoder to know each host's offset.
	dec := json.NewDecoder(bytes.NewReader(raw))
	base := int64(bytes.Index(data, raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, &Error{Path: path, Line: lineAt(base), Err: errors.New(`"hosts" must be an object from MAC address to reservation`)}
	}
	out := map[string]backend.Message{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, &Error{Path: path, Line: lineAt(base + dec.InputOffset()), Err: err}
		}
		key, _ := tok.(string)
		keyLine := lineAt(base + dec.InputOffset())
		mac, err := net.ParseMAC(key)
		if err != nil {
			return nil, &Error{Path: path, Line: keyLine, Err: fmt.Errorf("%q is not a MAC address", key)}
		}
		var host json.RawMessage
		if err := dec.Decode(&host); err != nil {
			return nil, &Error{Path: path, Line: keyLine, MAC: mac.String(), Err: err}
		}
		start := base + dec.InputOffset() - int64(len(host))
		m, err := decodeHost(mac, host)
		if err != nil {
			line := lineAt(start)
			var fe *backend.FieldError
			if errors.As(err, &fe) {
				name := fe.Field[strings.LastIndexByte(fe.Field, '.')+1:]
				if i := bytes.Index(host, []byte(`"`+name+`"`)); i >= 0 {
					line = lineAt(start + int64(i))
				}
			}
			return nil, &Error{Path: path, Line: line, MAC: mac.String(), Err: err}
		}
		if _, dup := out[mac.String()]; dup {
			return nil, &Error{Path: path, Line: keyLine, MAC: mac.String(), Err: errors.New("listed twice")}
		}
		out[mac.String()] = m
	}
	return out, nil
}

// decodeHost decodes one reservation with the wire decoder, so the hosts
// file accepts and validates exactly what a responder may send.
func decodeHost(mac net.HardwareAddr, raw []byte) (backend.Message, error) {
	var m backend.Message
	if err := m.UnmarshalJSON(raw); err != nil {
		return m, err
	}
	if m.MACAddress == nil {
		m.MACAddress = mac
	} else if !bytes.Equal(m.MACAddress, mac) {
		return m, &backend.FieldError{Field: "MACAddress", Value: m.MACAddress.String(), Err: errors.New("differs from the host's key")}
	}
	if !m.IPAddress.IsValid() {
		return m, &backend.FieldError{Field: "IPAddress", Err: backend.ErrMissing}
	}
	return m, nil
}

// Config configures a [Backend]. Only Path is required.
type Config struct {
	// Path is the hosts file: JSON when its name ends in ".json" (any
	// case), YAML otherwise. Required.
	Path string

	// ReloadInterval is how often [Backend.Watch] checks the file's size
	// and modification time. Zero means [DefaultReloadInterval]; negative
	// is invalid.
	ReloadInterval time.Duration

	// Logger receives reloads and reload failures. Nil discards.
	Logger *slog.Logger
}

// Backend is a [backend.Backend] that serves the reservations of a hosts
// file and reloads it on request ([Backend.Reload]) or when it changes
// ([Backend.Watch]). A reload swaps the whole table at once, so lookups
// never see a half-read file and none is dropped; a malformed file keeps
// the previous table in service. Its methods may be called concurrently.
type Backend struct {
	path     string
	interval time.Duration
	log      *slog.Logger
	cur      atomic.Pointer[hostsTable]
}

var _ backend.Backend = (*Backend)(nil)

// New validates cfg and loads the file. A malformed file is an [*Error]
// naming the line; a missing or unreadable one is the [os] error; an
// invalid cfg wraps [backend.ErrInvalidConfig].
func New(cfg Config) (*Backend, error) {
	if cfg.Path == "" {
		return nil, fmt.Errorf("%w: hostsfile: Path is required", backend.ErrInvalidConfig)
	}
	if cfg.ReloadInterval < 0 {
		return nil, fmt.Errorf("%w: hostsfile: negative ReloadInterval %v", backend.ErrInvalidConfig, cfg.ReloadInterval)
	}
	if cfg.ReloadInterval == 0 {
		cfg.ReloadInterval = DefaultReloadInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	t, err := loadHosts(cfg.Path)
	if err != nil {
		return nil, err
	}
	b := &Backend{path: cfg.Path, interval: cfg.ReloadInterval, log: cfg.Logger}
	b.cur.Store(t)
	return b, nil
}

// Lookup implements [backend.Backend]: the reservation of req.MACAddress,
// or in a lookup by IP address the host whose IPAddress is req.IPAddress;
// otherwise an error wrapping [backend.ErrNotFound]. An IP address that
// several hosts of the file share names no one machine: a lookup by it
// fails with an error that is not ErrNotFound (a 500 on the wire). The
// caller owns the returned values (slices are copies).
func (b *Backend) Lookup(_ context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
	t := b.cur.Load()
	key := req.MACAddress.String()
	if req.ByIP() {
		k, ok := t.byIP[req.IPAddress]
		switch {
		case !ok:
			return backend.DHCP{}, backend.Netboot{}, fmt.Errorf("%w: %s", backend.ErrNotFound, req.IPAddress)
		case k == "":
			return backend.DHCP{}, backend.Netboot{}, fmt.Errorf("hostsfile: %s is the IPAddress of several hosts", req.IPAddress)
		}
		key = k
	}
	m, ok := t.hosts[key]
	if !ok {
		return backend.DHCP{}, backend.Netboot{}, fmt.Errorf("%w: %s", backend.ErrNotFound, req.MACAddress)
	}
	d := m.DHCP
	d.MACAddress = slices.Clone(d.MACAddress)
	d.NameServers = slices.Clone(d.NameServers)
	d.NTPServers = slices.Clone(d.NTPServers)
	d.DomainSearch = slices.Clone(d.DomainSearch)
	d.ClasslessStaticRoutes = slices.Clone(d.ClasslessStaticRoutes)
	n := m.Netboot
	n.OSIE.KernelParams = slices.Clone(n.OSIE.KernelParams)
	return d, n, nil
}

// Len returns the number of hosts in the table in service.
func (b *Backend) Len() int { return len(b.cur.Load().hosts) }

// MACs returns the MAC addresses of the table in service, sorted by their
// text.
func (b *Backend) MACs() []net.HardwareAddr {
	t := b.cur.Load()
	macs := make([]net.HardwareAddr, 0, len(t.hosts))
	for k := range t.hosts {
		mac, _ := net.ParseMAC(k) // keys are canonical MAC text
		macs = append(macs, mac)
	}
	slices.SortFunc(macs, func(a, b net.HardwareAddr) int { return strings.Compare(a.String(), b.String()) })
	return macs
}

// Reload reads the file again and puts it in service. On error (an
// [*Error] or the [os] error) the previous table stays in service.
func (b *Backend) Reload() error {
	t, err := loadHosts(b.path)
	if err != nil {
		return err
	}
	b.cur.Store(t)
	b.log.Info("hosts file reloaded", "path", b.path, "hosts", len(t.hosts))
	return nil
}

// changed reports whether the file differs (size or time) from the loaded
// table.
func (b *Backend) changed() (bool, time.Time) {
	st, err := os.Stat(b.path)
	if err != nil {
		return false, time.Time{}
	}
	t := b.cur.Load()
	return !st.ModTime().Equal(t.modTime) || st.Size() != t.size, st.ModTime()
}

// Watch reloads the file whenever its size or modification time changes
// (checked every [Config.ReloadInterval]) until ctx is done, and then
// returns ctx's error. A file that fails to load is logged once per
// modification time, and the previous table stays in service. Run at most
// one Watch per Backend; call [Backend.Reload] for an immediate reload
// (on SIGHUP, say).
func (b *Backend) Watch(ctx context.Context) error {
	tick := time.NewTicker(b.interval)
	defer tick.Stop()
	var failed time.Time // mtime of a file that failed to load, to log once
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		changed, mtime := b.changed()
		if !changed || (!failed.IsZero() && mtime.Equal(failed)) {
			continue
		}
		if err := b.Reload(); err != nil {
			b.log.Error("hosts file reload failed, keeping the previous reservations", "path", b.path, "error", err)
			failed = mtime
		}
	}
}
