package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"net/netip"

	"github.com/nats-io/nats.go"

	"github.com/tinkerbell/backend/internal/netnstest"
	"github.com/tinkerbell/backend/internal/testenv"
)

// lockedBuffer collects a child's output for the failure message.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// child is the example command running in a network namespace.
type child struct {
	name string
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
}

// startChild runs this test binary as the example command with args inside
// ns; it is killed when the test ends.
func startChild(t *testing.T, ns *netnstest.Namespace, name string, args ...string) *child {
	t.Helper()
	c := &child{name: name, out: &lockedBuffer{}, done: make(chan struct{})}
	c.cmd = ns.Command(context.Background(), os.Args[0], args...)
	c.cmd.Env = append(os.Environ(), envRunMain+"=1")
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { _ = c.cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		c.kill()
		if t.Failed() {
			t.Logf("output of %s:\n%s", name, c.out)
		}
	})
	return c
}

// kill stops the child with SIGKILL, by its PID, and waits for it.
func (c *child) kill() {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Kill()
	<-c.done
}

// eventually polls cond every 20 ms until it returns nil or the deadline
// passes; it is for conditions that have no notification (a server
// starting in another process).
func eventually(t *testing.T, what string, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not ready after %v: %v", what, timeout, err)
		}
		<-tick.C
	}
}

// udhcpcScript configures the interface as a real client would (address,
// default route) and records what udhcpc learnt.
const udhcpcScript = `#!/bin/sh
case "$1" in
bound|renew)
	ip addr flush dev "$interface"
	ip addr add "$ip/$mask" dev "$interface"
	[ -n "$router" ] && ip route replace default via "$router" dev "$interface"
	env > "%s"
	;;
esac
exit 0
`

// udhcpc runs busybox udhcpc once on the client end and returns the
// variables it handed to its script, or an error when it got no lease.
func udhcpc(t *testing.T, l netnstest.Link, tries int) (map[string]string, error) {
	t.Helper()
	argv := testenv.Command(t, "udhcpc")
	bin, args := argv[0], argv[1:]
	dir := t.TempDir()
	out := filepath.Join(dir, "lease.env")
	script := filepath.Join(dir, "script.sh")
	if err := os.WriteFile(script, []byte(fmt.Sprintf(udhcpcScript, out)), 0o755); err != nil {
		t.Fatal(err)
	}
	// -n: exit without a lease, -q: exit with one, -f: foreground,
	// -t/-T: tries, 1 s apart. No -B: replies are unicast to a client
	// without an address, the path that needs raw sockets.
	args = append(args, "-i", l.Name, "-n", "-q", "-f", "-t", fmt.Sprint(tries), "-T", "1", "-A", "1", "-s", script)
	ctx, cancel := context.WithTimeout(t.Context(), time.Duration(tries+5)*time.Second)
	defer cancel()
	res, runErr := l.NS.Command(ctx, bin, args...).CombinedOutput()
	env, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("no lease (udhcpc: %v): %s", runErr, res)
	}
	vars := map[string]string{}
	for _, line := range strings.Split(string(env), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			vars[k] = v
		}
	}
	return vars, nil
}

func TestEndToEndWithRealClient(t *testing.T) {
	testenv.Require(t, testenv.Netns, "udhcpc")
	pair := netnstest.NewPair(t, netnstest.PairConfig{AddrA: netip.MustParsePrefix("198.18.0.1/24")})
	server, client := pair.A, pair.B

	hosts := filepath.Join(t.TempDir(), "hosts.yaml")
	body := fmt.Sprintf(`hosts:
  "%s":
    IPAddress: 198.18.0.50
    SubnetMask: 255.255.255.0
    DefaultGateway: 198.18.0.1
    NameServers: [198.18.0.2, 198.18.0.3]
    Hostname: e2e-node
    DomainName: lab.example
    LeaseTime: 600
`, client.HardwareAddr)
	if err := os.WriteFile(hosts, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}

	// NATS listens on the server namespace's own loopback, so a fixed port
	// cannot collide with anything else.
	const natsURL = "nats://127.0.0.1:14222"
	startChild(t, server.NS, "nats server", "-server", "-nats-addr", "127.0.0.1:14222")

	// The test's own connection is made from inside the namespace (the
	// socket stays there); it must not reconnect from another thread.
	var nc *nats.Conn
	eventually(t, "nats server", 20*time.Second, func() error {
		return server.NS.Do(func() error {
			var err error
			nc, err = nats.Connect(natsURL, nats.NoReconnect())
			return err
		})
	})
	t.Cleanup(nc.Close)
	responderUp := func() error {
		_, err := nc.Request("$SRV.PING.tinkerbell-dhcp-backend", nil, time.Second)
		return err
	}

	startResponder := func() *child {
		c := startChild(t, server.NS, "responder", "-responder", "-nats-url", natsURL, "-hosts", hosts)
		eventually(t, "responder", 20*time.Second, responderUp)
		return c
	}
	resp := startResponder()
	// Without answer reuse and the per-MAC limit, so that step 3 sees the
	// responder's absence at once (through the cache's last-known-good
	// answer) rather than the answer of step 1.
	dhcp := startChild(t, server.NS, "dhcp server", "-iface", server.Name, "-server-addr", "198.18.0.1", "-nats-url", natsURL, "-v",
		"-answer-reuse", "-1ns", "-min-lookup-interval", "-1ns")

	// 1. A real client gets exactly the hosts file's configuration.
	vars, err := udhcpc(t, client, 10)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"ip": "198.18.0.50", "subnet": "255.255.255.0", "mask": "24", "router": "198.18.0.1",
		"dns": "198.18.0.2 198.18.0.3", "hostname": "e2e-node", "domain": "lab.example",
		"lease": "600", "serverid": "198.18.0.1",
	}
	for k, v := range want {
		if got := strings.TrimSpace(vars[k]); got != v {
			t.Errorf("udhcpc %s = %q, want %q", k, got, v)
		}
	}
	addrs := client.NS.Run(t, "ip", "-4", "-o", "addr", "show", "dev", client.Name)
	if !strings.Contains(addrs, "inet 198.18.0.50/24") {
		t.Errorf("client interface not configured with 198.18.0.50/24:\n%s", addrs)
	}
	routes := client.NS.Run(t, "ip", "-4", "route", "show", "default")
	if !strings.Contains(routes, "default via 198.18.0.1") {
		t.Errorf("client has no default route via 198.18.0.1:\n%s", routes)
	}

	// 2. An unknown MAC gets nothing.
	setMAC := func(mac string) {
		client.NS.Run(t, "ip", "addr", "flush", "dev", client.Name)
		client.NS.Run(t, "ip", "link", "set", "dev", client.Name, "address", mac)
	}
	setMAC("52:54:00:00:00:99")
	if vars, err := udhcpc(t, client, 2); err == nil {
		t.Errorf("unknown MAC got a lease: %v", vars)
	}
	setMAC(client.HardwareAddr.String())

	// 3. The responder dies: the known client keeps its address (the
	//    DHCP server's last-known-good answer, logged as stale), an unknown
	//    MAC still gets nothing; then the responder is restarted and the
	//    next exchange succeeds.
	resp.kill()
	vars, err = udhcpc(t, client, 4)
	if err != nil {
		t.Errorf("known client without a responder: %v (want its last-known-good address)", err)
	} else if vars["ip"] != "198.18.0.50" || vars["boot_file"] != "" {
		t.Errorf("known client without a responder: ip %q, boot file %q; want 198.18.0.50 and none", vars["ip"], vars["boot_file"])
	}
	if out := dhcp.out.String(); !strings.Contains(out, "serving last-known-good answers without netboot") {
		t.Errorf("the DHCP server did not log its stale answer:\n%s", out)
	}
	setMAC("52:54:00:00:00:98")
	if vars, err := udhcpc(t, client, 2); err == nil {
		t.Errorf("unknown MAC got a lease with no responder running: %v", vars)
	}
	setMAC(client.HardwareAddr.String())
	startResponder()
	vars, err = udhcpc(t, client, 10)
	if err != nil {
		t.Fatalf("after restarting the responder: %v", err)
	}
	if vars["ip"] != "198.18.0.50" {
		t.Errorf("after restart ip = %q", vars["ip"])
	}
	if err := responderUp(); err != nil {
		t.Errorf("responder not answering discovery: %v", err)
	}
}
