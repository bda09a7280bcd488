package events_test

import (
	"io"
	"net"
	"sync"
	"testing"
)

// stallProxy forwards TCP between a client and a server until stall is
// called; then it stops reading from the client, so that the client's
// writes eventually block.
type stallProxy struct {
	ln      net.Listener
	mu      sync.Mutex
	stalled chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
	conns   []net.Conn
}

func newStallProxy(t *testing.T, target string) *stallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{ln: ln, stalled: make(chan struct{})}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			p.wg.Go(func() { _, _ = io.Copy(c, s) })
			p.wg.Go(func() { p.copyUntilStalled(s, c) })
		}
	})
	t.Cleanup(p.close)
	return p
}

func (p *stallProxy) addr() string { return p.ln.Addr().String() }

func (p *stallProxy) stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.stalled:
	default:
		close(p.stalled)
	}
}

// release lets a stalled copy end; the connections close.
func (p *stallProxy) release() { p.close() }

func (p *stallProxy) copyUntilStalled(dst, src net.Conn) {
	buf := make([]byte, 1024)
	for {
		select {
		case <-p.stalled:
			return // stop reading from src: its writes back up
		default:
		}
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *stallProxy) close() {
	p.once.Do(func() {
		p.ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
}
