// Package dhcptest runs a dhcpserver.Server on loopback for the tests of
// other packages (metrics, events, the end-to-end tests), the way
// net/http/httptest runs an HTTP server.
package dhcptest

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/tinkerbell/backend/dhcpserver"
)

// Serve serves srv on a new UDP socket on 127.0.0.1 (a random port) and
// returns the socket's address. The server is ready when Serve returns:
// the socket is open. At the end of the test it is shut down (5 s at the
// most) and Serve's return is waited for.
func Serve(tb testing.TB, srv *dhcpserver.Server) *net.UDPAddr {
	tb.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(conn) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	})
	return conn.LocalAddr().(*net.UDPAddr)
}
