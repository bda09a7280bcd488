package main

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/internal/natstest"
	"github.com/tinkerbell/backend/internal/testenv"
	"github.com/tinkerbell/backend/internal/wire"
	natsbackend "github.com/tinkerbell/backend/nats"
)

// TestPythonResponder runs python/responder.py, a responder written from
// the README's wire protocol with only Python's standard library, and
// looks up through the Go requester: the wire documentation is enough for
// another language.
func TestPythonResponder(t *testing.T) {
	py := testenv.Command(t, "python3")[0]
	hosts := filepath.Join(t.TempDir(), "hosts.json")
	if err := os.WriteFile(hosts, []byte(`{"hosts": {"52:54:00:66:EA:9A": {
		"IPAddress": "198.18.0.10", "SubnetMask": "255.255.255.0", "DefaultGateway": "198.18.0.1",
		"NameServers": ["198.18.0.2"], "Hostname": "py-node", "LeaseTime": 600,
		"AllowNetboot": true, "IPXEScriptURL": "http://198.18.0.1:8080/auto.ipxe"}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	s := natstest.Run(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, py, filepath.Join("python", "responder.py"), s.ClientURL(), hosts)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel() // kills the child by its PID
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("responder.py stderr:\n%s", stderr.String())
		}
	})
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		ok := sc.Scan() && sc.Text() == "ready"
		ready <- ok
		for sc.Scan() { // drain until the child exits
		}
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("responder.py did not start: %s", stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("responder.py not ready after 20s")
	}

	nc := natstest.Connect(t, s)
	req, err := natsbackend.New(natsbackend.Config{Conn: nc})
	if err != nil {
		t.Fatal(err)
	}
	mac, _ := net.ParseMAC("52:54:00:66:ea:9a")
	d, n, err := req.Lookup(t.Context(), backend.DHCPRequest{MACAddress: mac})
	if err != nil {
		t.Fatal(err)
	}
	if d.IPAddress.String() != "198.18.0.10" || d.SubnetMask.Bits() != 24 || d.Hostname != "py-node" || d.LeaseTime != 600 ||
		d.MACAddress.String() != mac.String() || !n.AllowNetboot || n.IPXEScriptURL.String() != "http://198.18.0.1:8080/auto.ipxe" {
		t.Errorf("lookup = %+v %+v", d, n)
	}
	other, _ := net.ParseMAC("52:54:00:00:00:01")
	_, _, err = req.Lookup(t.Context(), backend.DHCPRequest{MACAddress: other})
	var re *backend.RemoteError
	if !errors.Is(err, backend.ErrNotFound) || !errors.As(err, &re) || re.Code != 404 {
		t.Errorf("unknown MAC: error = %v, want a 404 remote error", err)
	}

	// Lookups by IP address, as raw events, so that the test does not
	// depend on the requester's own checks.
	for _, tt := range []struct {
		name string
		req  backend.DHCPRequest
		data string // the request data as sent, when not req's wire form
		code int
	}{
		{name: "by IP", req: backend.DHCPRequest{IPAddress: netip.MustParseAddr("198.18.0.10")}},
		{name: "unknown IP", req: backend.DHCPRequest{IPAddress: netip.MustParseAddr("198.18.0.99")}, code: 404},
		{name: "both", data: `{"MACAddress":"52:54:00:66:ea:9a","IPAddress":"198.18.0.10"}`, code: 400},
		{name: "IPv6", data: `{"IPAddress":"2001:db8::1"}`, code: 400},
	} {
		t.Run(tt.name, func(t *testing.T) {
			data := func(dst []byte) []byte { return tt.req.AppendJSON(dst) }
			if tt.data != "" {
				data = func(dst []byte) []byte { return append(dst, tt.data...) }
			}
			ev := wire.AppendEvent(nil, &wire.Attrs{Source: "/test", Type: backend.RequestEventType}, &wire.IDs{}, data)
			msg := nats.NewMsg(backend.DefaultSubject)
			msg.Header.Set("Content-Type", backend.ContentType)
			msg.Data = ev
			rep, err := nc.RequestMsg(msg, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			_, m, err := wire.DecodeResponse(rep.Data)
			if err != nil {
				t.Fatalf("reply %s: %v", rep.Data, err)
			}
			if m.Error.Code != tt.code {
				t.Fatalf("reply code %d (%s), want %d", m.Error.Code, m.Error.Message, tt.code)
			}
			if tt.code == 0 {
				if err := tt.req.Match(&m.DHCP); err != nil || m.MACAddress.String() != mac.String() || m.Hostname != "py-node" {
					t.Errorf("answer %+v does not match the question: %v", m.DHCP, err)
				}
			}
		})
	}
}
