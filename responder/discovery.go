package responder

import (
	"encoding/json"
	"fmt"
	"maps"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// EndpointName is the name of the lookup endpoint in the NATS micro
// discovery protocol.
const EndpointName = "lookup"

// description is the service description in $SRV.INFO replies.
const description = "Tinkerbell DHCP backend: answers lookups by MAC address (github.com/tinkerbell/backend)"

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
// [Stats] has beyond the micro schema, flat, as numbers.
type endpointData struct {
	InFlight       int    `json:"in_flight"`
	Queued         int    `json:"queued"`
	Pending        int    `json:"pending"`
	Dropped        int    `json:"dropped"`
	Abandoned      int    `json:"abandoned"`
	AbandonedTotal uint64 `json:"abandoned_total"`
	BudgetsClamped uint64 `json:"budgets_clamped"`
	MaxConcurrent  int    `json:"max_concurrent"`
	MaxPending     int    `json:"max_pending"`
	MaxAbandoned   int    `json:"max_abandoned"`

	// The outcomes, see [Outcomes].
	OK           uint64 `json:"ok"`
	NotFound     uint64 `json:"not_found"`
	BadRequest   uint64 `json:"bad_request"`
	BackendError uint64 `json:"error"`
	Unavailable  uint64 `json:"unavailable"`
	Timeout      uint64 `json:"timeout"`
	Shed         uint64 `json:"shed"`
	Expired      uint64 `json:"expired"`
	NoReply      uint64 `json:"no_reply"`
	Cancelled    uint64 `json:"cancelled"`
}

func (s *Server) microStats() micro.Stats {
	st := s.Stats()
	data, _ := json.Marshal(endpointData{
		InFlight: st.InFlight, Queued: st.Queued, Pending: st.Pending, Dropped: st.Dropped,
		Abandoned: st.Abandoned, AbandonedTotal: st.AbandonedTotal, BudgetsClamped: st.BudgetsClamped,
		MaxConcurrent: st.MaxConcurrent, MaxPending: st.MaxPending, MaxAbandoned: st.MaxAbandoned,
		OK: st.Outcomes.OK, NotFound: st.Outcomes.NotFound, BadRequest: st.Outcomes.BadRequest,
		BackendError: st.Outcomes.BackendError, Unavailable: st.Outcomes.Unavailable, Timeout: st.Outcomes.Timeout,
		Shed: st.Outcomes.Shed, Expired: st.Outcomes.Expired, NoReply: st.Outcomes.NoReply, Cancelled: st.Outcomes.Cancelled,
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
