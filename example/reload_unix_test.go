//go:build unix

package main

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/tinkerbell/backend/dhcpserver"
)

// TestInProcessReloadOnSIGHUP changes the hosts file under an -in-process
// DHCP server that would not look at it for an hour, sends SIGHUP, and
// expects the next DORA to get the new address.
func TestInProcessReloadOnSIGHUP(t *testing.T) {
	hosts := filepath.Join(t.TempDir(), "hosts.yaml")
	write := func(ip string) {
		t.Helper()
		if err := os.WriteFile(hosts, []byte("hosts:\n  \"52:54:00:66:ea:9a\":\n    IPAddress: "+ip+"\n    SubnetMask: 255.255.255.0\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("198.18.0.10")
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	udp := pc.LocalAddr().(*net.UDPAddr)
	pc.Close()
	addr, _ := startRun(t, "-in-process", "-hosts", hosts, "-reload-interval", "1h", "-min-lookup-interval", "-1s",
		"-udp", udp.String(), "-server-addr", "127.0.0.1", "-http-addr", "127.0.0.1:0")
	waitStatus(t, "http://"+addr+"/healthz", http.StatusOK) // serving, and the SIGHUP handler is installed
	mac, _ := net.ParseMAC("52:54:00:66:ea:9a")
	dora := func() string {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		l, err := demoDORA(ctx, udp, mac, dhcpserver.DefaultUserClass)
		if err != nil {
			t.Fatalf("DORA: %v", err)
		}
		return l.ip
	}
	if ip := dora(); ip != "198.18.0.10" {
		t.Fatalf("first DORA: %s, want 198.18.0.10", ip)
	}
	write("198.18.0.20")
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for ip := dora(); ip != "198.18.0.20"; ip = dora() {
		if time.Now().After(deadline) {
			t.Fatalf("after SIGHUP: %s, want 198.18.0.20", ip)
		}
	}
}
