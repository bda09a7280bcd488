// Command backendcheck checks a live responder, written in any language,
// against the wire protocol of github.com/tinkerbell/backend over NATS.
//
//	go run github.com/tinkerbell/backend/cmd/backendcheck -nats-url nats://127.0.0.1:4222 \
//	    -mac 52:54:00:66:ea:9a [-want hosts.json] [-unknown-mac 00:00:5e:00:53:01] \
//	    [-error-mac 503=52:54:00:00:00:03] [-signer U...]
//
// It sends lookups to the subject and judges the replies: the canonical
// request and every accepted form of it (data as a JSON string,
// data_base64, the older MacAddress key, no optional attributes) get the
// same answer; the answer is a response event a requester accepts, in the
// canonical encodings (never a base64 MAC address or mask); an unknown MAC
// address gets 404; malformed requests get 400; a lookup by the IP address
// of a -want reservation gets that machine's answer, or 404 or 400 from a
// responder that cannot answer by IP, never another machine's; the error
// codes given with
// -error-mac come back as they should, with consistent NATS micro error
// headers; a reply comes within the time budget of the request
// (Tinkerbell-Timeout-Ms) or not at all; the NATS micro discovery protocol
// ($SRV.PING, $SRV.INFO, $SRV.STATS) answers for the subject, when the
// responder implements it; and replies are signed when -signer is given.
//
// It prints one line per check, PASS, FAIL or SKIP with the reason, and
// exits with 1 if any check failed, 2 on bad flags or when it cannot
// connect, 0 otherwise.
//
// The file given with -want maps MAC addresses to the data of the answers
// expected for them, in any form the wire protocol accepts; an object
// with a "hosts" key holding that map (the format of
// example/python/responder.py) is read too. Its MAC addresses are checked
// like those given with -mac.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run runs the command with args and returns its exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		if err != errHelp {
			fmt.Fprintln(stderr, "backendcheck:", err)
		}
		return exitUsage
	}
	nc, err := cfg.connect()
	if err != nil {
		fmt.Fprintln(stderr, "backendcheck:", err)
		return exitUsage
	}
	defer nc.Close()
	c := &checker{cfg: cfg, nc: nc, out: stdout}
	c.runAll(ctx)
	if c.failed > 0 {
		fmt.Fprintf(stdout, "%d of %d checks failed\n", c.failed, c.total)
		return exitFail
	}
	fmt.Fprintf(stdout, "all %d checks passed (%d skipped)\n", c.total-c.skipped, c.skipped)
	return exitOK
}
