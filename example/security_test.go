package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/hostsfile"
	"github.com/tinkerbell/backend/internal/natstest"
	natsbackend "github.com/tinkerbell/backend/nats"
	"github.com/tinkerbell/backend/responder"
)

// writeTLS creates a CA and a server certificate for 127.0.0.1 in dir and
// returns the paths of the CA, the certificate and the key.
func writeTLS(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "nats"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, cert, key = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	for path, block := range map[string]*pem.Block{
		ca: {Type: "CERTIFICATE", Bytes: caDER}, cert: {Type: "CERTIFICATE", Bytes: srvDER}, key: {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return ca, cert, key
}

// secureConfig is the README's permission policy, with TLS, for three
// nkey users: a DHCP server, a responder, and another client of the same
// NATS system that must not take part.
const secureConfig = `
host: 127.0.0.1
port: -1
tls {
  cert_file: %q
  key_file: %q
}
authorization {
  users = [
    { nkey: %s, permissions: {
        publish:   { allow: ["tinkerbell.dhcp.backend"] }
        subscribe: { allow: ["_INBOX.dhcp-a.>"] } } }
    { nkey: %s, permissions: {
        subscribe: { allow: ["tinkerbell.dhcp.backend", "$SRV.>"] }
        publish:   { deny: [">"] }
        allow_responses: true } }
    { nkey: %s, permissions: {
        publish:   { deny: ["tinkerbell.>", "_INBOX.>"] }
        subscribe: { deny: ["tinkerbell.>"] } } }
  ]
}
`

// TestSecureDeployment runs the README's security policy: TLS, nkeys and
// subject permissions keep a rogue client from answering lookups.
func TestSecureDeployment(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key := writeTLS(t, dir)
	seedFile := func(name string, seed []byte) string {
		p := filepath.Join(dir, name+".nk")
		if err := os.WriteFile(p, seed, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	dhcpPub, dhcpSeed := natstest.NewUserNKey(t)
	respPub, respSeed := natstest.NewUserNKey(t)
	roguePub, rogueSeed := natstest.NewUserNKey(t)
	conf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, secureConfig, cert, key, dhcpPub, respPub, roguePub), 0o600); err != nil {
		t.Fatal(err)
	}

	// The embedded server, configured exactly as -server -nats-config does.
	log := slog.New(slog.DiscardHandler)
	sopts, err := natsServerOptions(&options{natsConfig: conf, natsAddr: "127.0.0.1:4222"})
	if err != nil {
		t.Fatal(err)
	}
	sopts.NoLog = true
	ns, err := startNATS(sopts, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	url := fmt.Sprintf("tls://127.0.0.1:%d", ns.Addr().(*net.TCPAddr).Port)

	// Without TLS and credentials, nobody gets in.
	if nc, err := nats.Connect(url, nats.NoReconnect()); err == nil {
		nc.Close()
		t.Fatal("a connection without credentials was accepted")
	}

	// The responder and the DHCP server connect with the example's flags.
	connectAs := func(seed string) *nats.Conn {
		t.Helper()
		nc, err := connect(&options{natsURL: url, natsNKey: seed, natsCA: ca}, "test", log)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		if err := nc.Flush(); err != nil {
			t.Fatalf("connect: %v (last error %v)", err, nc.LastError())
		}
		return nc
	}
	rc := connectAs(seedFile("responder", respSeed))
	hosts, err := hostsfile.New(hostsfile.Config{Path: filepath.Join("testdata", "hosts.yaml"), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := responder.New(responder.Config{Conn: rc, Backend: hosts})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	t.Cleanup(func() {
		_ = srv.Shutdown(t.Context())
		<-served
	})
	dc := connectAs(seedFile("dhcp", dhcpSeed))
	req, err := natsbackend.New(natsbackend.Config{Conn: dc, InboxPrefix: "_INBOX.dhcp-a"})
	if err != nil {
		t.Fatal(err)
	}
	mac, _ := net.ParseMAC("52:54:00:66:ea:9a")
	d, _, err := req.Lookup(t.Context(), backend.DHCPRequest{MACAddress: mac})
	if err != nil || d.IPAddress.String() != "198.18.0.10" {
		t.Fatalf("lookup through the secured server: %v, %v", d.IPAddress, err)
	}

	// The DHCP server's credential may not read other inboxes: the
	// replies meant for other DHCP servers.
	dperm := make(chan error, 1)
	other, err := nats.Connect(url, nats.RootCAs(ca), natstest.NKeyOption(t, dhcpSeed), nats.NoReconnect(),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case dperm <- err:
			default:
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(other.Close)
	if _, err := other.Subscribe("_INBOX.>", func(*nats.Msg) { t.Error("the DHCP server's credential read another inbox") }); err != nil {
		t.Fatal(err)
	}
	_ = other.Flush()
	select {
	case err := <-dperm:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Fatalf("DHCP credential subscribing to _INBOX.>: %v, want a permission violation", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not report the DHCP credential's permission violation")
	}

	// The rogue client has valid credentials but may neither listen on the
	// subject nor publish forged replies to inboxes.
	perm := make(chan error, 4)
	rogue, err := nats.Connect(url, nats.RootCAs(ca), natstest.NKeyOption(t, rogueSeed), nats.NoReconnect(),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { perm <- err }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rogue.Close)
	if _, err := rogue.Subscribe("tinkerbell.dhcp.backend", func(*nats.Msg) { t.Error("rogue received a lookup") }); err != nil {
		t.Fatal(err)
	}
	if _, err := rogue.QueueSubscribe("tinkerbell.dhcp.backend", backend.DefaultQueue, func(*nats.Msg) { t.Error("rogue received a lookup") }); err != nil {
		t.Fatal(err)
	}
	if err := rogue.Publish("_INBOX.forged", []byte(`{"forged":true}`)); err != nil {
		t.Fatal(err)
	}
	_ = rogue.Flush()
	for range 3 {
		select {
		case err := <-perm:
			if !errors.Is(err, nats.ErrPermissionViolation) {
				t.Fatalf("rogue error = %v, want a permission violation", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the server did not report the rogue's permission violations")
		}
	}
	// Lookups keep being answered by the real responder only.
	for range 20 {
		if d, _, err := req.Lookup(t.Context(), backend.DHCPRequest{MACAddress: mac}); err != nil || d.IPAddress.String() != "198.18.0.10" {
			t.Fatalf("lookup with a rogue present: %v, %v", d.IPAddress, err)
		}
	}
}
