// Package natstest starts hermetic, embedded NATS servers for tests: on
// 127.0.0.1, on a random port, checked for readiness and shut down by
// t.Cleanup. It also builds clusters and servers with users, nkeys and
// subject permissions.
//
// For fault tests: [StartProc] and [StartProcCluster] run nats-server as
// child processes (built once from the module's nats-server version, see
// [Binary]) that [Proc.Freeze] stops with SIGSTOP and [Proc.Thaw]
// continues; [NewProxy] is a TCP proxy whose [Proxy.Stall] freezes every
// connection through it, as a hung peer or network would.
package natstest

import (
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// ReadyTimeout bounds how long a server may take to accept connections.
const ReadyTimeout = 10 * time.Second

// Options returns server options for a quiet test server on 127.0.0.1 with
// a random client port. Callers may change them before [Run].
func Options() *server.Options {
	return &server.Options{
		ServerName:            "natstest",
		Host:                  "127.0.0.1",
		Port:                  server.RANDOM_PORT,
		NoLog:                 true,
		NoSigs:                true,
		MaxControlLine:        4096,
		DisableShortFirstPing: true,
	}
}

// Server is a running test server and the options it was started with.
type Server struct {
	*server.Server
	Opts *server.Options
	Port int // the client port it listens on
}

// Run starts a server with opts (nil means [Options]) and waits until it
// accepts connections. The server is shut down when the test ends.
func Run(tb testing.TB, opts *server.Options) *Server {
	tb.Helper()
	if opts == nil {
		opts = Options()
	}
	s, err := server.NewServer(opts)
	if err != nil {
		tb.Fatalf("natstest: new server: %v", err)
	}
	s.Start()
	tb.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	if !s.ReadyForConnections(ReadyTimeout) {
		tb.Fatalf("natstest: server not ready after %v", ReadyTimeout)
	}
	port := 0
	if addr, ok := s.Addr().(*net.TCPAddr); ok {
		port = addr.Port
	}
	return &Server{Server: s, Opts: opts, Port: port}
}

// Restart shuts s down and starts a new server with the same options on the
// same port (so that clients reconnect to it), waiting until it is ready.
// The new server is shut down when the test ends.
func Restart(tb testing.TB, s *Server) *Server {
	tb.Helper()
	Shutdown(s)
	return RunAgain(tb, s)
}

// Shutdown stops s and waits until it is down.
func Shutdown(s *Server) {
	s.Shutdown()
	s.WaitForShutdown()
}

// RunAgain starts a new server with the options of the stopped server s on
// the same port and waits until it is ready.
func RunAgain(tb testing.TB, s *Server) *Server {
	tb.Helper()
	opts := s.Opts.Clone()
	if s.Port != 0 {
		opts.Port = s.Port
	}
	// The port was just released; another listener could take it in
	// between, which would make the test fail loudly rather than hang.
	return Run(tb, opts)
}

// URL returns the client URL of s.
func URL(s *Server) string { return s.ClientURL() }

// Connect connects to s over TCP with opts. The connection is closed when
// the test ends.
func Connect(tb testing.TB, s *Server, opts ...nats.Option) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		tb.Fatalf("natstest: connect: %v", err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// ConnectInProcess connects to s through an in-process pipe, bypassing
// TCP. The connection is closed when the test ends.
func ConnectInProcess(tb testing.TB, s *Server, opts ...nats.Option) *nats.Conn {
	tb.Helper()
	return Connect(tb, s, append([]nats.Option{nats.InProcessServer(s.Server)}, opts...)...)
}

// RunCluster starts n servers (n >= 1) routed to each other as one cluster
// and waits until every server has routes to all others.
func RunCluster(tb testing.TB, n int) []*Server {
	tb.Helper()
	if n < 1 {
		tb.Fatalf("natstest: cluster of %d servers", n)
	}
	seedOpts := clusterOptions(0)
	seed := Run(tb, seedOpts)
	servers := []*Server{seed}
	seedRoute := server.RoutesFromStr("nats://127.0.0.1:" + strconv.Itoa(seed.ClusterAddr().Port))
	for i := 1; i < n; i++ {
		o := clusterOptions(i)
		o.Routes = seedRoute
		servers = append(servers, Run(tb, o))
	}
	WaitForRoutes(tb, servers, ReadyTimeout)
	return servers
}

func clusterOptions(i int) *server.Options {
	o := Options()
	o.ServerName = fmt.Sprintf("natstest-%d", i)
	o.Cluster = server.ClusterOpts{
		Name: "natstest",
		Host: "127.0.0.1",
		Port: server.RANDOM_PORT,
	}
	return o
}

// WaitForRoutes waits until each server has a route to every other one, or
// fails the test after timeout. It polls, since the server offers no
// notification for it.
func WaitForRoutes(tb testing.TB, servers []*Server, timeout time.Duration) {
	tb.Helper()
	waitRoutes(tb, len(servers), func(i int) int { return routedPeers(servers[i].Server) }, timeout)
}

// waitRoutes polls routes(i), the number of peers server i of n has a route
// to, until every server reaches n-1, or fails tb after timeout.
func waitRoutes(tb testing.TB, n int, routes func(i int) int, timeout time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok := true
		for i := range n {
			if routes(i) < n-1 {
				ok = false
				break
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("natstest: cluster routes not up after %v", timeout)
		}
		time.Sleep(5 * time.Millisecond) // polling servers; they offer no notification
	}
}

// routedPeers counts the distinct servers s has routes to.
func routedPeers(s *server.Server) int {
	rz, err := s.Routez(nil)
	if err != nil {
		return 0
	}
	peers := map[string]bool{}
	for _, r := range rz.Routes {
		peers[r.RemoteID] = true
	}
	return len(peers)
}

// User is an account of a server built by [RunWithUsers]: a user with a
// password, or (when NKey is set) an nkey user. Publish and Subscribe, when
// non-nil, are the only subjects the user may publish or subscribe to.
type User struct {
	Name      string // user name, for password users
	Password  string // password, for password users
	NKey      string // public nkey ("U..."), for nkey users
	Publish   []string
	Subscribe []string
	// AllowResponses lets the user publish to the reply subject of a
	// request it received, without Publish permission on _INBOX.>.
	AllowResponses bool
}

func (u User) permissions() *server.Permissions {
	if u.Publish == nil && u.Subscribe == nil && !u.AllowResponses {
		return nil
	}
	p := &server.Permissions{}
	if u.Publish != nil {
		p.Publish = &server.SubjectPermission{Allow: u.Publish}
	}
	if u.Subscribe != nil {
		p.Subscribe = &server.SubjectPermission{Allow: u.Subscribe}
	}
	if u.AllowResponses {
		p.Response = &server.ResponsePermission{MaxMsgs: 1, Expires: time.Minute}
	}
	return p
}

// RunWithUsers starts a server that requires authentication by one of
// users, with their permissions.
func RunWithUsers(tb testing.TB, users []User) *Server {
	tb.Helper()
	o := Options()
	for _, u := range users {
		if u.NKey != "" {
			o.Nkeys = append(o.Nkeys, &server.NkeyUser{Nkey: u.NKey, Permissions: u.permissions()})
			continue
		}
		o.Users = append(o.Users, &server.User{Username: u.Name, Password: u.Password, Permissions: u.permissions()})
	}
	return Run(tb, o)
}

// NewUserNKey creates an nkey user key pair and returns its public key and
// seed. The seed is what a client keeps secret (nats.Nkey or an nkey seed
// file).
func NewUserNKey(tb testing.TB) (public string, seed []byte) {
	tb.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		tb.Fatalf("natstest: create nkey: %v", err)
	}
	public, err = kp.PublicKey()
	if err != nil {
		tb.Fatalf("natstest: nkey public key: %v", err)
	}
	seed, err = kp.Seed()
	if err != nil {
		tb.Fatalf("natstest: nkey seed: %v", err)
	}
	return public, seed
}

// NKeyOption returns a connect option that authenticates with the nkey
// seed.
func NKeyOption(tb testing.TB, seed []byte) nats.Option {
	tb.Helper()
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		tb.Fatalf("natstest: nkey from seed: %v", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		tb.Fatalf("natstest: nkey public key: %v", err)
	}
	return nats.Nkey(pub, func(nonce []byte) ([]byte, error) { return kp.Sign(nonce) })
}
