package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/internal/natstest"
	"github.com/tinkerbell/backend/internal/testenv"
	"github.com/tinkerbell/backend/internal/wire"
	natsbackend "github.com/tinkerbell/backend/nats"
)

// TestPythonSigned is the second-language check of signed answers:
// python/responder.py signs its replies with its own few lines of ed25519
// (RFC 8032) and nkeys encoding, from the README's wire section, and Go
// verifies them: with wire.VerifyEvent over a request id of our choosing,
// and through the requester trusting the key. The key is the one of
// testdata/signature/vectors.json (the secret of RFC 8032's first test).
func TestPythonSigned(t *testing.T) {
	testenv.Require(t, "python3")
	py := testenv.Command(t, "python3")[0]
	raw, err := os.ReadFile(filepath.Join("..", "testdata", "signature", "vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var vectors struct {
		Seed      string `json:"seed"`
		PublicKey string `json:"public_key"`
	}
	if err := json.Unmarshal(raw, &vectors); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	seed := filepath.Join(dir, "seed.nk")
	if err := os.WriteFile(seed, []byte(vectors.Seed+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hosts := filepath.Join(dir, "hosts.json")
	if err := os.WriteFile(hosts, []byte(`{"hosts": {"52:54:00:66:ea:9a": {
		"IPAddress": "198.18.0.10", "SubnetMask": "255.255.255.0", "Hostname": "py-signed",
		"AllowNetboot": true, "IPXEScriptURL": "http://198.18.0.1:8080/auto.ipxe"}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	s := natstest.Run(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, py, filepath.Join("python", "responder.py"), s.ClientURL(), hosts, seed)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan bool, 1)
	drained := make(chan struct{})
	t.Cleanup(func() {
		cancel() // kills the child by its PID
		_ = cmd.Wait()
		<-drained
		if t.Failed() {
			t.Logf("responder.py stderr:\n%s", stderr.String())
		}
	})
	go func() {
		defer close(drained)
		sc := bufio.NewScanner(stdout)
		ready <- sc.Scan() && sc.Text() == "ready"
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
	trusted, err := wire.TrustedKeys(vectors.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	mac, _ := net.ParseMAC("52:54:00:66:ea:9a")

	// Raw requests with ids of our own: an answer, a 404 and a 400, each
	// signed over its request's id and nothing else.
	for _, tt := range []struct {
		id, data, code string
	}{
		{"py-1", string(requestFor(mac, "py-1")), ""},
		{"py-2", string(requestFor(net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1}, "py-2")), "404"},
		{"py-3", `{"specversion":"1.0","id":"py-3","source":"/t","type":"` + backend.RequestEventType + `","data":{"MACAddress":"zz"}}`, "400"},
	} {
		m, err := nc.Request(backend.DefaultSubject, []byte(tt.data), 10*time.Second)
		if err != nil {
			t.Fatalf("request %s: %v", tt.id, err)
		}
		if got := m.Header.Get(backend.HeaderServiceErrorCode); got != tt.code {
			t.Errorf("request %s: code %q, want %q", tt.id, got, tt.code)
		}
		ev, err := wire.Decode(m.Data, backend.ResponseEventType)
		if err != nil {
			t.Fatalf("request %s: reply %v", tt.id, err)
		}
		if ev.Signer != vectors.PublicKey {
			t.Errorf("request %s: signer %q, want %q", tt.id, ev.Signer, vectors.PublicKey)
		}
		if err := wire.VerifyEvent(trusted, tt.id, &ev); err != nil {
			t.Errorf("request %s: Python's signature does not verify: %v\n%s", tt.id, err, m.Data)
		}
		if err := wire.VerifyEvent(trusted, tt.id+"-other", &ev); !errors.Is(err, wire.ErrSignatureMismatch) {
			t.Errorf("request %s: verified against another request id: %v", tt.id, err)
		}
	}

	// The requester trusting the key accepts the answer.
	req, err := natsbackend.New(natsbackend.Config{Conn: nc, TrustedKeys: []string{vectors.PublicKey}, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	d, _, err := req.Lookup(t.Context(), backend.DHCPRequest{MACAddress: mac})
	if err != nil || d.Hostname != "py-signed" {
		t.Errorf("Lookup trusting the Python responder's key = %q, %v", d.Hostname, err)
	}
}

// requestFor is a request event for mac with the given id.
func requestFor(mac net.HardwareAddr, id string) []byte {
	var ids wire.IDs
	a := wire.Attrs{ID: id, Source: "/test", Type: backend.RequestEventType}
	return wire.AppendRequest(nil, &a, &ids, &backend.DHCPRequest{MACAddress: mac})
}
