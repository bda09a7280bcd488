package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tinkerbell/backend"
)

// The hosts file maps MAC addresses to reservations, in YAML (.yaml, .yml)
// or JSON (.json):
//
//	hosts:
//	  "52:54:00:66:ea:9a":
//	    IPAddress: 198.18.0.10
//	    SubnetMask: 255.255.255.0
//	    ...
//
// Each host holds the fields of a backend.Message in its wire form (the
// DHCP and Netboot fields, flat); see testdata/hosts.yaml.

// hostsTable is one parsed hosts file, keyed by the canonical MAC text.
type hostsTable struct {
	hosts   map[string]backend.Message
	modTime time.Time
	size    int64
}

// hostsError reports a problem in a hosts file, with its line.
type hostsError struct {
	Path string
	Line int // 1-based; 0 when unknown
	MAC  string
	Err  error
}

func (e *hostsError) Error() string {
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

func (e *hostsError) Unwrap() error { return e.Err }

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
	data, err := io.ReadAll(io.LimitReader(f, 16<<20))
	if err != nil {
		return nil, err
	}
	hosts, err := parseHosts(path, data)
	if err != nil {
		return nil, err
	}
	return &hostsTable{hosts: hosts, modTime: st.ModTime(), size: st.Size()}, nil
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
		return nil, &hostsError{Path: path, Err: err} // yaml.v3 errors name the line
	}
	if len(doc.Content) == 0 {
		return nil, &hostsError{Path: path, Err: errors.New(`empty file: want a "hosts" mapping`)}
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, &hostsError{Path: path, Line: root.Line, Err: errors.New(`want a mapping with a "hosts" key`)}
	}
	var hostsNode *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		if k := root.Content[i]; k.Value == "hosts" {
			hostsNode = root.Content[i+1]
		} else {
			return nil, &hostsError{Path: path, Line: k.Line, Err: fmt.Errorf("unknown key %q (want only \"hosts\")", k.Value)}
		}
	}
	if hostsNode == nil || (hostsNode.Kind != yaml.MappingNode && hostsNode.Tag != "!!null") {
		return nil, &hostsError{Path: path, Line: root.Line, Err: errors.New(`"hosts" must be a mapping from MAC address to reservation`)}
	}
	out := make(map[string]backend.Message, len(hostsNode.Content)/2)
	for i := 0; i+1 < len(hostsNode.Content); i += 2 {
		k, v := hostsNode.Content[i], hostsNode.Content[i+1]
		mac, err := net.ParseMAC(k.Value)
		if err != nil {
			return nil, &hostsError{Path: path, Line: k.Line, Err: fmt.Errorf("%q is not a MAC address", k.Value)}
		}
		if v.Kind != yaml.MappingNode {
			return nil, &hostsError{Path: path, Line: v.Line, MAC: mac.String(), Err: errors.New("want a mapping of reservation fields")}
		}
		var fields map[string]any
		if err := v.Decode(&fields); err != nil {
			return nil, &hostsError{Path: path, Line: v.Line, MAC: mac.String(), Err: err}
		}
		raw, err := json.Marshal(fields)
		if err != nil {
			return nil, &hostsError{Path: path, Line: v.Line, MAC: mac.String(), Err: err}
		}
		m, err := decodeHost(mac, raw)
		if err != nil {
			line := v.Line
			var fe *backend.FieldError
			if errors.As(err, &fe) {
				line = yamlFieldLine(v, fe.Field, line)
			}
			return nil, &hostsError{Path: path, Line: line, MAC: mac.String(), Err: err}
		}
		if _, dup := out[mac.String()]; dup {
			return nil, &hostsError{Path: path, Line: k.Line, MAC: mac.String(), Err: errors.New("listed twice")}
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
			return nil, &hostsError{Path: path, Line: lineAt(se.Offset), Err: err}
		}
		return nil, &hostsError{Path: path, Err: err}
	}
	for k := range top {
		if k != "hosts" {
			return nil, &hostsError{Path: path, Line: lineAt(int64(bytes.Index(data, []byte(`"`+k+`"`)))), Err: fmt.Errorf("unknown key %q (want only \"hosts\")", k)}
		}
	}
	raw, ok := top["hosts"]
	if !ok {
		return nil, &hostsError{Path: path, Err: errors.New(`missing "hosts" object`)}
	}
	// Walk the hosts object with a token decoder to know each host's offset.
	dec := json.NewDecoder(bytes.NewReader(raw))
	base := int64(bytes.Index(data, raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, &hostsError{Path: path, Line: lineAt(base), Err: errors.New(`"hosts" must be an object from MAC address to reservation`)}
	}
	out := map[string]backend.Message{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, &hostsError{Path: path, Line: lineAt(base + dec.InputOffset()), Err: err}
		}
		key, _ := tok.(string)
		keyLine := lineAt(base + dec.InputOffset())
		mac, err := net.ParseMAC(key)
		if err != nil {
			return nil, &hostsError{Path: path, Line: keyLine, Err: fmt.Errorf("%q is not a MAC address", key)}
		}
		var host json.RawMessage
		if err := dec.Decode(&host); err != nil {
			return nil, &hostsError{Path: path, Line: keyLine, MAC: mac.String(), Err: err}
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
			return nil, &hostsError{Path: path, Line: line, MAC: mac.String(), Err: err}
		}
		if _, dup := out[mac.String()]; dup {
			return nil, &hostsError{Path: path, Line: keyLine, MAC: mac.String(), Err: errors.New("listed twice")}
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

// hostsBackend is a backend.Backend that serves the reservations of a
// hosts file and reloads it when it changes. A reload swaps the whole table
// at once, so lookups never see a half-read file and none is dropped; a
// malformed reload keeps the old table.
type hostsBackend struct {
	path string
	log  *slog.Logger
	cur  atomic.Pointer[hostsTable]
}

var _ backend.Backend = (*hostsBackend)(nil)

func newHostsBackend(path string, log *slog.Logger) (*hostsBackend, error) {
	t, err := loadHosts(path)
	if err != nil {
		return nil, err
	}
	h := &hostsBackend{path: path, log: log}
	h.cur.Store(t)
	return h, nil
}

// Lookup implements backend.Backend.
func (h *hostsBackend) Lookup(_ context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
	m, ok := h.cur.Load().hosts[req.MACAddress.String()]
	if !ok {
		return backend.DHCP{}, backend.Netboot{}, fmt.Errorf("%w: %s", backend.ErrNotFound, req.MACAddress)
	}
	// The caller owns what we return: hand out copies of the shared slices.
	d := m.DHCP
	d.MACAddress = slices.Clone(d.MACAddress)
	d.NameServers = slices.Clone(d.NameServers)
	d.NTPServers = slices.Clone(d.NTPServers)
	d.DomainSearch = slices.Clone(d.DomainSearch)
	n := m.Netboot
	if n.IPXEScriptURL != nil {
		u := *n.IPXEScriptURL
		n.IPXEScriptURL = &u
	}
	return d, n, nil
}

// len returns the number of hosts loaded.
func (h *hostsBackend) len() int { return len(h.cur.Load().hosts) }

// reload reads the file again; on error the old table stays.
func (h *hostsBackend) reload() error {
	t, err := loadHosts(h.path)
	if err != nil {
		h.log.Error("hosts file reload failed, keeping the previous reservations", "error", err)
		return err
	}
	h.cur.Store(t)
	h.log.Info("hosts file reloaded", "path", h.path, "hosts", len(t.hosts))
	return nil
}

// changed reports whether the file differs (size or time) from the loaded
// table.
func (h *hostsBackend) changed() bool {
	st, err := os.Stat(h.path)
	if err != nil {
		return false
	}
	t := h.cur.Load()
	return !st.ModTime().Equal(t.modTime) || st.Size() != t.size
}

// watch reloads the file on a signal from hup and when its size or
// modification time changes (checked every interval), until ctx ends.
func (h *hostsBackend) watch(ctx context.Context, interval time.Duration, hup <-chan os.Signal) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var failed time.Time // mtime of a file that failed to load, to log once
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			_ = h.reload()
		case <-tick.C:
			if !h.changed() {
				continue
			}
			st, err := os.Stat(h.path)
			if err == nil && st.ModTime().Equal(failed) {
				continue
			}
			if h.reload() != nil && err == nil {
				failed = st.ModTime()
			}
		}
	}
}
