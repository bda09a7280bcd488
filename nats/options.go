package nats

import (
	"time"

	"github.com/nats-io/nats.go"
)

// The connection-health settings of [ConnectionOptions].
const (
	// HealthPingInterval is how often the client pings the server.
	HealthPingInterval = time.Second
	// HealthMaxPingsOut is how many pings may go unanswered before the
	// client gives up on the server and reconnects elsewhere.
	HealthMaxPingsOut = 2
	// HealthFlusherTimeout bounds one write to the server's socket.
	HealthFlusherTimeout = time.Second
	// HealthReconnectWait is the wait before reconnecting to a server of the
	// list that was tried last; HealthReconnectJitter is added to it at
	// random, so that many DHCP servers do not reconnect in step.
	HealthReconnectWait   = 250 * time.Millisecond
	HealthReconnectJitter = 250 * time.Millisecond
	// HealthReconnectBufSize bounds the requests nats.go keeps while
	// reconnecting: about 500 lookups. More would be sent long after their
	// DHCP clients gave up.
	HealthReconnectBufSize = 256 << 10
)

// ConnectionOptions returns the nats.go options a DHCP server's connection
// needs so that a sick NATS server is noticed and left within about two
// seconds, under the ~4 s after which DHCP clients retransmit: a ping every
// [HealthPingInterval] with at most [HealthMaxPingsOut] unanswered, a write
// timeout of [HealthFlusherTimeout] after which the connection reconnects,
// a reconnect wait of [HealthReconnectWait] plus up to
// [HealthReconnectJitter], reconnecting forever, and a reconnect buffer of
// [HealthReconnectBufSize]. Pass them to nats.Connect before options of
// your own, which override them:
//
//	opts := append(natsbackend.ConnectionOptions(), nats.UserCredentials(creds))
//	nc, err := nats.Connect(url, opts...)
//
// nats.go's defaults (a ping every 2 minutes, a one-minute write timeout)
// suit long-lived streams, not a DHCP server: with them, a frozen NATS
// server goes unnoticed for minutes while every lookup fails. The cost of
// these settings is a ping per second per connection and, on a network that
// stalls for more than about two seconds, a reconnect that a patient client
// would not have made; neither matters for a DHCP server. The responders'
// connections benefit from the same settings.
func ConnectionOptions() []nats.Option {
	return []nats.Option{
		nats.PingInterval(HealthPingInterval),
		nats.MaxPingsOutstanding(HealthMaxPingsOut),
		nats.FlusherTimeout(HealthFlusherTimeout),
		nats.ReconnectOnFlusherError(),
		nats.ReconnectWait(HealthReconnectWait),
		nats.ReconnectJitter(HealthReconnectJitter, HealthReconnectJitter),
		nats.MaxReconnects(-1),
		nats.ReconnectBufSize(HealthReconnectBufSize),
	}
}
