package main

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tinkerbell/backend"
)

func TestExampleHostsFileLoads(t *testing.T) {
	h, err := newHostsBackend(filepath.Join("testdata", "hosts.yaml"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if h.len() != 3 {
		t.Fatalf("loaded %d hosts, want 3", h.len())
	}
	mac, _ := net.ParseMAC("52:54:00:66:ea:9a")
	d, n, err := h.Lookup(t.Context(), backend.DHCPRequest{MACAddress: mac})
	if err != nil {
		t.Fatal(err)
	}
	if d.IPAddress.String() != "198.18.0.10" || d.SubnetMask.Bits() != 24 || d.Hostname != "node-1" || !n.AllowNetboot ||
		n.IPXEScriptURL.String() != "http://198.18.0.1:8080/auto.ipxe" || d.MACAddress.String() != mac.String() {
		t.Errorf("lookup = %+v %+v", d, n)
	}
	// The caller owns the result: changing it does not change the table.
	d.NameServers[0] = d.NameServers[1]
	d2, _, _ := h.Lookup(t.Context(), backend.DHCPRequest{MACAddress: mac})
	if d2.NameServers[0].String() != "198.18.0.2" {
		t.Error("a caller's change leaked into the table")
	}
	unknown, _ := net.ParseMAC("52:54:00:00:00:01")
	if _, _, err := h.Lookup(t.Context(), backend.DHCPRequest{MACAddress: unknown}); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("unknown MAC: error = %v, want ErrNotFound", err)
	}
}

func TestHostsFileErrorsNameTheLine(t *testing.T) {
	tests := []struct {
		name, file, body string
		line             int
		want             string
	}{
		{"yaml syntax", "h.yaml", "hosts:\n  a: [\n", 0, "yaml"},
		{"yaml bad MAC key", "h.yaml", "hosts:\n  \"nope\":\n    IPAddress: 198.18.0.1\n", 2, `"nope" is not a MAC address`},
		{"yaml bad field", "h.yaml", "hosts:\n  \"52:54:00:66:ea:9a\":\n    IPAddress: 198.18.0.1\n    SubnetMask: 255.0.255.0\n", 4, `"SubnetMask"`},
		{"yaml missing address", "h.yaml", "hosts:\n  \"52:54:00:66:ea:9a\":\n    Hostname: x\n", 3, `"IPAddress"`},
		{"yaml unknown top key", "h.yaml", "hots:\n  x: 1\n", 1, `unknown key "hots"`},
		{"yaml duplicate", "h.yaml", "hosts:\n  \"52:54:00:66:ea:9a\":\n    IPAddress: 198.18.0.1\n  \"52-54-00-66-EA-9A\":\n    IPAddress: 198.18.0.2\n", 4, "listed twice"},
		{"json syntax", "h.json", "{\"hosts\": {\n\"52:54:00:66:ea:9a\": {\"IPAddress\": }}}", 2, "invalid character"},
		{"json bad field", "h.json", "{\"hosts\": {\n  \"52:54:00:66:ea:9a\": {\n    \"IPAddress\": \"198.18.0.1\",\n    \"NameServers\": [\"::1\"]\n  }\n}}", 4, `"NameServers"`},
		{"json bad MAC key", "h.json", "{\"hosts\": {\n  \"zz\": {}\n}}", 2, `"zz" is not a MAC address`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), tt.file)
			if err := os.WriteFile(path, []byte(tt.body), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := loadHosts(path)
			var he *hostsError
			if !errors.As(err, &he) {
				t.Fatalf("error = %v (%T), want *hostsError", err, err)
			}
			if tt.line != 0 && he.Line != tt.line {
				t.Errorf("line = %d, want %d (%v)", he.Line, tt.line, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}

func TestHostsJSONEquivalent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hosts.json")
	body := `{"hosts": {"52:54:00:66:ea:9a": {"IPAddress": "198.18.0.10", "SubnetMask": "255.255.255.0", "AllowNetboot": true}}}`
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	tab, err := loadHosts(path)
	if err != nil {
		t.Fatal(err)
	}
	m := tab.hosts["52:54:00:66:ea:9a"]
	if m.IPAddress.String() != "198.18.0.10" || !m.AllowNetboot || m.SubnetMask.Bits() != 24 {
		t.Errorf("host = %+v", m)
	}
}

func TestHostsReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hosts.yaml")
	write := func(body string, mtime time.Time) {
		t.Helper()
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		// Set the time explicitly: file systems with coarse timestamps
		// would otherwise hide a quick second write.
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	base := time.Now().Add(-time.Hour)
	write("hosts:\n  \"52:54:00:66:ea:9a\":\n    IPAddress: 198.18.0.10\n", base)
	h, err := newHostsBackend(path, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	mac, _ := net.ParseMAC("52:54:00:66:ea:9a")
	lookup := func() string {
		d, _, err := h.Lookup(t.Context(), backend.DHCPRequest{MACAddress: mac})
		if err != nil {
			return err.Error()
		}
		return d.IPAddress.String()
	}

	// Watch with SIGHUP delivered on a channel the test controls.
	hup := make(chan os.Signal)
	done := make(chan struct{})
	ctx := t.Context()
	go func() { defer close(done); h.watch(ctx, time.Hour, hup) }()
	t.Cleanup(func() { <-done })

	write("hosts:\n  \"52:54:00:66:ea:9a\":\n    IPAddress: 198.18.0.20\n", base.Add(time.Minute))
	hup <- syscall.SIGHUP
	hup <- syscall.SIGHUP // the watcher took the first one once this send completes
	if got := lookup(); got != "198.18.0.20" {
		t.Fatalf("after reload: %s, want 198.18.0.20", got)
	}

	// A malformed file keeps the old reservations.
	write("hosts:\n  \"52:54:00:66:ea:9a\":\n    IPAddress: not-an-address\n", base.Add(2*time.Minute))
	if err := h.reload(); err == nil {
		t.Fatal("malformed reload accepted")
	}
	if got := lookup(); got != "198.18.0.20" {
		t.Fatalf("after bad reload: %s, want the old 198.18.0.20", got)
	}
	if !h.changed() {
		t.Error("changed() = false for a file that differs from the loaded table")
	}
}

// TestHostsWatchPicksUpChanges checks the polling path: a changed file is
// reloaded without a signal.
func TestHostsWatchPicksUpChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hosts.yaml")
	old := time.Now().Add(-time.Hour)
	write := func(ip string, mtime time.Time) {
		t.Helper()
		body := "hosts:\n  \"52:54:00:66:ea:9a\":\n    IPAddress: " + ip + "\n"
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	write("198.18.0.10", old)
	h, err := newHostsBackend(path, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); h.watch(t.Context(), 5*time.Millisecond, nil) }()
	t.Cleanup(func() { <-done })

	write("198.18.0.20", old.Add(time.Minute))
	mac, _ := net.ParseMAC("52:54:00:66:ea:9a")
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		d, _, err := h.Lookup(t.Context(), backend.DHCPRequest{MACAddress: mac})
		if err == nil && d.IPAddress.String() == "198.18.0.20" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("change not picked up: %v %v", d.IPAddress, err)
		}
		<-tick.C
	}
}
