// Package events publishes the decisions of a DHCP server as CloudEvents on
// NATS: one event per decision (offer, ack, nak, decline, release, inform,
// not-found, backend-error, stale-answer), on the subject
//
//	<prefix>.tinkerbell.dhcp.events.<kind>      ([backend.EventSubject])
//
// with the type org.tinkerbell.dhcp.event.<kind> ([backend.EventTypePrefix]),
// in the structured JSON mode of the lookups. The data holds the client's
// MAC address, the address concerned, the transaction id, the server's
// identifier, the DHCP message type, the trace context and the reason:
//
//	{"MACAddress":"52:54:00:66:ea:9a","IPAddress":"198.18.0.10","TransactionID":"0x3903f326",
//	 "MessageType":"REQUEST","ServerID":"198.18.0.1","Reason":"",
//	 "Traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
//
// Publishing never blocks or slows the packet path: [Publisher.Publish]
// puts the event in a bounded buffer and returns; one goroutine encodes
// and publishes; when the buffer is full the event is dropped and counted
// ([Stats].Dropped). Nothing is published unless a Publisher is created and
// wired to the server (dhcpserver's Config.OnDecision).
//
// Subscribers watch the events with the nats CLI,
//
//	nats sub 'tinkerbell.dhcp.events.>'
//
// and keep them with a JetStream stream configured on the NATS side (an
// audit log with retention), as the README shows.
package events
