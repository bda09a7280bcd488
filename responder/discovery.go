package responder

import (
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// EndpointName is the name of the lookup endpoint in the NATS micro
// discovery protocol.
const EndpointName = "lookup"

// description is the service description in $SRV.INFO replies.
const description = "Tinkerbell DHCP backend: answers lookups by MAC address (github.com/tinkerbell/backend)"

// Stats are the statistics of a [Server], as [Server.Stats] returns them
// and $SRV.STATS reports them.
type Stats struct {
	Name     string            // service name, [Config.Name]
	ID       string            // unique id of this Server
	Version  string            // [Config.Version]
	Metadata map[string]string // a copy of [Config.Metadata]

	Subject    string    // the subject served
	QueueGroup string    // the queue group, "" when [Config.NoQueue] is set
	Started    time.Time // when the Server subscribed, in UTC

	// Requests counts the requests handled, successful or not; Errors
	// counts those answered with an error code (404 included) or not
	// answered at all. LastError is the latest, as "code message".
	Requests  uint64
	Errors    uint64
	LastError string

	// ProcessingTime is the total time spent handling requests, from
	// taking one from the pending buffer to sending its reply.
	ProcessingTime        time.Duration
	AverageProcessingTime time.Duration

	InFlight int // requests being handled now
	Pending  int // requests waiting in NATS' pending buffer
	Dropped  int // requests NATS dropped because the pending buffer was full
}

// Stats returns the current statistics.
func (s *Server) Stats() Stats {
	st := Stats{
		Name:       s.name,
		ID:         s.id,
		Version:    s.version,
		Metadata:   maps.Clone(s.metadata),
		Subject:    s.subject,
		QueueGroup: s.queue,
		Started:    s.started,
		InFlight:   int(s.stats.inFlight.Load()),
	}
	st.Requests, st.Errors, st.LastError, st.ProcessingTime = s.stats.snapshot()
	if st.Requests > 0 {
		st.AverageProcessingTime = st.ProcessingTime / time.Duration(st.Requests)
	}
	// Both fail only once the subscription is closed.
	st.Pending, _, _ = s.sub.Pending()
	st.Dropped, _ = s.sub.Dropped()
	return st
}

// counters hold the request statistics.
type counters struct {
	inFlight atomic.Int64

	mu        sync.Mutex
	requests  uint64
	errors    uint64
	lastError string
	total     time.Duration
}

// done counts a request that started at start; errText is "" on success.
func (c *counters) done(start time.Time, errText string) {
	d := time.Since(start)
	c.mu.Lock()
	c.requests++
	c.total += d
	if errText != "" {
		c.errors++
		c.lastError = errText
	}
	c.mu.Unlock()
}

func (c *counters) snapshot() (requests, errors uint64, lastError string, total time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.requests, c.errors, c.lastError, c.total
}

// subscribeDiscovery subscribes to the NATS micro discovery subjects:
// $SRV.<verb>, $SRV.<verb>.<name> and $SRV.<verb>.<name>.<id>.
func (s *Server) subscribeDiscovery() error {
	for _, subj := range []string{
		micro.APIPrefix + ".*",
		micro.APIPrefix + ".*." + s.name,
		micro.APIPrefix + ".*." + s.name + "." + s.id,
	} {
		sub, err := s.nc.Subscribe(subj, s.discover)
		if err != nil {
			return fmt.Errorf("responder: subscribing to %q: %w", subj, err)
		}
		s.discovery = append(s.discovery, sub)
	}
	return nil
}

// stopDiscovery unsubscribes from the discovery subjects, once.
func (s *Server) stopDiscovery() {
	s.stopOnce.Do(func() {
		for _, sub := range s.discovery {
			_ = sub.Unsubscribe() // fails only when already gone
		}
	})
}

// discover answers one discovery request.
func (s *Server) discover(msg *nats.Msg) {
	if msg.Reply == "" {
		return
	}
	verb, _, _ := strings.Cut(strings.TrimPrefix(msg.Subject, micro.APIPrefix+"."), ".")
	var v any
	switch verb {
	case micro.PingVerb.String():
		v = micro.Ping{ServiceIdentity: s.identity(), Type: micro.PingResponseType}
	case micro.InfoVerb.String():
		v = s.info()
	case micro.StatsVerb.String():
		v = s.microStats()
	default:
		return // another verb: not ours to answer
	}
	b, err := json.Marshal(v)
	if err == nil {
		err = msg.Respond(b)
	}
	if err != nil {
		s.log.Error("responder: answering discovery request", "subject", msg.Subject, "error", err)
	}
}

func (s *Server) identity() micro.ServiceIdentity {
	return micro.ServiceIdentity{Name: s.name, ID: s.id, Version: s.version, Metadata: maps.Clone(s.metadata)}
}

func (s *Server) info() micro.Info {
	return micro.Info{
		ServiceIdentity: s.identity(),
		Type:            micro.InfoResponseType,
		Description:     description,
		Endpoints: []micro.EndpointInfo{{
			Name:       EndpointName,
			Subject:    s.subject,
			QueueGroup: s.queue,
			Metadata:   map[string]string{},
		}},
	}
}

// endpointData is the data of the endpoint in $SRV.STATS replies: what
// [Stats] has beyond the micro schema.
type endpointData struct {
	InFlight      int `json:"in_flight"`
	Pending       int `json:"pending"`
	Dropped       int `json:"dropped"`
	MaxConcurrent int `json:"max_concurrent"`
	MaxPending    int `json:"max_pending"`
}

func (s *Server) microStats() micro.Stats {
	st := s.Stats()
	data, _ := json.Marshal(endpointData{
		InFlight: st.InFlight, Pending: st.Pending, Dropped: st.Dropped,
		MaxConcurrent: s.maxConc, MaxPending: s.maxPending,
	})
	return micro.Stats{
		ServiceIdentity: s.identity(),
		Type:            micro.StatsResponseType,
		Started:         st.Started,
		Endpoints: []*micro.EndpointStats{{
			Name:                  EndpointName,
			Subject:               st.Subject,
			QueueGroup:            st.QueueGroup,
			NumRequests:           int(st.Requests),
			NumErrors:             int(st.Errors),
			LastError:             st.LastError,
			ProcessingTime:        st.ProcessingTime,
			AverageProcessingTime: st.AverageProcessingTime,
			Data:                  data,
		}},
	}
}
