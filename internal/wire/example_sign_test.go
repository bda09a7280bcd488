package wire_test

import (
	"errors"
	"fmt"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/internal/wire"
)

// A responder signs its answer to request "q-1"; a requester that trusts
// the responder's public key checks it.
func ExampleSigner() {
	// The seed of testdata/signature/vectors.json. Never put a real seed
	// in source code.
	s, err := wire.NewSignerFromSeed([]byte("SUAJ2YNRTXX72WTAXKCEV5ES5QWMIRCJYVUXWMTJDFYDXLADDSXH6YALCA"))
	if err != nil {
		panic(err)
	}
	var ids wire.IDs
	m := backend.Message{Error: backend.StatusOf(backend.ErrNotFound)}
	event, err := wire.AppendSignedResponse(nil, &wire.Attrs{ID: "r-1", Source: "/r", Type: backend.ResponseEventType}, &ids, &m, "q-1", s)
	if err != nil {
		panic(err)
	}

	// The requester's side.
	trusted, err := wire.TrustedKeys("UDLVVGABQKYQVN6VJP7NHSLEA45A5YLS6PNKMIZFV4BBU2HXA5IRUVAL")
	if err != nil {
		panic(err)
	}
	ev, _, err := wire.DecodeResponse(event)
	if err != nil {
		panic(err)
	}
	fmt.Println(wire.VerifyEvent(trusted, "q-1", &ev))
	err = wire.VerifyEvent(trusted, "q-2", &ev)
	fmt.Println(errors.Is(err, backend.ErrBadSignature), err)
	// Output:
	// <nil>
	// true backend: reply not signed by a trusted key: the signature does not match
}
