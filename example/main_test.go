package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/goleak"
)

// envRunMain makes the test binary behave as the example command, so that
// end-to-end tests can start the pieces as child processes without a
// separate build.
const envRunMain = "BACKEND_EXAMPLE_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(envRunMain) == "1" {
		main()
		return
	}
	goleak.VerifyTestMain(m)
}

func TestDemo(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), []string{"-demo", "-hosts", filepath.Join("testdata", "hosts.yaml")}, &stdout, &stderr)
	if code != exitOK {
		t.Fatalf("exit code %d\nstdout:\n%s\nstderr:\n%s", code, &stdout, &stderr)
	}
	out := stdout.String()
	// One row per host, with the hosts file's values, then the unknown MAC.
	rows := []string{
		`52:54:00:66:ea:9a +198\.18\.0\.10 +255\.255\.255\.0 +198\.18\.0\.1 +198\.18\.0\.2,198\.18\.0\.3 +node-1\.lab\.example +http://198\.18\.0\.1:8080/auto\.ipxe +\S+`,
		`52:54:00:66:ea:9b +198\.18\.0\.11 +255\.255\.255\.0 +198\.18\.0\.1 +198\.18\.0\.2 +node-2\.lab\.example +- +\S+`,
		`52:54:00:66:ea:9c +198\.18\.1\.20 +255\.255\.254\.0 +198\.18\.0\.1 +198\.18\.0\.2 +node-3 +http://198\.18\.0\.1:8080/default\.ipxe +\S+`,
		`52:54:00:00:00:99 +no offer \(not in the hosts file\)`,
		`DHCP server: 4 DISCOVER, 3 REQUEST received; 3 OFFER, 3 ACK sent`,
	}
	lines := strings.Split(out, "\n")
	at := 0
	for _, row := range rows {
		re := regexp.MustCompile(`^` + row)
		for at < len(lines) && !re.MatchString(lines[at]) {
			at++
		}
		if at == len(lines) {
			t.Fatalf("output lacks a line matching %q (in order)\n%s", row, out)
		}
	}
	if stderr.Len() != 0 {
		t.Errorf("the demo logged warnings or errors:\n%s", &stderr)
	}
}

func TestExitCodes(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("hosts:\n  \"52:54:00:66:ea:9a\":\n    IPAddress: 2001:db8::1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"help", []string{"-h"}, exitOK, "Usage"},
		{"unknown flag", []string{"-nope"}, exitUsage, "flag provided but not defined"},
		{"two modes", []string{"-server", "-responder"}, exitUsage, "choose one"},
		{"stray argument", []string{"-demo", "x"}, exitUsage, "unexpected arguments"},
		{"bad log format", []string{"-log-format", "xml"}, exitUsage, "text or json"},
		{"dhcp server without interface", nil, exitUsage, "needs -iface"},
		{"udp without server address", []string{"-udp", "127.0.0.1:0"}, exitUsage, "-server-addr is required"},
		{"bad server address", []string{"-udp", "127.0.0.1:0", "-server-addr", "x"}, exitUsage, "-server-addr"},
		{"bad hosts file", []string{"-responder", "-hosts", bad}, exitUsage, "bad.yaml:3: host 52:54:00:66:ea:9a"},
		{"missing hosts file", []string{"-demo", "-hosts", filepath.Join(t.TempDir(), "none.yaml")}, exitUsage, "no such file"},
		{"zero cache size", []string{"-udp", "127.0.0.1:0", "-server-addr", "127.0.0.1", "-cache-size", "0"}, exitUsage, "-cache-size 0"},
		{"zero attempts", []string{"-udp", "127.0.0.1:0", "-server-addr", "127.0.0.1", "-lookup-attempts", "0"}, exitUsage, "-lookup-attempts 0"},
		{"bad nats config", []string{"-server", "-nats-config", filepath.Join(t.TempDir(), "none.conf")}, exitUsage, "-nats-config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			if code := run(ctx, tt.args, &stdout, &stderr); code != tt.code {
				t.Fatalf("exit code %d, want %d\nstderr:\n%s", code, tt.code, &stderr)
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("stderr does not mention %q:\n%s", tt.want, &stderr)
			}
		})
	}
}

// TestServerAndResponderStopOnSignal runs -server and -responder until
// their context ends (as SIGTERM does) and checks they exit cleanly.
func TestServerAndResponderStopOnSignal(t *testing.T) {
	for _, args := range [][]string{
		{"-server", "-nats-addr", "127.0.0.1:0"},
	} {
		ctx, cancel := context.WithCancel(t.Context())
		cancel() // already "signalled": start, then shut down at once
		var stdout, stderr bytes.Buffer
		if code := run(ctx, args, &stdout, &stderr); code != exitOK {
			t.Errorf("%v: exit %d\n%s", args, code, &stderr)
		}
	}
}

// TestOpenToNetwork checks when -server warns that it listens beyond
// loopback without authentication.
func TestOpenToNetwork(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts server.Options
		want bool
	}{
		{"loopback", server.Options{Host: "127.0.0.1"}, false},
		{"loopback v6", server.Options{Host: "::1"}, false},
		{"localhost", server.Options{Host: "localhost"}, false},
		{"all addresses", server.Options{Host: "0.0.0.0"}, true},
		{"all addresses v6", server.Options{Host: "::"}, true},
		{"default host", server.Options{}, true},
		{"lab address", server.Options{Host: "198.18.0.1"}, true},
		{"user and password", server.Options{Host: "0.0.0.0", Username: "a", Password: "b"}, false},
		{"users", server.Options{Host: "0.0.0.0", Users: []*server.User{{Username: "a"}}}, false},
		{"nkeys", server.Options{Host: "0.0.0.0", Nkeys: []*server.NkeyUser{{Nkey: "U..."}}}, false},
		{"token", server.Options{Host: "0.0.0.0", Authorization: "t"}, false},
		{"client certificates", server.Options{Host: "0.0.0.0", TLSVerify: true}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := openToNetwork(&tt.opts); got != tt.want {
				t.Errorf("openToNetwork = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestServerNoWarningOnLoopback runs -server on loopback: no warning about
// authentication. (Where it does warn is openToNetwork's decision, tested
// above without listening beyond loopback.)
func TestServerNoWarningOnLoopback(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	var stderr lockedBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"-server", "-nats-addr", "127.0.0.1:0"}, io.Discard, &stderr) }()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(stderr.String(), "nats server ready") {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("server not ready: %s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != exitOK {
		t.Errorf("exit code %d", code)
	}
	if strings.Contains(stderr.String(), "without authentication") {
		t.Errorf("warned on loopback:\n%s", stderr.String())
	}
}
