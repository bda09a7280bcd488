package responder

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// A replica that sheds steps out of its queue group for a while.
//
// NATS gives each request of a queue group to a member chosen at random,
// whatever its load, so a requester whose request was shed by a slow
// replica has, with two replicas, one chance in two to land on it again.
// A replica that sheds therefore drains its subscription (NATS then sends
// every request to the other members; those NATS already handed over are
// still taken) and subscribes again once its queue is empty. Without a
// queue group ([Config.NoQueue]) every responder gets every request and
// there is nobody to step aside for.

// subscription is one subscription to the subject served.
type subscription struct {
	*nats.Subscription
	paused bool // drained to step aside, not to stop; guarded by Server.subMu
}

// subscribeRequests subscribes to the subject (in the queue group) with
// the receive callback. Called with subMu held, or before the Server is
// shared.
func (s *Server) subscribeRequests() (*subscription, error) {
	ws := &subscription{}
	var err error
	if s.queue == "" {
		ws.Subscription, err = s.nc.Subscribe(s.subject, s.receive)
	} else {
		ws.Subscription, err = s.nc.QueueSubscribe(s.subject, s.queue, s.receive)
	}
	if err != nil {
		return nil, fmt.Errorf("responder: subscribing to %q: %w", s.subject, err)
	}
	// Called once the callback has returned for the last time, whether the
	// subscription was drained, unsubscribed or lost with the connection.
	ws.SetClosedHandler(func(string) { s.ended(ws) })
	if err := ws.SetPendingLimits(natsPendingMsgs, natsPendingBytes); err != nil {
		_ = ws.Unsubscribe()
		return nil, fmt.Errorf("responder: setting pending limits: %w", err)
	}
	s.openSubs++
	return ws, nil
}

// ended is the closed handler of a subscription. Once the server stops
// (or a subscription ends that was not paused: the connection is gone)
// and the last subscription has delivered its last request, the workers
// are told that nothing more will come.
func (s *Server) ended(ws *subscription) {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	s.openSubs--
	if !ws.paused {
		s.stopped = true
	}
	if s.stopped && s.openSubs == 0 {
		s.closeInput()
	}
}

// closeInput tells the workers that no request will be queued any more.
// Called with subMu held.
func (s *Server) closeInput() {
	if !s.inputClosed {
		s.inputClosed = true
		close(s.subClosed)
	}
}

// pause steps out of the queue group: called by the callback when it
// sheds.
func (s *Server) pause() {
	if s.queue == "" || s.paused.Load() || s.health.Load() < 0 {
		// While the backend times out, stepping aside would only turn
		// the fast 503s into "no responders": the probes need requests.
		return
	}
	s.subMu.Lock()
	defer s.subMu.Unlock()
	ws := s.sub
	if s.stopped || ws.paused {
		return
	}
	s.countDropped(ws)
	// Drain, not Unsubscribe: the requests NATS already delivered are
	// still queued or shed, none is lost.
	if err := ws.Drain(); err != nil {
		return // the connection is closing: ended will say so
	}
	ws.paused = true
	s.paused.Store(true)
	s.stats.pauses.Add(1)
}

// resume joins the queue group again when the queue is empty: called by a
// worker about to wait for a request.
func (s *Server) resume() {
	if !s.paused.Load() || len(s.requests) > 0 {
		return
	}
	s.subMu.Lock()
	defer s.subMu.Unlock()
	if s.stopped || !s.sub.paused {
		return
	}
	ws, err := s.subscribeRequests()
	if err != nil {
		// The connection is closed or closing: stop for good.
		if ok, suppressed := s.logs.failure.allow(); ok {
			s.log.Error("responder: subscribing again after shedding", "subject", s.subject, "error", err, "suppressed", suppressed)
		}
		s.stopped = true
		if s.openSubs == 0 {
			s.closeInput()
		}
		return
	}
	s.sub = ws
	s.paused.Store(false)
}

// stop ends the subscription for good: drained (graceful) or
// unsubscribed. It reports an error of Drain other than the subscription
// or connection being gone already.
func (s *Server) stop(graceful bool) error {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	first := !s.stopped
	s.stopped = true
	ws := s.sub
	if ws.paused {
		// Draining already; its end is now final.
		if s.openSubs == 0 {
			s.closeInput()
		}
		if !graceful {
			_ = ws.Unsubscribe() // drop what it still holds
		}
		return nil
	}
	if !first && graceful {
		return nil
	}
	if graceful {
		if err := ws.Drain(); err != nil && !errors.Is(err, nats.ErrBadSubscription) && !errors.Is(err, nats.ErrConnectionClosed) {
			// Without a drain the workers would wait forever:
			// unsubscribe, which drops what NATS holds but lets queued
			// and running requests finish.
			_ = ws.Unsubscribe()
			return err
		}
		return nil
	}
	err := ws.Unsubscribe()
	if errors.Is(err, nats.ErrBadSubscription) || errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrConnectionDraining) {
		err = nil
	}
	return err
}

// countDropped adds the requests NATS dropped on ws to the total. Called
// with subMu held, before ws ends (afterwards nats.go no longer says).
func (s *Server) countDropped(ws *subscription) {
	if n, err := ws.Dropped(); err == nil {
		s.droppedBefore += n
	}
}

// natsQueue returns the requests in NATS' pending buffer and those it
// dropped, over every subscription so far.
func (s *Server) natsQueue() (pending, dropped int) {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	// Both fail (and return -1) once the subscription has ended.
	pending, _, err := s.sub.Pending()
	if err != nil {
		pending = 0
	}
	n, err := s.sub.Dropped()
	if err != nil {
		n = 0
	}
	return pending, s.droppedBefore + n
}

// watchSlowConsumer logs, at most once a second, when NATS dropped
// requests because its pending buffer was full: the callback, which never
// blocks, could not keep up with a flood.
func (s *Server) watchSlowConsumer(stop <-chan struct{}) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last := 0
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		pending, dropped := s.natsQueue()
		if dropped > last {
			s.log.Error("responder: slow consumer: NATS dropped requests faster than the responder could queue or shed them",
				"subject", s.subject, "dropped", dropped-last, "dropped_total", dropped, "pending", pending)
			last = dropped
		}
	}
}
