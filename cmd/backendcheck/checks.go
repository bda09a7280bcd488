package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/internal/excerpt"
	"github.com/tinkerbell/backend/internal/wire"
)

// traceparent is the trace context the checks send; a reply that carries
// one must continue its trace.
const (
	traceID     = "4bf92f3577b34da6a3ce929d0e0e4736"
	traceparent = "00-" + traceID + "-00f067aa0ba902b7-01"
)

// checker runs the checks and prints their lines.
type checker struct {
	cfg *config
	nc  *nats.Conn
	out io.Writer
	ids wire.IDs

	total, failed, skipped int
	signed, unsigned       int // replies with and without a valid signature
	sigProblems            []string
}

func (c *checker) line(status, name, format string, args ...any) {
	c.total++
	switch status {
	case "FAIL":
		c.failed++
	case "SKIP":
		c.skipped++
	}
	fmt.Fprintf(c.out, "%s %s: %s\n", status, name, fmt.Sprintf(format, args...))
}

// result reports name as passed with detail, or failed with problems.
func (c *checker) result(name string, problems []string, detail string) {
	if len(problems) > 0 {
		c.line("FAIL", name, "%s", strings.Join(problems, "; "))
		return
	}
	c.line("PASS", name, "%s", detail)
}

func (c *checker) runAll(ctx context.Context) {
	// Without a responder every check would fail the same way: say it once.
	if rep := c.send(ctx, c.canonical(c.cfg.unknown), c.cfg.timeout); errors.Is(rep.err, nats.ErrNoResponders) {
		c.line("FAIL", "responder", "no responder listens on %s", c.cfg.subject)
		return
	}
	answers := map[string]backend.Message{}
	for _, mac := range c.cfg.macs {
		if ctx.Err() != nil {
			return
		}
		m, problems, r := c.ask(ctx, mac, c.canonical(mac), 0)
		if len(problems) == 0 {
			answers[mac.String()] = m
		}
		c.result("answer "+mac.String(), problems, fmt.Sprintf("%v in %v", m.IPAddress, r.elapsed.Round(10*time.Microsecond)))
	}
	if len(c.cfg.macs) == 0 {
		c.line("SKIP", "answer", "no -mac or -want given: only error replies are checked")
	}

	// The accepted forms of a request get the answer of the canonical one.
	probe, code := c.cfg.unknown, backend.CodeNotFound
	if len(c.cfg.macs) > 0 {
		probe, code = c.cfg.macs[0], backend.CodeOK
	}
	for _, f := range forms {
		if ctx.Err() != nil {
			return
		}
		m, problems, _ := c.ask(ctx, probe, c.form(probe, f.edit), code)
		if want, ok := answers[probe.String()]; ok && len(problems) == 0 {
			if d := diff(want, m); d != "" {
				problems = append(problems, "answer differs from the canonical request's: "+d)
			}
		}
		c.result("form "+f.name, problems, fmt.Sprintf("%s answered as the canonical request (code %d)", probe, code))
	}

	_, problems, _ := c.ask(ctx, c.cfg.unknown, c.canonical(c.cfg.unknown), backend.CodeNotFound)
	c.result("not-found "+c.cfg.unknown.String(), problems, "404")

	for _, b := range malformed {
		if ctx.Err() != nil {
			return
		}
		_, problems, _ := c.ask(ctx, nil, c.raw(b.body), backend.CodeBadRequest)
		c.result("bad-request "+b.name, problems, "400")
	}

	for _, code := range []int{backend.CodeInternal, backend.CodeUnavailable} {
		if _, ok := c.cfg.errorMAC[code]; !ok {
			c.line("SKIP", "error-code "+strconv.Itoa(code), "no -error-mac %d=MAC given", code)
		}
	}
	for code, mac := range sortedCodes(c.cfg.errorMAC) {
		_, problems, _ := c.ask(ctx, mac, c.canonical(mac), code)
		c.result(fmt.Sprintf("error-code %d", code), problems, fmt.Sprintf("%s answered with %d", mac, code))
	}

	c.checkByIP(ctx)
	c.checkBudget(ctx, probe, code)
	c.checkDiscovery(ctx)
	c.checkSignatures()
}

// request is a request to send: the event's id and the message.
type request struct {
	id     string
	msg    *nats.Msg
	budget time.Duration // the budget header sent, 0 for none
}

func (c *checker) header(budget time.Duration) nats.Header {
	h := nats.Header{backend.HeaderContentType: {backend.ContentType}}
	if budget > 0 {
		h.Set(backend.HeaderTimeout, strconv.FormatInt(budget.Milliseconds(), 10))
	}
	return h
}

// canonical is the request a Go requester sends.
func (c *checker) canonical(mac net.HardwareAddr) request {
	id := c.ids.Next()
	a := wire.Attrs{ID: id, Source: "/backendcheck", Type: backend.RequestEventType, Time: time.Now(), Traceparent: traceparent}
	body := wire.AppendRequest(nil, &a, nil, &backend.DHCPRequest{MACAddress: mac, Traceparent: traceparent})
	return request{id: id, budget: c.cfg.timeout, msg: &nats.Msg{Subject: c.cfg.subject, Header: c.header(c.cfg.timeout), Data: body}}
}

// event is a request event as a map, to be edited into other forms.
func (c *checker) event(mac net.HardwareAddr) map[string]any {
	return map[string]any{
		"specversion": "1.0", "id": c.ids.Next(), "source": "/backendcheck", "type": backend.RequestEventType,
		"time": time.Now().UTC().Format(time.RFC3339Nano), "datacontenttype": "application/json",
		"data": map[string]any{"MACAddress": mac.String()},
	}
}

// forms are the accepted forms of a request, as edits of the event.
var forms = []struct {
	name string
	edit func(ev map[string]any, h nats.Header)
}{
	{"data-as-string", func(ev map[string]any, _ nats.Header) {
		b, _ := json.Marshal(ev["data"])
		ev["data"] = string(b)
	}},
	{"data_base64", func(ev map[string]any, _ nats.Header) {
		b, _ := json.Marshal(ev["data"])
		ev["data_base64"] = base64.StdEncoding.EncodeToString(b)
		delete(ev, "data")
	}},
	{"MacAddress-key", func(ev map[string]any, _ nats.Header) {
		d := ev["data"].(map[string]any)
		d["MacAddress"] = d["MACAddress"]
		delete(d, "MACAddress")
	}},
	{"minimal", func(ev map[string]any, h nats.Header) {
		delete(ev, "time")
		delete(ev, "datacontenttype")
		h.Del(backend.HeaderTimeout)
	}},
}

func (c *checker) form(mac net.HardwareAddr, edit func(map[string]any, nats.Header)) request {
	ev := c.event(mac)
	h := c.header(c.cfg.timeout)
	edit(ev, h)
	b, _ := json.Marshal(ev)
	return request{id: ev["id"].(string), budget: c.cfg.timeout, msg: &nats.Msg{Subject: c.cfg.subject, Header: h, Data: b}}
}

func (c *checker) raw(body string) request {
	return request{budget: c.cfg.timeout, msg: &nats.Msg{Subject: c.cfg.subject, Header: c.header(c.cfg.timeout), Data: []byte(body)}}
}

const reqHead = `{"specversion":"1.0","id":"bad-1","source":"/backendcheck","type":"org.tinkerbell.dhcp.backend.request"`

// malformed are requests that must be answered with 400.
var malformed = []struct{ name, body string }{
	{"empty", ``},
	{"not-json", `{"specversion":"1.0","id":`},
	{"json-array", `[]`},
	{"no-specversion", `{"id":"bad-1","source":"/backendcheck","type":"org.tinkerbell.dhcp.backend.request","data":{"MACAddress":"52:54:00:66:ea:9a"}}`},
	{"specversion-0.3", `{"specversion":"0.3","id":"bad-1","source":"/backendcheck","type":"org.tinkerbell.dhcp.backend.request","data":{"MACAddress":"52:54:00:66:ea:9a"}}`},
	{"no-id", `{"specversion":"1.0","source":"/backendcheck","type":"org.tinkerbell.dhcp.backend.request","data":{"MACAddress":"52:54:00:66:ea:9a"}}`},
	{"no-source", `{"specversion":"1.0","id":"bad-1","type":"org.tinkerbell.dhcp.backend.request","data":{"MACAddress":"52:54:00:66:ea:9a"}}`},
	{"response-type", `{"specversion":"1.0","id":"bad-1","source":"/backendcheck","type":"org.tinkerbell.dhcp.backend.response","data":{"MACAddress":"52:54:00:66:ea:9a"}}`},
	{"no-data", reqHead + `}`},
	{"data-not-object", reqHead + `,"data":42}`},
	{"no-mac", reqHead + `,"data":{}}`},
	{"mac-not-a-mac", reqHead + `,"data":{"MACAddress":"not-a-mac"}}`},
	{"mac-a-number", reqHead + `,"data":{"MACAddress":42}}`},
}

// reply is what came back for a request.
type reply struct {
	msg     *nats.Msg
	err     error
	elapsed time.Duration
}

func (c *checker) send(ctx context.Context, r request, wait time.Duration) reply {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	start := time.Now()
	msg, err := c.nc.RequestMsgWithContext(ctx, r.msg)
	return reply{msg: msg, err: err, elapsed: time.Since(start)}
}

// ask sends r and judges the reply: it must be a valid response event with
// Error.Code wantCode (and, for 0, the answer for mac).
func (c *checker) ask(ctx context.Context, mac net.HardwareAddr, r request, wantCode int) (backend.Message, []string, reply) {
	rep := c.send(ctx, r, c.cfg.timeout)
	m, problems := c.judge(r, rep, mac, wantCode)
	return m, problems, rep
}

func (c *checker) judge(r request, rep reply, mac net.HardwareAddr, wantCode int) (backend.Message, []string) {
	switch {
	case errors.Is(rep.err, nats.ErrNoResponders):
		return backend.Message{}, []string{"no responder listens on " + c.cfg.subject}
	case errors.Is(rep.err, context.DeadlineExceeded), errors.Is(rep.err, nats.ErrTimeout):
		return backend.Message{}, []string{fmt.Sprintf("no reply within %v", c.cfg.timeout)}
	case rep.err != nil:
		return backend.Message{}, []string{rep.err.Error()}
	}
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	msg := rep.msg
	if ct := msg.Header.Get(backend.HeaderContentType); ct != backend.ContentType {
		add("header Content-Type is %q, want %q", excerpt.Short(ct), backend.ContentType)
	}
	ev, err := wire.Decode(msg.Data, "")
	if err != nil {
		add("the reply is not a valid CloudEvent: %v (reply %s)", err, excerpt.Quote(msg.Data))
		return backend.Message{}, problems
	}
	if ev.Type != backend.ResponseEventType {
		add("event type is %q, want %q", excerpt.Short(ev.Type), backend.ResponseEventType)
	}
	if ev.Traceparent != "" && !strings.Contains(ev.Traceparent, traceID) && r.id != "" && strings.Contains(string(r.msg.Data), traceparent) {
		add("the reply's traceparent %q does not continue the request's trace %s", excerpt.Short(ev.Traceparent), traceID)
	}
	problems = append(problems, encodings(ev.Data)...)
	var m backend.Message
	if err := m.UnmarshalJSON(ev.Data); err != nil {
		add("a requester rejects the reply's data: %v", err)
		return m, problems
	}
	if m.Error.Code != wantCode {
		add("Error.Code is %d (%q), want %d", m.Error.Code, excerpt.Short(m.Error.Message), wantCode)
	}
	hc := msg.Header.Get(backend.HeaderServiceErrorCode)
	switch {
	case m.Error.Code == backend.CodeOK && hc != "":
		add("a success reply carries the error header %s: %q", backend.HeaderServiceErrorCode, excerpt.Short(hc))
	case m.Error.Code != backend.CodeOK && hc != "" && hc != strconv.Itoa(m.Error.Code):
		add("header %s is %q but Error.Code is %d", backend.HeaderServiceErrorCode, excerpt.Short(hc), m.Error.Code)
	}
	if m.Error.Code == backend.CodeOK && wantCode == backend.CodeOK && mac != nil {
		if len(m.MACAddress) != 0 && !bytes.Equal(m.MACAddress, mac) {
			add("the answer is for %s, the question was %s", m.MACAddress, mac)
		}
		if want, ok := c.cfg.want[mac.String()]; ok {
			got := m
			if len(got.MACAddress) == 0 {
				got.MACAddress = mac
			}
			if d := diff(want, got); d != "" {
				add("wrong answer: %s", d)
			}
		}
	}
	if r.id != "" {
		c.verify(r.id, ev)
	}
	return m, problems
}

// encodings reports values in data that a requester accepts but that must
// never be sent: MAC addresses and masks in base64, as encoding/json writes
// net.HardwareAddr and net.IPMask.
func encodings(data []byte) []string {
	var top map[string]json.RawMessage
	if json.Unmarshal(data, &top) != nil {
		return nil // reported by the strict decoder
	}
	objs := []map[string]json.RawMessage{top}
	for k, v := range top {
		if strings.EqualFold(k, "DHCP") {
			var in map[string]json.RawMessage
			if json.Unmarshal(v, &in) == nil {
				objs = append(objs, in)
			}
		}
	}
	var out []string
	for _, o := range objs {
		for k, v := range o {
			var s string
			if json.Unmarshal(v, &s) != nil || s == "" {
				continue
			}
			switch {
			case strings.EqualFold(k, "MACAddress"):
				if _, err := net.ParseMAC(s); err != nil || !strings.Contains(s, ":") {
					out = append(out, fmt.Sprintf("MACAddress is %q, not in the form aa:bb:cc:dd:ee:ff (base64, as encoding/json writes a net.HardwareAddr?)", excerpt.Short(s)))
				}
			case strings.EqualFold(k, "SubnetMask"):
				if a, err := netip.ParseAddr(s); err != nil || !a.Is4() {
					out = append(out, fmt.Sprintf("SubnetMask is %q, not a dotted quad (base64, as encoding/json writes a net.IPMask?)", excerpt.Short(s)))
				}
			}
		}
	}
	return out
}

// diff compares two answers field by field in their canonical wire form.
func diff(want, got backend.Message) string {
	var w, g map[string]json.RawMessage
	_ = json.Unmarshal(want.AppendJSON(nil), &w)
	_ = json.Unmarshal(got.AppendJSON(nil), &g)
	var out []string
	for _, k := range slices.Sorted(maps.Keys(w)) {
		if !bytes.Equal(w[k], g[k]) {
			out = append(out, fmt.Sprintf("%s = %s, want %s", k, g[k], w[k]))
		}
	}
	return strings.Join(out, ", ")
}

// unknownIP is an address no reservation has: TEST-NET-1 (RFC 5737).
var unknownIP = netip.MustParseAddr("192.0.2.1")

// checkByIP looks up the addresses of the -want reservations by IP: the
// answer is that machine's, or 404 or 400 from a responder that cannot
// answer by IP; never another machine.
func (c *checker) checkByIP(ctx context.Context) {
	n := 0
	for _, mac := range c.cfg.macs {
		want, ok := c.cfg.want[mac.String()]
		if !ok || !want.IPAddress.IsValid() {
			continue
		}
		n++
		ip := want.IPAddress
		r := c.byIP(ip)
		rep := c.send(ctx, r, c.cfg.timeout)
		m, problems := c.judge(r, rep, mac, backend.CodeOK)
		name := "by-ip " + ip.String()
		switch code := m.Error.Code; {
		case rep.err == nil && (code == backend.CodeNotFound || code == backend.CodeBadRequest):
			_, problems = c.judge(r, rep, nil, code)
			c.result(name, problems, fmt.Sprintf("does not answer by IP (%d): allowed", code))
		case len(problems) == 0 && len(m.MACAddress) == 0:
			c.line("FAIL", name, "the answer by IP names no MACAddress: the DHCP server cannot tell which machine it is")
		default:
			c.result(name, problems, fmt.Sprintf("answered with %s's reservation", mac))
		}
	}
	if n == 0 {
		c.line("SKIP", "by-ip", "no -want reservation with an IPAddress")
		return
	}
	r := c.byIP(unknownIP)
	rep := c.send(ctx, r, c.cfg.timeout)
	m, problems := c.judge(r, rep, nil, backend.CodeNotFound)
	if rep.err == nil && m.Error.Code == backend.CodeBadRequest {
		_, problems = c.judge(r, rep, nil, backend.CodeBadRequest)
	}
	c.result("by-ip unknown "+unknownIP.String(), problems, strconv.Itoa(m.Error.Code))
}

// byIP is the request of a lookup by IP address.
func (c *checker) byIP(ip netip.Addr) request {
	id := c.ids.Next()
	a := wire.Attrs{ID: id, Source: "/backendcheck", Type: backend.RequestEventType, Time: time.Now()}
	body := wire.AppendRequest(nil, &a, nil, &backend.DHCPRequest{IPAddress: ip})
	return request{id: id, budget: c.cfg.timeout, msg: &nats.Msg{Subject: c.cfg.subject, Header: c.header(c.cfg.timeout), Data: body}}
}

// checkBudget sends a request with a short budget: the reply must come
// within it (and the allowance for the trip), or not at all.
func (c *checker) checkBudget(ctx context.Context, mac net.HardwareAddr, code int) {
	name := fmt.Sprintf("budget %v", c.cfg.budget)
	r := c.canonical(mac)
	r.msg.Header.Set(backend.HeaderTimeout, strconv.FormatInt(c.cfg.budget.Milliseconds(), 10))
	limit := c.cfg.budget + c.cfg.overrun
	rep := c.send(ctx, r, limit+c.cfg.timeout)
	switch {
	case rep.err != nil && (errors.Is(rep.err, context.DeadlineExceeded) || errors.Is(rep.err, nats.ErrTimeout)):
		c.line("PASS", name, "no reply (allowed: the requester has given up)")
	case rep.err == nil && rep.elapsed > limit:
		c.line("FAIL", name, "the reply came after %v, past the request's budget of %v (%s: %d ms): the requester had given up; answer within the budget or not at all",
			rep.elapsed.Round(time.Millisecond), c.cfg.budget, backend.HeaderTimeout, c.cfg.budget.Milliseconds())
	default:
		_, problems := c.judge(r, rep, mac, code)
		if len(problems) > 0 && rep.err == nil {
			// A responder may give up with 503 instead of answering.
			if _, p503 := c.judge(r, rep, mac, backend.CodeUnavailable); len(p503) == 0 {
				problems = nil
			}
		}
		c.result(name, problems, fmt.Sprintf("reply in %v", rep.elapsed.Round(10*time.Microsecond)))
	}
}

// checkDiscovery checks the NATS micro discovery protocol, when a service
// on $SRV serves the subject.
func (c *checker) checkDiscovery(ctx context.Context) {
	var infos []micro.Info
	var problems []string
	for _, b := range c.collect(ctx, "$SRV.INFO") {
		var in micro.Info
		if err := json.Unmarshal(b, &in); err != nil {
			continue // another kind of service
		}
		for _, e := range in.Endpoints {
			if e.Subject == c.cfg.subject {
				if in.Type != micro.InfoResponseType {
					problems = append(problems, fmt.Sprintf("%s: type is %q, want %q", in.Name, excerpt.Short(in.Type), micro.InfoResponseType))
				}
				if e.QueueGroup != backend.DefaultQueue {
					problems = append(problems, fmt.Sprintf("%s: endpoint queue group is %q, want %q (unless configured)", in.Name, excerpt.Short(e.QueueGroup), backend.DefaultQueue))
				}
				infos = append(infos, in)
				break
			}
		}
	}
	if len(infos) == 0 {
		c.line("SKIP", "discovery", "no NATS micro service on $SRV.INFO serves %s (optional)", c.cfg.subject)
		return
	}
	c.result("discovery info", problems, fmt.Sprintf("%d instance(s) of %q serve %s", len(infos), infos[0].Name, c.cfg.subject))

	for _, in := range infos {
		id := in.Name + " " + in.ID
		problems = nil
		pings := c.collect(ctx, "$SRV.PING."+in.Name+"."+in.ID)
		var p micro.Ping
		switch {
		case len(pings) == 0:
			problems = append(problems, "no reply to $SRV.PING."+in.Name+"."+in.ID)
		case json.Unmarshal(pings[0], &p) != nil || p.Type != micro.PingResponseType || p.ID != in.ID:
			problems = append(problems, fmt.Sprintf("bad ping reply %s", excerpt.Quote(pings[0])))
		}
		c.result("discovery ping "+id, problems, "answered")

		problems = nil
		stats := c.collect(ctx, "$SRV.STATS."+in.Name+"."+in.ID)
		var st micro.Stats
		requests := -1
		switch {
		case len(stats) == 0:
			problems = append(problems, "no reply to $SRV.STATS."+in.Name+"."+in.ID)
		case json.Unmarshal(stats[0], &st) != nil || st.Type != micro.StatsResponseType:
			problems = append(problems, fmt.Sprintf("bad stats reply %s", excerpt.Quote(stats[0])))
		default:
			for _, e := range st.Endpoints {
				if e != nil && e.Subject == c.cfg.subject {
					requests = e.NumRequests
				}
			}
			if requests < 0 {
				problems = append(problems, "stats list no endpoint for "+c.cfg.subject)
			}
		}
		c.result("discovery stats "+id, problems, fmt.Sprintf("%d requests counted", requests))
	}
}

// collect sends an empty request to subject and gathers the replies that
// arrive within the discovery wait.
func (c *checker) collect(ctx context.Context, subject string) [][]byte {
	inbox := c.nc.NewRespInbox()
	sub, err := c.nc.SubscribeSync(inbox)
	if err != nil {
		return nil
	}
	defer sub.Unsubscribe()
	if err := c.nc.PublishRequest(subject, inbox, nil); err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.discover)
	defer cancel()
	var out [][]byte
	for {
		msg, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return out
		}
		if len(msg.Data) > 0 {
			out = append(out, msg.Data)
		}
	}
}

// verify checks the signature of a reply to the request with id reqID,
// when it has one or one is required. Without -signer, any signer is
// accepted: the signature must still match.
func (c *checker) verify(reqID string, ev wire.Event) {
	if ev.Signature == "" && ev.Signer == "" && c.cfg.signer == "" {
		c.unsigned++
		return
	}
	trusted := func(string) bool { return true }
	if c.cfg.signer != "" {
		trusted, _ = wire.TrustedKeys(c.cfg.signer) // validated with the flags
	}
	if err := wire.VerifyEvent(trusted, reqID, &ev); err != nil {
		c.sigProblems = append(c.sigProblems, fmt.Sprintf("reply to request %s: %v", reqID, err))
		return
	}
	c.signed++
}

func (c *checker) checkSignatures() {
	switch {
	case len(c.sigProblems) > 3:
		c.line("FAIL", "signatures", "%s; and %d more", strings.Join(c.sigProblems[:3], "; "), len(c.sigProblems)-3)
	case len(c.sigProblems) > 0:
		c.line("FAIL", "signatures", "%s", strings.Join(c.sigProblems, "; "))
	case c.signed == 0:
		c.line("SKIP", "signatures", "replies are not signed and no -signer was given")
	case c.unsigned > 0:
		c.line("FAIL", "signatures", "%d replies signed, %d not", c.signed, c.unsigned)
	default:
		c.line("PASS", "signatures", "%d replies signed and verified", c.signed)
	}
}

// sortedCodes iterates over m in the order of its codes.
func sortedCodes(m map[int]net.HardwareAddr) iter.Seq2[int, net.HardwareAddr] {
	return func(yield func(int, net.HardwareAddr) bool) {
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if !yield(k, m[k]) {
				return
			}
		}
	}
}
