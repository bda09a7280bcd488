package hostsfile

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/backendtest"
	"go.uber.org/goleak"
)

func TestExampleHostsFileLoads(t *testing.T) {
	h, err := New(Config{Path: filepath.Join("..", "example", "testdata", "hosts.yaml")})
	if err != nil {
		t.Fatal(err)
	}
	if h.Len() != 3 {
		t.Fatalf("loaded %d hosts, want 3", h.Len())
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
			var he *Error
			if !errors.As(err, &he) {
				t.Fatalf("error = %v (%T), want *Error", err, err)
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
	h, err := New(Config{Path: path, ReloadInterval: time.Hour})
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

	write("hosts:\n  \"52:54:00:66:ea:9a\":\n    IPAddress: 198.18.0.20\n", base.Add(time.Minute))
	if err := h.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := lookup(); got != "198.18.0.20" {
		t.Fatalf("after reload: %s, want 198.18.0.20", got)
	}

	// A malformed file keeps the old reservations.
	write("hosts:\n  \"52:54:00:66:ea:9a\":\n    IPAddress: not-an-address\n", base.Add(2*time.Minute))
	if err := h.Reload(); err == nil {
		t.Fatal("malformed reload accepted")
	}
	if got := lookup(); got != "198.18.0.20" {
		t.Fatalf("after bad reload: %s, want the old 198.18.0.20", got)
	}
	if changed, _ := h.changed(); !changed {
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
	h, err := New(Config{Path: path, ReloadInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- h.Watch(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Watch returned %v, want context.Canceled", err)
		}
	})

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

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConfig(t *testing.T) {
	good := filepath.Join("..", "example", "testdata", "hosts.yaml")
	tests := []struct {
		name    string
		cfg     Config
		wantErr error
	}{
		{"zero interval", Config{Path: good}, nil},
		{"no path", Config{}, backend.ErrInvalidConfig},
		{"negative interval", Config{Path: good, ReloadInterval: -time.Second}, backend.ErrInvalidConfig},
		{"missing file", Config{Path: filepath.Join(t.TempDir(), "none.yaml")}, os.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if diff := cmp.Diff(tt.wantErr, err, cmpopts.EquateErrors()); diff != "" {
				t.Errorf("New error (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMACsSorted(t *testing.T) {
	h, err := New(Config{Path: filepath.Join("..", "example", "testdata", "hosts.yaml")})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range h.MACs() {
		got = append(got, m.String())
	}
	want := []string{"52:54:00:66:ea:9a", "52:54:00:66:ea:9b", "52:54:00:66:ea:9c"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("MACs (-want +got):\n%s", diff)
	}
}

// countingHandler counts log records at level Error.
type countingHandler struct {
	slog.Handler
	errors atomic.Int32
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level == slog.LevelError {
		h.errors.Add(1)
	}
	return nil
}

// TestWatchLogsABadFileOnce: a malformed file is logged once, not at every
// poll, and the old table stays in service; the next good version is
// picked up.
func TestWatchLogsABadFileOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hosts.yaml")
	old := time.Now().Add(-time.Hour)
	// Each version appears at once with its final mtime (written aside,
	// then renamed), so the watcher never sees it with another mtime.
	write := func(ip string, mtime time.Time) {
		t.Helper()
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte("hosts:\n  \"52:54:00:66:ea:9a\":\n    IPAddress: "+ip+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(tmp, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write("198.18.0.10", old)
	logs := &countingHandler{Handler: slog.DiscardHandler}
	h, err := New(Config{Path: path, ReloadInterval: time.Millisecond, Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- h.Watch(ctx) }()
	defer func() { cancel(); <-done }()

	write("bad-address", old.Add(time.Minute))
	mac, _ := net.ParseMAC("52:54:00:66:ea:9a")
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not after 10s", what)
			}
			time.Sleep(time.Millisecond) // polling with a deadline
		}
	}
	waitFor("reload failure logged", func() bool { return logs.errors.Load() >= 1 })
	if changed, _ := h.changed(); !changed {
		t.Fatal("bad file not seen as changed")
	}
	// Not synchronisation: lets the watcher poll the bad file ~50 more
	// times; the count asserted below must hold however many polls ran.
	time.Sleep(50 * time.Millisecond)
	if d, _, err := h.Lookup(t.Context(), backend.DHCPRequest{MACAddress: mac}); err != nil || d.IPAddress.String() != "198.18.0.10" {
		t.Errorf("during a bad file: %v %v, want the old 198.18.0.10", d.IPAddress, err)
	}
	write("198.18.0.20", old.Add(2*time.Minute))
	waitFor("good file picked up", func() bool {
		d, _, err := h.Lookup(t.Context(), backend.DHCPRequest{MACAddress: mac})
		return err == nil && d.IPAddress.String() == "198.18.0.20"
	})
	if n := logs.errors.Load(); n != 1 {
		t.Errorf("logged %d reload failures for one bad version of the file, want 1", n)
	}
}

// TestConformance runs the backendtest kit over a hosts file.
func TestConformance(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hosts.yaml")
	body := "hosts:\n" +
		"  \"52:54:00:66:ea:9a\":\n    IPAddress: 198.18.0.10\n    SubnetMask: 255.255.255.0\n    NameServers: [198.18.0.2]\n    Hostname: node-1\n    AllowNetboot: true\n    IPXEScriptURL: http://198.18.0.1:8080/auto.ipxe\n" +
		"  \"52:54:00:66:ea:9b\":\n    IPAddress: 198.18.0.11\n"
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := New(Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	mac1, _ := net.ParseMAC("52:54:00:66:ea:9a")
	mac2, _ := net.ParseMAC("52:54:00:66:ea:9b")
	script := backend.URL("http://198.18.0.1:8080/auto.ipxe")
	backendtest.Run(t, h,
		backendtest.Reservation{
			DHCP: backend.DHCP{MACAddress: mac1, IPAddress: netip.MustParseAddr("198.18.0.10"), SubnetMask: backend.MaskFrom(24),
				NameServers: []netip.Addr{netip.MustParseAddr("198.18.0.2")}, Hostname: "node-1"},
			Netboot: backend.Netboot{AllowNetboot: true, IPXEScriptURL: script},
		},
		backendtest.Reservation{DHCP: backend.DHCP{MACAddress: mac2, IPAddress: netip.MustParseAddr("198.18.0.11")}},
	)
}

func TestLookupByIP(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hosts.yaml")
	body := "hosts:\n" +
		"  \"52:54:00:66:ea:9a\": {IPAddress: 198.18.0.10, Hostname: node-1}\n" +
		"  \"52:54:00:66:ea:9b\": {IPAddress: 198.18.0.11, Hostname: node-2}\n" +
		"  \"52:54:00:66:ea:9c\": {IPAddress: 198.18.0.12, Hostname: bond-a}\n" +
		"  \"52:54:00:66:ea:9d\": {IPAddress: 198.18.0.12, Hostname: bond-b}\n"
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := New(Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		ip       string
		wantMAC  string // "" when the lookup fails
		notFound bool
	}{
		{"198.18.0.10", "52:54:00:66:ea:9a", false},
		{"198.18.0.11", "52:54:00:66:ea:9b", false},
		{"198.18.0.99", "", true},
		{"198.18.0.12", "", false}, // shared by two hosts: no one machine
	}
	for _, tt := range tests {
		t.Run(tt.ip, func(t *testing.T) {
			req := backend.DHCPRequest{IPAddress: netip.MustParseAddr(tt.ip)}
			d, _, err := h.Lookup(t.Context(), req)
			if tt.wantMAC == "" {
				if err == nil || errors.Is(err, backend.ErrNotFound) != tt.notFound {
					t.Fatalf("Lookup = %v, %v; want an error (not found: %v)", d, err, tt.notFound)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d.MACAddress.String() != tt.wantMAC || req.Match(&d) != nil {
				t.Errorf("Lookup = %s %s, want %s (Match: %v)", d.MACAddress, d.IPAddress, tt.wantMAC, req.Match(&d))
			}
		})
	}
}
