package main

import (
	"io"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/tinkerbell/backend/dhcpserver"
	natsbackend "github.com/tinkerbell/backend/nats"
)

// TestAvailabilityFlags: every availability piece is on by default (the
// libraries' defaults), and 0 turns each off (the libraries' negative).
func TestAvailabilityFlags(t *testing.T) {
	type knobs struct {
		AnswerReuse, NegativeTTL, MinLookupInterval, KnownTTL time.Duration
		NotFoundRate                                          float64
		NotFoundBurst                                         int
		MaxClients                                            int
		HedgeDelay                                            time.Duration
		MaxAttempts                                           int
		StaleMaxAge                                           time.Duration
		Health                                                bool
	}
	tests := []struct {
		name string
		args []string
		want knobs
	}{
		{"defaults", nil, knobs{
			AnswerReuse: dhcpserver.DefaultAnswerReuse, NegativeTTL: dhcpserver.DefaultNegativeTTL,
			MinLookupInterval: dhcpserver.DefaultMinLookupInterval, KnownTTL: dhcpserver.DefaultKnownTTL,
			NotFoundRate: dhcpserver.DefaultNotFoundRate, NotFoundBurst: dhcpserver.DefaultNotFoundBurst, MaxClients: dhcpserver.DefaultMaxClients,
			HedgeDelay: natsbackend.DefaultHedgeDelay, MaxAttempts: natsbackend.DefaultMaxAttempts,
			StaleMaxAge: 24 * time.Hour, Health: true,
		}},
		{"all off", []string{"-answer-reuse", "0", "-negative-ttl", "0", "-min-lookup-interval", "0", "-not-found-rate", "0",
			"-hedge-delay", "0", "-lookup-attempts", "1", "-stale-max-age", "0", "-nats-health=false"}, knobs{
			AnswerReuse: -1, NegativeTTL: -1, MinLookupInterval: -1, KnownTTL: dhcpserver.DefaultKnownTTL,
			NotFoundRate: -1, NotFoundBurst: dhcpserver.DefaultNotFoundBurst, MaxClients: dhcpserver.DefaultMaxClients, HedgeDelay: -1, MaxAttempts: 1, StaleMaxAge: -1,
		}},
		{"negative is off too", []string{"-answer-reuse", "-1ns", "-min-lookup-interval", "-1ns", "-stale-max-age", "-1s"}, knobs{
			AnswerReuse: -1, NegativeTTL: dhcpserver.DefaultNegativeTTL, MinLookupInterval: -1, KnownTTL: dhcpserver.DefaultKnownTTL,
			NotFoundRate: dhcpserver.DefaultNotFoundRate, NotFoundBurst: dhcpserver.DefaultNotFoundBurst, MaxClients: dhcpserver.DefaultMaxClients,
			HedgeDelay: natsbackend.DefaultHedgeDelay, MaxAttempts: natsbackend.DefaultMaxAttempts, StaleMaxAge: -1, Health: true,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseFlags(append([]string{"-udp", "127.0.0.1:0", "-server-addr", "127.0.0.1"}, tt.args...), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := dhcpConfig(o, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			rc := requesterConfig(o, nil, nil)
			got := knobs{
				AnswerReuse: cfg.AnswerReuse, NegativeTTL: cfg.NegativeTTL, MinLookupInterval: cfg.MinLookupInterval,
				KnownTTL: cfg.KnownTTL, NotFoundRate: cfg.NotFoundRate, NotFoundBurst: cfg.NotFoundBurst, MaxClients: cfg.MaxClients,
				HedgeDelay: rc.HedgeDelay, MaxAttempts: rc.Retry.MaxAttempts, StaleMaxAge: off(o.staleMaxAge), Health: o.natsHealth,
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("knobs (-want +got):\n%s", diff)
			}
		})
	}
}
