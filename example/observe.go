package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// observer serves /metrics, /healthz and, with -pprof, /debug/pprof/ on
// -http-addr.
type observer struct {
	srv  *http.Server
	done chan error
}

// health reports whether a process is ready: its NATS connection is up and
// its server is serving.
type health struct {
	nc      *nats.Conn // nil: no NATS connection to check
	serving atomic.Bool
}

func (h *health) check() error {
	switch {
	case h.nc != nil && h.nc.Status() != nats.CONNECTED:
		return errors.New("NATS connection " + h.nc.Status().String())
	case !h.serving.Load():
		return errors.New("not serving")
	}
	return nil
}

// startObserver listens on addr and serves the registry's metrics and the
// health check; with addr "" it does nothing. Go runtime and process
// metrics are added to reg.
func startObserver(addr string, withPprof bool, reg *prometheus.Registry, h *health, log *slog.Logger) (*observer, error) {
	if addr == "" {
		return nil, nil
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelError)}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if err := h.check(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, usageError{err}
	}
	o := &observer{
		srv:  &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second},
		done: make(chan error, 1),
	}
	go func() { o.done <- o.srv.Serve(ln) }()
	log.Info("http listening", "addr", ln.Addr().String(), "pprof", withPprof)
	return o, nil
}

// stop shuts the HTTP server down; a nil observer is fine.
func (o *observer) stop() {
	if o == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = o.srv.Shutdown(ctx)
	<-o.done
}
