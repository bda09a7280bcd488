package natstest

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Child-process servers. A test that must freeze a NATS server (SIGSTOP,
// the way a server hangs in production: its sockets stay open, nothing
// moves) runs it as a child process with [StartProc] or [StartProcCluster]
// and freezes it with [Proc.Freeze]. The binary is built from the
// nats-server module this module depends on, once per machine and version
// (see [Binary]).

var (
	binaryOnce sync.Once
	binaryPath string
	binaryErr  error
)

// Binary returns the path of a nats-server binary built with
// `go build github.com/nats-io/nats-server/v2` at the version in go.mod. It
// is kept in the temporary directory under a name holding the version, so
// that the build (a few seconds) happens once per machine.
func Binary(tb testing.TB) string {
	tb.Helper()
	binaryOnce.Do(func() {
		version := "unknown"
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, d := range bi.Deps {
				if d.Path == "github.com/nats-io/nats-server/v2" {
					version = d.Version
				}
			}
		}
		binaryPath = filepath.Join(os.TempDir(), "natstest-nats-server-"+version)
		if fi, err := os.Stat(binaryPath); err == nil && fi.Mode().IsRegular() && version != "unknown" {
			return
		}
		tmp := fmt.Sprintf("%s.%d.tmp", binaryPath, os.Getpid())
		out, err := exec.Command("go", "build", "-o", tmp, "github.com/nats-io/nats-server/v2").CombinedOutput()
		if err != nil {
			binaryErr = fmt.Errorf("go build nats-server: %v\n%s", err, out)
			return
		}
		binaryErr = os.Rename(tmp, binaryPath)
	})
	if binaryErr != nil {
		tb.Fatalf("natstest: %v", binaryErr)
	}
	return binaryPath
}

// ProcOptions configures a child-process server.
type ProcOptions struct {
	// Name is the server name; default "natstest-proc".
	Name string
	// Port is the client port; 0 picks a free one.
	Port int
	// Cluster, when set, opens a cluster port (ClusterPort, 0 for a free
	// one) and routes to Routes ("nats://127.0.0.1:6222").
	Cluster     bool
	ClusterPort int
	Routes      []string
	// Config is more nats-server configuration text, appended as is (for
	// example "ping_interval: \"1s\"").
	Config string
}

// Proc is a nats-server running as a child process of the test.
type Proc struct {
	Opts        ProcOptions
	Port        int // client port
	ClusterPort int // cluster port, when clustered
	HTTPPort    int // monitoring port

	tb   testing.TB
	dir  string
	cmd  *exec.Cmd
	exit chan struct{} // closed when the process has exited
}

// StartProc starts a child-process server and waits until it accepts
// connections. It is killed when the test ends.
func StartProc(tb testing.TB, o ProcOptions) *Proc {
	tb.Helper()
	bin := Binary(tb)
	if o.Name == "" {
		o.Name = "natstest-proc"
	}
	dir := tb.TempDir()
	p := &Proc{Opts: o, tb: tb, dir: dir}
	port := "-1"
	if o.Port != 0 {
		port = strconv.Itoa(o.Port)
	}
	var conf strings.Builder
	fmt.Fprintf(&conf, "server_name: %q\nlisten: \"127.0.0.1:%s\"\nhttp: \"127.0.0.1:-1\"\nports_file_dir: %q\n", o.Name, port, dir)
	if o.Cluster {
		cport := "-1"
		if o.ClusterPort != 0 {
			cport = strconv.Itoa(o.ClusterPort)
		}
		fmt.Fprintf(&conf, "cluster {\n  name: natstest\n  listen: \"127.0.0.1:%s\"\n", cport)
		if len(o.Routes) > 0 {
			q := make([]string, len(o.Routes))
			for i, r := range o.Routes {
				q[i] = strconv.Quote(r)
			}
			fmt.Fprintf(&conf, "  routes: [%s]\n", strings.Join(q, ", "))
		}
		conf.WriteString("}\n")
	}
	conf.WriteString(o.Config)
	conf.WriteString("\n")
	cfgPath := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(cfgPath, []byte(conf.String()), 0o600); err != nil {
		tb.Fatalf("natstest: %v", err)
	}
	p.cmd = exec.Command(bin, "-c", cfgPath)
	p.cmd.Stdout, p.cmd.Stderr = nil, nil
	if err := p.cmd.Start(); err != nil {
		tb.Fatalf("natstest: start nats-server: %v", err)
	}
	p.exit = make(chan struct{})
	cmd, exit := p.cmd, p.exit
	go func() { _ = cmd.Wait(); close(exit) }()
	tb.Cleanup(func() { p.kill() })
	p.waitReady()
	return p
}

// waitReady reads the ports file and waits until the client port accepts.
func (p *Proc) waitReady() {
	p.tb.Helper()
	deadline := time.Now().Add(ReadyTimeout)
	file := filepath.Join(p.dir, fmt.Sprintf("%s_%d.ports", filepath.Base(Binary(p.tb)), p.cmd.Process.Pid))
	for {
		select {
		case <-p.exit:
			p.tb.Fatalf("natstest: nats-server %s exited at start", p.Opts.Name)
		default:
		}
		if b, err := os.ReadFile(file); err == nil {
			var ports struct{ Nats, Cluster, Monitoring []string }
			if json.Unmarshal(b, &ports) == nil && len(ports.Nats) > 0 {
				p.Port = portOf(ports.Nats[0])
				if len(ports.Cluster) > 0 {
					p.ClusterPort = portOf(ports.Cluster[0])
				}
				if len(ports.Monitoring) > 0 {
					p.HTTPPort = portOf(ports.Monitoring[0])
				}
				if c, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
					_ = c.Close()
					return
				}
			}
		}
		if time.Now().After(deadline) {
			p.tb.Fatalf("natstest: nats-server %s not ready after %v", p.Opts.Name, ReadyTimeout)
		}
		time.Sleep(5 * time.Millisecond) // polling a file; nothing to wait on
	}
}

func portOf(u string) int {
	i := strings.LastIndexByte(u, ':')
	n, _ := strconv.Atoi(u[i+1:])
	return n
}

// Addr returns the client address, "127.0.0.1:port".
func (p *Proc) Addr() string { return "127.0.0.1:" + strconv.Itoa(p.Port) }

// URL returns the client URL.
func (p *Proc) URL() string { return "nats://" + p.Addr() }

// RouteURL returns the cluster URL other servers route to.
func (p *Proc) RouteURL() string { return "nats://127.0.0.1:" + strconv.Itoa(p.ClusterPort) }

// PID returns the process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Freeze stops the process with SIGSTOP: its sockets stay open and nothing
// moves, as when a server hangs.
//
// It returns once every thread of the process has stopped (SIGSTOP is
// delivered asynchronously: without the wait, the server could still answer
// a message sent right after Freeze).
func (p *Proc) Freeze() {
	p.tb.Helper()
	p.signal(syscall.SIGSTOP)
	if err := WaitStopped(p.cmd.Process.Pid, 10*time.Second); err != nil {
		p.tb.Fatalf("natstest: freeze nats-server %s: %v", p.Opts.Name, err)
	}
}

// WaitStopped waits until every thread of process pid is in the stopped
// state ("T" in /proc/<pid>/task/<tid>/stat), as after SIGSTOP, or until
// timeout.
func WaitStopped(pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		stopped, err := allStopped(pid)
		if err != nil {
			return err
		}
		if stopped {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("process %d not stopped after %v", pid, timeout)
		}
		time.Sleep(time.Millisecond) // polling /proc; there is no event to wait on
	}
}

func allStopped(pid int) (bool, error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	for _, t := range tasks {
		b, err := os.ReadFile(dir + "/" + t.Name() + "/stat")
		if err != nil {
			continue // the thread exited
		}
		// The state follows the command name in parentheses, which may
		// itself contain ") ".
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 || i+2 >= len(b) {
			return false, fmt.Errorf("unexpected %s/%s/stat", dir, t.Name())
		}
		if st := b[i+2]; st != 'T' && st != 't' {
			return false, nil
		}
	}
	return true, nil
}

// Thaw continues a frozen process with SIGCONT.
func (p *Proc) Thaw() { p.signal(syscall.SIGCONT) }

func (p *Proc) signal(sig syscall.Signal) {
	p.tb.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.tb.Fatalf("natstest: signal %v to nats-server %s: %v", sig, p.Opts.Name, err)
	}
}

// Kill kills the process (SIGKILL) and waits until it is gone.
func (p *Proc) Kill() { p.kill() }

func (p *Proc) kill() {
	select {
	case <-p.exit:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	_ = p.cmd.Process.Kill()
	<-p.exit
}

// Restart kills the process and starts it again with the same options and
// ports, so that clients and routes reconnect to it.
func (p *Proc) Restart() *Proc {
	p.tb.Helper()
	p.kill()
	o := p.Opts
	o.Port, o.ClusterPort = p.Port, p.ClusterPort
	return StartProc(p.tb, o)
}

// StartProcCluster starts n child-process servers (n >= 1) routed to each
// other, with config appended to each one's configuration, and waits until
// every server has routes to all others.
func StartProcCluster(tb testing.TB, n int, config string) []*Proc {
	tb.Helper()
	if n < 1 {
		tb.Fatalf("natstest: cluster of %d servers", n)
	}
	seed := StartProc(tb, ProcOptions{Name: "natstest-0", Cluster: true, Config: config})
	procs := []*Proc{seed}
	for i := 1; i < n; i++ {
		procs = append(procs, StartProc(tb, ProcOptions{
			Name: fmt.Sprintf("natstest-%d", i), Cluster: true, Routes: []string{seed.RouteURL()}, Config: config,
		}))
	}
	WaitForProcRoutes(tb, procs, ReadyTimeout)
	return procs
}

// WaitForProcRoutes waits until each server has a route to every other
// one, asking each server's monitoring endpoint, or fails the test after
// timeout.
func WaitForProcRoutes(tb testing.TB, procs []*Proc, timeout time.Duration) {
	tb.Helper()
	client := &http.Client{Timeout: time.Second}
	waitRoutes(tb, len(procs), func(i int) int { return procs[i].routes(client) }, timeout)
}

// routes counts the distinct servers p has routes to.
func (p *Proc) routes(client *http.Client) int {
	resp, err := client.Get("http://127.0.0.1:" + strconv.Itoa(p.HTTPPort) + "/routez")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var rz struct {
		Routes []struct {
			RemoteID string `json:"remote_id"`
		} `json:"routes"`
	}
	if json.NewDecoder(resp.Body).Decode(&rz) != nil {
		return 0
	}
	peers := map[string]bool{}
	for _, r := range rz.Routes {
		peers[r.RemoteID] = true
	}
	return len(peers)
}
