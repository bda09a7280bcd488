// Package e2e holds end-to-end tests that cross the module's packages: a
// DHCP server, the NATS requester, an embedded NATS server, the responder
// and a backend, all real, in one test process. It has no API.
package e2e
