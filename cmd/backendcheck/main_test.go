package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/internal/natstest"
	"github.com/tinkerbell/backend/internal/testenv"
	"github.com/tinkerbell/backend/internal/wire"
	"github.com/tinkerbell/backend/responder"
)

// hostsJSON is the fixture of the Python responder and of -want.
const hostsJSON = `{"hosts": {"52:54:00:66:EA:9A": {
	"IPAddress": "198.18.0.10", "SubnetMask": "255.255.255.0", "DefaultGateway": "198.18.0.1",
	"NameServers": ["198.18.0.2"], "Hostname": "py-node", "LeaseTime": 600,
	"AllowNetboot": true, "IPXEScriptURL": "http://198.18.0.1:8080/auto.ipxe"}}}`

// check runs the command with args and returns its exit code and the lines
// it printed.
func check(t *testing.T, args ...string) (int, []string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), args, &stdout, &stderr)
	t.Logf("backendcheck %s: exit %d\n%s%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	return code, strings.Split(strings.TrimSpace(stdout.String()), "\n")
}

// status returns the status word of the line for check name, or "".
func status(lines []string, name string) string {
	for _, l := range lines {
		st, rest, _ := strings.Cut(l, " ")
		if strings.HasPrefix(rest, name+": ") {
			return st
		}
	}
	return ""
}

func failed(lines []string) []string {
	var out []string
	for _, l := range lines {
		if strings.HasPrefix(l, "FAIL ") {
			out = append(out, l)
		}
	}
	return out
}

func writeHosts(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hosts.json")
	if err := os.WriteFile(p, []byte(hostsJSON), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// waitForResponder polls the subject until a responder answers.
func waitForResponder(t *testing.T, nc *nats.Conn, subject string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		_, err := nc.Request(subject, []byte("{}"), time.Second)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no responder on %s after %v: %v", subject, within, err)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
}

// TestExampleResponder runs the command against the example's Go
// responder, as a separate process serving example/testdata/hosts.yaml.
func TestExampleResponder(t *testing.T) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatal("go is not on PATH")
	}
	bin := filepath.Join(t.TempDir(), "example")
	if out, err := exec.Command(goCmd, "build", "-o", bin, "github.com/tinkerbell/backend/example").CombinedOutput(); err != nil {
		t.Fatalf("go build example: %v\n%s", err, out)
	}
	s := natstest.Run(t, nil)
	start(t, exec.Command(bin, "-responder", "-nats-url", s.ClientURL(), "-hosts", filepath.Join("..", "..", "example", "testdata", "hosts.yaml")))
	waitForResponder(t, natstest.Connect(t, s), backend.DefaultSubject, 30*time.Second)

	code, lines := check(t, "-nats-url", s.ClientURL(), "-mac", "52:54:00:66:ea:9a", "-mac", "52:54:00:66:ea:9b", "-mac", "52:54:00:66:ea:9c")
	if code != exitOK || len(failed(lines)) > 0 {
		t.Errorf("exit %d, failures:\n%s", code, strings.Join(failed(lines), "\n"))
	}
	for _, name := range []string{"answer 52:54:00:66:ea:9c", "not-found 00:00:5e:00:53:01", "bad-request mac-not-a-mac", "budget 500ms", "form data_base64"} {
		if st := status(lines, name); st != "PASS" {
			t.Errorf("check %q: %q, want PASS", name, st)
		}
	}
	for _, name := range []string{"discovery info", "discovery ping", "discovery stats"} {
		if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, "PASS "+name) }) {
			t.Errorf("no PASS line for %q", name)
		}
	}
}

// start starts cmd and kills it, by its PID, when the test ends.
func start(t *testing.T, cmd *exec.Cmd) *lockedBuffer {
	t.Helper()
	var out lockedBuffer
	cmd.Stderr = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("%s stderr:\n%s", filepath.Base(cmd.Path), out.String())
		}
	})
	return &out
}

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

// TestPythonResponder runs the command against the standard-library
// Python responder.
func TestPythonResponder(t *testing.T) {
	py := testenv.Command(t, "python3")[0]
	s := natstest.Run(t, nil)
	hosts := writeHosts(t)
	cmd := exec.Command(py, filepath.Join("..", "..", "example", "python", "responder.py"), s.ClientURL(), hosts)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := start(t, cmd)
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		ready <- sc.Scan() && sc.Text() == "ready"
		for sc.Scan() {
		}
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("responder.py did not start: %s", stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("responder.py not ready after 30s")
	}

	code, lines := check(t, "-nats-url", s.ClientURL(), "-want", hosts)
	if code != exitOK || len(failed(lines)) > 0 {
		t.Errorf("exit %d, failures:\n%s", code, strings.Join(failed(lines), "\n"))
	}
	if st := status(lines, "answer 52:54:00:66:ea:9a"); st != "PASS" {
		t.Errorf("answer: %q, want PASS", st)
	}
	if st := status(lines, "discovery"); st != "SKIP" {
		t.Errorf("discovery: %q, want SKIP (the Python responder has none)", st)
	}
}

// errorBackend answers one reservation, fails with 500 and 503 for two
// other MAC addresses and knows nothing else.
func errorBackend(_ context.Context, req backend.DHCPRequest) (backend.DHCP, backend.Netboot, error) {
	switch req.MACAddress.String() {
	case "52:54:00:66:ea:9a":
		return backend.DHCP{IPAddress: netip.MustParseAddr("198.18.0.10"), SubnetMask: backend.MaskFrom(24)}, backend.Netboot{}, nil
	case "52:54:00:00:05:00":
		return backend.DHCP{}, backend.Netboot{}, errors.New("database on fire")
	case "52:54:00:00:05:03":
		return backend.DHCP{}, backend.Netboot{}, fmt.Errorf("%w: database restarting", backend.ErrUnavailable)
	}
	return backend.DHCP{}, backend.Netboot{}, backend.ErrNotFound
}

// TestErrorCodes: the responder package passes every check, including the
// error codes given with -error-mac, on a prefixed subject.
func TestErrorCodes(t *testing.T) {
	s := natstest.Run(t, nil)
	nc := natstest.Connect(t, s)
	srv, err := responder.New(responder.Config{Conn: nc, Backend: backend.BackendFunc(errorBackend), SubjectPrefix: "site-a"})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { _ = srv.Close() })

	code, lines := check(t, "-nats-url", s.ClientURL(), "-subject-prefix", "site-a", "-mac", "52:54:00:66:ea:9a",
		"-error-mac", "500=52:54:00:00:05:00", "-error-mac", "503=52:54:00:00:05:03")
	if code != exitOK || len(failed(lines)) > 0 {
		t.Errorf("exit %d, failures:\n%s", code, strings.Join(failed(lines), "\n"))
	}
	for _, name := range []string{"error-code 500", "error-code 503"} {
		if st := status(lines, name); st != "PASS" {
			t.Errorf("check %q: %q, want PASS", name, st)
		}
	}

	// The wrong code for a MAC address fails.
	code, lines = check(t, "-nats-url", s.ClientURL(), "-subject-prefix", "site-a", "-error-mac", "503=52:54:00:00:05:00")
	if code != exitFail || !slices.ContainsFunc(lines, func(l string) bool {
		return strings.HasPrefix(l, `FAIL error-code 503: Error.Code is 500 ("backend: remote error 500: database on fire"`) ||
			strings.HasPrefix(l, `FAIL error-code 503: Error.Code is 500 ("database on fire"), want 503`)
	}) {
		t.Errorf("exit %d; want a FAIL line for error-code 503", code)
	}
}

func TestNoResponder(t *testing.T) {
	s := natstest.Run(t, nil)
	code, lines := check(t, "-nats-url", s.ClientURL())
	if want := []string{"FAIL responder: no responder listens on tinkerbell.dhcp.backend", "1 of 1 checks failed"}; code != exitFail || !slices.Equal(lines, want) {
		t.Errorf("exit %d, lines %q; want %d, %q", code, lines, exitFail, want)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		{"-mac", "nope"},
		{"-error-mac", "x=52:54:00:66:ea:9a"},
		{"-subject", "a..b"},
		{"-signer", "not-a-key"},
		{"-mac", "00:00:5e:00:53:01"},
		{"-nats-url", "nats://127.0.0.1:1"},
		{"extra"},
	} {
		if code, _ := check(t, args...); code != exitUsage {
			t.Errorf("%q: exit %d, want %d", args, code, exitUsage)
		}
	}
}

// breakage is how a broken responder deviates from the protocol.
type breakage struct {
	wrongType   bool          // replies with another event type
	base64MAC   bool          // writes MAC addresses in base64
	ok200       bool          // answers unknown MAC addresses with code 200
	ignoreDelay time.Duration // takes this long whatever the budget
	signer      *wire.Signer  // signs replies
	tamper      bool          // changes the data after signing
	otherByIP   bool          // answers lookups by IP with another machine
}

// serveBroken serves a deliberately broken responder on the default
// subject: correct except for b.
func serveBroken(t *testing.T, nc *nats.Conn, b breakage) {
	t.Helper()
	known, _ := net.ParseMAC("52:54:00:66:ea:9a")
	var ids wire.IDs
	sub, err := nc.QueueSubscribe(backend.DefaultSubject, backend.DefaultQueue, func(msg *nats.Msg) {
		ev, req, err := wire.DecodeRequest(msg.Data)
		var m backend.Message
		switch {
		case err != nil:
			m.Error = backend.Status{Code: backend.CodeBadRequest, Message: err.Error()}
		case b.otherByIP && req.IPAddress.IsValid():
			other, _ := net.ParseMAC("52:54:00:00:00:01")
			m.DHCP = backend.DHCP{MACAddress: other, IPAddress: req.IPAddress}
		case bytes.Equal(req.MACAddress, known):
			m.DHCP = backend.DHCP{MACAddress: req.MACAddress, IPAddress: netip.MustParseAddr("198.18.0.10")}
		case b.ok200:
			m.MACAddress = req.MACAddress
			m.Error = backend.Status{Code: 200, Message: "OK"}
		default:
			m.MACAddress = req.MACAddress
			m.Error = backend.Status{Code: backend.CodeNotFound, Message: "not found"}
		}
		if b.ignoreDelay > 0 {
			if ms, _ := strconv.Atoi(msg.Header.Get(backend.HeaderTimeout)); time.Duration(ms)*time.Millisecond < b.ignoreDelay {
				time.Sleep(b.ignoreDelay) // the broken part: the budget is over long before
			}
		}
		a := wire.Attrs{Source: "/broken", Type: backend.ResponseEventType}
		out := wire.AppendResponse(nil, &a, &ids, &m)
		if b.signer != nil {
			out, _ = wire.AppendSignedResponse(nil, &a, &ids, &m, ev.ID, b.signer)
			if b.tamper {
				out = bytes.Replace(out, []byte("198.18.0.10"), []byte("198.18.0.66"), 1)
			}
		}
		if b.wrongType {
			out = bytes.Replace(out, []byte(backend.ResponseEventType), []byte("org.tinkerbell.dhcp.backend.reply"), 1)
		}
		if b.base64MAC && len(m.MACAddress) > 0 {
			out = bytes.Replace(out, []byte(`"`+m.MACAddress.String()+`"`), []byte(`"`+base64.StdEncoding.EncodeToString(m.MACAddress)+`"`), 1)
		}
		h := nats.Header{backend.HeaderContentType: {backend.ContentType}}
		_ = msg.RespondMsg(&nats.Msg{Header: h, Data: out})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

func TestBrokenResponders(t *testing.T) {
	signer, other := newSigner(t), newSigner(t)
	tests := []struct {
		name string
		b    breakage
		args []string
		// want maps checks that must fail to the start of their reason;
		// every other check must pass or be skipped.
		want map[string]string
		// alsoFail are checks that fail as a consequence, reason unchecked.
		alsoFail []string
	}{
		{
			name: "correct",
		},
		{
			name: "wrong event type",
			b:    breakage{wrongType: true},
			want: map[string]string{
				"answer 52:54:00:66:ea:9a":    `event type is "org.tinkerbell.dhcp.backend.reply", want "org.tinkerbell.dhcp.backend.response"`,
				"not-found 00:00:5e:00:53:01": `event type is "org.tinkerbell.dhcp.backend.reply"`,
				"bad-request no-id":           `event type is "org.tinkerbell.dhcp.backend.reply"`,
			},
			alsoFail: []string{"form ", "bad-request ", "budget "},
		},
		{
			name: "base64 MAC address",
			b:    breakage{base64MAC: true},
			want: map[string]string{
				"answer 52:54:00:66:ea:9a":    `MACAddress is "UlQAZuqa", not in the form aa:bb:cc:dd:ee:ff (base64, as encoding/json writes a net.HardwareAddr?)`,
				"not-found 00:00:5e:00:53:01": `MACAddress is "AABeAFMB", not in the form aa:bb:cc:dd:ee:ff`,
				"form data_base64":            `MACAddress is "UlQAZuqa"`,
			},
			alsoFail: []string{"form ", "budget "},
		},
		{
			name: "200 instead of 404",
			b:    breakage{ok200: true},
			want: map[string]string{
				"not-found 00:00:5e:00:53:01": `Error.Code is 200 ("OK"), want 404`,
			},
		},
		{
			name: "signed",
			b:    breakage{signer: signer},
			args: []string{"-signer", signer.PublicKey()},
		},
		{
			name: "signed by another key",
			b:    breakage{signer: other},
			args: []string{"-signer", signer.PublicKey()},
			want: map[string]string{"signatures": `the signer is not trusted: "` + other.PublicKey() + `"`},
		},
		{
			name: "unsigned",
			args: []string{"-signer", signer.PublicKey()},
			want: map[string]string{"signatures": `the reply is not signed`},
		},
		{
			name: "data changed after signing",
			b:    breakage{signer: signer, tamper: true},
			want: map[string]string{
				"signatures":               `the signature does not match`,
				"answer 52:54:00:66:ea:9a": `wrong answer: IPAddress = "198.18.0.66", want "198.18.0.10"`,
			},
			alsoFail: []string{"form ", "budget "},
			args:     []string{"-want", writeWant(t)},
		},
		{
			name: "answers by IP with another machine",
			b:    breakage{otherByIP: true},
			args: []string{"-want", writeWant(t)},
			want: map[string]string{"by-ip 198.18.0.10": `the answer is for 52:54:00:00:00:01, the question was 52:54:00:66:ea:9a`},
			// 192.0.2.1 is "answered" too.
			alsoFail: []string{"by-ip unknown"},
		},
		{
			name: "ignores the budget",
			b:    breakage{ignoreDelay: 800 * time.Millisecond},
			want: map[string]string{
				"budget 500ms": `the reply came after `,
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := natstest.Run(t, nil)
			serveBroken(t, natstest.Connect(t, s), tc.b)
			code, lines := check(t, append([]string{"-nats-url", s.ClientURL(), "-mac", "52:54:00:66:ea:9a"}, tc.args...)...)
			wantCode := exitFail
			if len(tc.want) == 0 {
				wantCode = exitOK
			}
			if code != wantCode {
				t.Errorf("exit %d, want %d", code, wantCode)
			}
			for name, reason := range tc.want {
				if !slices.ContainsFunc(lines, func(l string) bool {
					return strings.HasPrefix(l, "FAIL "+name+": ") && strings.Contains(l, reason)
				}) {
					t.Errorf("no line starts with %q and contains %q", "FAIL "+name+": ", reason)
				}
			}
			for _, l := range failed(lines) {
				name, _, _ := strings.Cut(strings.TrimPrefix(l, "FAIL "), ": ")
				if _, ok := tc.want[name]; !ok && !slices.ContainsFunc(tc.alsoFail, func(p string) bool { return strings.HasPrefix(name, p) }) {
					t.Errorf("unexpected failure: %s", l)
				}
			}
		})
	}
}

func newSigner(t *testing.T) *wire.Signer {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	s, err := wire.NewSigner(kp)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// writeWant writes the expected answer of the broken responder.
func writeWant(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "want.json")
	if err := os.WriteFile(p, []byte(`{"52:54:00:66:ea:9a": {"IPAddress": "198.18.0.10"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
