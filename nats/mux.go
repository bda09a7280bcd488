package nats

import (
	"errors"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/nats-io/nats.go"

	"github.com/tinkerbell/backend"
)

// The requester's plumbing keeps every call into nats.go that can block
// (they all take the connection's lock, which nats.go's flusher holds
// during a socket write) off the caller's goroutine:
//
//   - Replies arrive on one subscription per Backend, <inbox>.>, and are
//     handed to the waiting lookup by a map lookup and a non-blocking
//     channel send in the subscription's callback.
//   - Requests are published by one publisher goroutine per Backend, started
//     when there is work and gone when the queue is empty. A lookup queues a
//     request and waits for its reply or its deadline; when the connection is
//     stuck, the publisher is stuck, the bounded queue fills, and lookups
//     fail at their deadline (or at once when the queue is full) instead of
//     queueing on the connection's lock.

// maxQueued bounds the requests waiting for the publisher. Under normal
// load the queue holds a handful; it fills only when the connection is
// stuck, and then every queued request is one whose lookup will fail.
const maxQueued = 4096

// call is the state of one lookup that the subscription callback and the
// publisher share with it. Pooled; refs counts its holders (the lookup and
// every queued publication), and the last one returns it to the pool.
type call struct {
	token uint64
	reply []byte // reply subject of the first try: <inbox>.<token>
	buf   []byte // the request event
	ch    chan delivery
	timer *time.Timer
	done  atomic.Bool // the lookup returned: do not publish for it
	refs  atomic.Int32
}

// delivery is a reply (or a failure to publish) for one try of a call.
type delivery struct {
	msg *nats.Msg
	try int   // 0 for the first request of the lookup, n for the n-th resend
	err error // publishing failed
}

// publication is a request waiting for the publisher.
type publication struct {
	c        *call
	try      int
	deadline time.Time // the end of the attempt: its budget header
}

// mux is the reply subscription and the publisher of one Backend.
type mux struct {
	conn    *nats.Conn
	subject string
	inbox   string // <prefix>.<unique>, without the trailing dot
	sub     *nats.Subscription

	mu      sync.Mutex
	waiting map[uint64]*call
	closed  bool

	pmu     sync.Mutex
	queue   []publication
	spare   []publication
	running bool // a publisher goroutine is running
	msg     nats.Msg
	tmo     []string // the value of msg's HeaderTimeout header
	lastMS  int64    // the budget tmo[0] holds

	next  atomic.Uint64 // the last token handed out
	calls sync.Pool     // of *call
}

func newMux(nc *nats.Conn, subject, inbox string) (*mux, error) {
	m := &mux{conn: nc, subject: subject, inbox: inbox, waiting: map[uint64]*call{}, tmo: make([]string, 1), lastMS: -1}
	m.msg.Subject = subject
	m.msg.Header = nats.Header{
		backend.HeaderContentType: {backend.ContentType},
		backend.HeaderTimeout:     m.tmo,
	}
	m.calls.New = func() any {
		return &call{buf: make([]byte, 0, 512), reply: make([]byte, 0, 64), ch: make(chan delivery, 8), timer: stoppedTimer()}
	}
	sub, err := nc.Subscribe(inbox+".>", m.deliver)
	if err != nil {
		return nil, err
	}
	m.sub = sub
	return m, nil
}

func stoppedTimer() *time.Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}

// get returns a registered call with a fresh token; the caller holds one
// reference. It fails after close.
func (m *mux) get() (*call, error) {
	c := m.calls.Get().(*call)
	c.refs.Store(1)
	c.done.Store(false)
	c.token = m.next.Add(1)
	c.reply = strconv.AppendUint(append(append(c.reply[:0], m.inbox...), '.'), c.token, 10)
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		m.calls.Put(c)
		return nil, errClosed
	}
	m.waiting[c.token] = c
	m.mu.Unlock()
	return c, nil
}

var errClosed = errors.New("nats: Backend closed")

// finish unregisters c, after which no reply reaches it, and drops the
// lookup's reference.
func (m *mux) finish(c *call) {
	m.mu.Lock()
	delete(m.waiting, c.token)
	m.mu.Unlock()
	c.done.Store(true)
	c.timer.Stop()
	m.release(c)
}

func (m *mux) release(c *call) {
	if c.refs.Add(-1) != 0 {
		return
	}
	for {
		select {
		case <-c.ch:
			continue
		default:
		}
		break
	}
	if cap(c.buf) > 4<<10 {
		return // an absurd request grew it; let it go
	}
	m.calls.Put(c)
}

// deliver is the subscription callback: it hands a reply to its lookup.
func (m *mux) deliver(msg *nats.Msg) {
	rest, ok := cutPrefix(msg.Subject, m.inbox)
	if !ok {
		return
	}
	token, try, ok := parseToken(rest)
	if !ok {
		return
	}
	m.mu.Lock()
	if c := m.waiting[token]; c != nil {
		select {
		case c.ch <- delivery{msg: msg, try: try}:
		default: // a lookup that already has more replies than it reads
		}
	}
	m.mu.Unlock()
}

func cutPrefix(s, prefix string) (string, bool) {
	if len(s) <= len(prefix)+1 || s[:len(prefix)] != prefix || s[len(prefix)] != '.' {
		return "", false
	}
	return s[len(prefix)+1:], true
}

// parseToken parses "<token>" or "<token>.<try>".
func parseToken(s string) (token uint64, try int, ok bool) {
	i := 0
	for ; i < len(s) && s[i] != '.'; i++ {
	}
	token, err := strconv.ParseUint(s[:i], 10, 64)
	if err != nil {
		return 0, 0, false
	}
	if i == len(s) {
		return token, 0, true
	}
	n, err := strconv.Atoi(s[i+1:])
	if err != nil || n <= 0 {
		return 0, 0, false
	}
	return token, n, true
}

// send queues try number try of c, with the attempt's deadline. It never
// blocks; it fails when the queue is full.
func (m *mux) send(c *call, try int, deadline time.Time) error {
	m.pmu.Lock()
	if len(m.queue) >= maxQueued {
		m.pmu.Unlock()
		return errQueueFull
	}
	c.refs.Add(1)
	m.queue = append(m.queue, publication{c: c, try: try, deadline: deadline})
	start := !m.running
	m.running = true
	m.pmu.Unlock()
	if start {
		go m.publish()
	}
	return nil
}

var errQueueFull = errors.New("nats: too many requests waiting for the connection")

// publish is the publisher goroutine: it publishes the queue until it is
// empty, then exits.
func (m *mux) publish() {
	// Let the goroutines that are ready to run go first: lookups started
	// by the same burst of work (a batch of DHCP packets) then queue
	// their requests too, and nats.go writes them all in one system call
	// instead of one each. With nothing else ready this returns at once.
	runtime.Gosched()
	for {
		m.pmu.Lock()
		if len(m.queue) == 0 {
			m.running = false
			m.pmu.Unlock()
			return
		}
		batch := m.queue
		m.queue, m.spare = m.spare[:0], nil
		m.pmu.Unlock()
		for i := range batch {
			m.publishOne(&batch[i])
			batch[i] = publication{}
		}
		m.pmu.Lock()
		m.spare = batch[:0]
		m.pmu.Unlock()
	}
}

func (m *mux) publishOne(p *publication) {
	c := p.c
	defer m.release(c)
	if c.done.Load() {
		return // the lookup is over: work only for lookups that still wait
	}
	left := time.Until(p.deadline)
	if left < time.Millisecond {
		return // the lookup's timers will see the attempt end
	}
	if ms := left.Milliseconds(); ms != m.lastMS {
		// Consecutive budgets are mostly equal: reuse the text.
		m.lastMS, m.tmo[0] = ms, strconv.FormatInt(ms, 10)
	}
	// The reply subject's text lives in c, which outlives this call;
	// nats.go copies it into its buffer.
	m.msg.Data, m.msg.Reply = c.buf, unsafe.String(unsafe.SliceData(c.reply), len(c.reply))
	if p.try > 0 {
		m.msg.Reply = string(c.reply) + "." + strconv.Itoa(p.try)
	}
	err := m.conn.PublishMsg(&m.msg)
	m.msg.Data, m.msg.Reply = nil, ""
	if err != nil {
		m.mu.Lock()
		if m.waiting[c.token] == c {
			select {
			case c.ch <- delivery{try: p.try, err: err}:
			default:
			}
		}
		m.mu.Unlock()
	}
}

// close unsubscribes; lookups after it fail.
func (m *mux) close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.mu.Unlock()
	err := m.sub.Unsubscribe()
	if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrBadSubscription) {
		err = nil
	}
	return err
}

// noResponders reports whether msg is the NATS server's "no responders"
// status for a request.
func noResponders(msg *nats.Msg) bool {
	return len(msg.Data) == 0 && msg.Header.Get("Status") == "503"
}
