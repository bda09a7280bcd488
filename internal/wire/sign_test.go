package wire

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/nats-io/nkeys"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/internal/schematest"
)

// The key of the signature test vectors: the secret key of RFC 8032,
// section 7.1, TEST 1, as an nkeys user seed, so that an implementation in
// another language can first check its ed25519 against the RFC.
const (
	rfc8032Secret = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
	// A second key, whose signatures nobody trusts in the vectors.
	otherSecret = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb"
)

func keyPair(t testing.TB, secretHex string) nkeys.KeyPair {
	t.Helper()
	raw, err := hex.DecodeString(secretHex)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := nkeys.FromRawSeed(nkeys.PrefixByteUser, raw)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func signer(t testing.TB, secretHex string) *Signer {
	t.Helper()
	s, err := NewSigner(keyPair(t, secretHex))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// vectors is the layout of testdata/signature/vectors.json.
type vectors struct {
	Comment   string   `json:"comment"`
	Seed      string   `json:"seed"`       // nkeys seed of the signing key
	Ed25519   string   `json:"ed25519"`    // the same key, raw hex (RFC 8032 secret key)
	PublicKey string   `json:"public_key"` // its nkeys public key
	Trusted   []string `json:"trusted"`    // the keys a verifier trusts
	Cases     []vector `json:"cases"`
}

type vector struct {
	Name      string `json:"name"`
	RequestID string `json:"request_id"` // the id of the request the verifier sent
	Event     string `json:"event"`      // the exact response event bytes
	Signed    string `json:"signed"`     // hex of request id || 0x00 || data, for valid cases
	Valid     bool   `json:"valid"`
	Reason    string `json:"reason,omitempty"` // unsigned, untrusted or mismatch
}

// makeVectors builds the signature test vectors.
func makeVectors(t *testing.T) vectors {
	t.Helper()
	const reqID = "c8RzM1Lq7d0V1YQw-42"
	var ids IDs
	s, other := signer(t, rfc8032Secret), signer(t, otherSecret)
	seed, err := keyPair(t, rfc8032Secret).Seed()
	if err != nil {
		t.Fatal(err)
	}
	m := fullMessage()
	at := time.Date(2026, 11, 23, 15, 31, 0, 0, time.UTC)
	attrs := Attrs{ID: "R1-1", Source: "/tinkerbell/dhcp/backend", Type: backend.ResponseEventType, Time: at, Traceparent: tp}
	signed, err := AppendSignedResponse(nil, &attrs, &ids, &m, reqID, s)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := Decode(signed, backend.ResponseEventType)
	if err != nil {
		t.Fatal(err)
	}
	data := string(ev.Data)
	msg := func(id, data string) string { return hex.EncodeToString([]byte(id + "\x00" + data)) }
	sig := ev.Signature
	// The same answer with its data object as a JSON string, and as
	// data_base64: the signature covers the decoded bytes, unchanged.
	head := `{"specversion":"1.0","id":"R1-2","source":"/tinkerbell/dhcp/backend","type":"` + backend.ResponseEventType + `","datacontenttype":"application/json",`
	tail := `,"tinkerbellsig":"` + sig + `","tinkerbellsigner":"` + s.PublicKey() + `"}`
	quoted, _ := json.Marshal(data)
	asString := head + `"data":` + string(quoted) + tail
	asBase64 := head + `"data_base64":"` + base64.StdEncoding.EncodeToString([]byte(data)) + `"` + tail
	// The same JSON value with other white space: other bytes.
	var indented strings.Builder
	{
		var v any
		_ = json.Unmarshal([]byte(data), &v)
		b, _ := json.MarshalIndent(v, "", " ")
		indented.Write(b)
	}
	otherSigned, err := AppendSignedResponse(nil, &attrs, &ids, &m, reqID, other)
	if err != nil {
		t.Fatal(err)
	}
	// A signature by the other key presented as the trusted key's.
	oev, _ := Decode(otherSigned, "")
	impostor := strings.Replace(string(signed), sig, oev.Signature, 1)
	flipped := []byte(sig)
	flipped[10] ^= 'A' ^ 'B'
	if flipped[10] == sig[10] {
		flipped[10] = 'C'
	}
	notFound := backend.Message{Error: backend.StatusOf(backend.ErrNotFound)}
	notFound.MACAddress = m.MACAddress
	signed404, err := AppendSignedResponse(nil, &Attrs{ID: "R1-3", Source: "/r", Type: backend.ResponseEventType}, &ids, &notFound, reqID, s)
	if err != nil {
		t.Fatal(err)
	}
	ev404, _ := Decode(signed404, "")

	return vectors{
		Comment: "Signed response events (README, wire protocol, signed answers). The signature is ed25519 over " +
			"request_id || 0x00 || data, data being the exact bytes of the data value (decoded for a JSON string or data_base64), " +
			"unpadded base64url in tinkerbellsig; tinkerbellsigner holds the nkeys public key. " +
			"A verifier trusting the keys in trusted, having sent request_id, accepts exactly the cases marked valid.",
		Seed:      string(seed),
		Ed25519:   rfc8032Secret,
		PublicKey: s.PublicKey(),
		Trusted:   []string{s.PublicKey()},
		Cases: []vector{
			{Name: "signed", RequestID: reqID, Event: string(signed), Signed: msg(reqID, data), Valid: true},
			{Name: "signed error reply", RequestID: reqID, Event: string(signed404), Signed: msg(reqID, string(ev404.Data)), Valid: true},
			{Name: "data as a JSON string", RequestID: reqID, Event: asString, Signed: msg(reqID, data), Valid: true},
			{Name: "data_base64", RequestID: reqID, Event: asBase64, Signed: msg(reqID, data), Valid: true},
			{Name: "tampered data", RequestID: reqID, Event: strings.Replace(string(signed), "198.18.0.10", "198.18.0.66", 1), Reason: "mismatch"},
			{Name: "tampered URL", RequestID: reqID, Event: strings.Replace(string(signed), "auto.ipxe", "evil.ipxe", 1), Reason: "mismatch"},
			{Name: "same JSON, other white space", RequestID: reqID, Event: strings.Replace(string(signed), data, indented.String(), 1), Reason: "mismatch"},
			{Name: "answer to another request", RequestID: reqID + "0", Event: string(signed), Reason: "mismatch"},
			{Name: "tampered signature", RequestID: reqID, Event: strings.Replace(string(signed), sig, string(flipped), 1), Reason: "mismatch"},
			{Name: "padded signature", RequestID: reqID, Event: strings.Replace(string(signed), sig, sig+"==", 1), Reason: "mismatch"},
			{Name: "other key's signature under the trusted signer", RequestID: reqID, Event: impostor, Reason: "mismatch"},
			{Name: "untrusted signer", RequestID: reqID, Event: string(otherSigned), Reason: "untrusted"},
			{Name: "unsigned", RequestID: reqID, Event: string(AppendResponse(nil, &attrs, &ids, &m)), Reason: "unsigned"},
		},
	}
}

// TestSignatureVectors writes (with -update) and checks the golden
// signature vectors, then verifies every case as read from the file.
func TestSignatureVectors(t *testing.T) {
	const path = "../../testdata/signature/vectors.json"
	got, err := json.MarshalIndent(makeVectors(t), "", "    ")
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.MkdirAll("../../testdata/signature", 0o755); err != nil {
			t.Fatal(err)
		}
	}
	schematest.Golden(t, path, append(got, '\n'), *update)

	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	// The seed and the raw key are the same key.
	kp, err := nkeys.FromSeed([]byte(v.Seed))
	if err != nil {
		t.Fatal(err)
	}
	if pub, _ := kp.PublicKey(); pub != v.PublicKey {
		t.Errorf("seed's public key = %s, want %s", pub, v.PublicKey)
	}
	trusted, err := TrustedKeys(v.Trusted...)
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]error{"unsigned": ErrUnsigned, "untrusted": ErrUntrustedSigner, "mismatch": ErrSignatureMismatch}
	for _, c := range v.Cases {
		t.Run(c.Name, func(t *testing.T) {
			ev, _, err := DecodeResponse([]byte(c.Event))
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			err = VerifyEvent(trusted, c.RequestID, &ev)
			if c.Valid {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if got := hex.EncodeToString([]byte(c.RequestID + "\x00" + string(ev.Data))); got != c.Signed {
					t.Errorf("signed bytes = %s, want %s", got, c.Signed)
				}
				return
			}
			if !errors.Is(err, backend.ErrBadSignature) || !errors.Is(err, reasons[c.Reason]) {
				t.Fatalf("Verify = %v, want %v", err, reasons[c.Reason])
			}
			if errors.Is(err, backend.ErrInvalidMessage) {
				t.Errorf("Verify = %v, matches ErrInvalidMessage", err)
			}
		})
	}
}

// TestSignMatchesNKeys checks the fast path against nkeys' own Sign and
// Verify, and the Sign function.
func TestSignMatchesNKeys(t *testing.T) {
	kp := keyPair(t, rfc8032Secret)
	data := []byte(`{"IPAddress":"198.18.0.10"}`)
	sig, signer, err := Sign(kp, "id-1", data)
	if err != nil {
		t.Fatal(err)
	}
	want, err := kp.Sign([]byte("id-1\x00" + string(data)))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(base64.RawURLEncoding.EncodeToString(want), sig); diff != "" {
		t.Errorf("signature (-want +got):\n%s", diff)
	}
	if pub, _ := kp.PublicKey(); signer != pub {
		t.Errorf("signer = %s, want %s", signer, pub)
	}
	// A key pair that hides its private key signs through kp.Sign.
	s, err := NewSigner(opaque{kp})
	if err != nil {
		t.Fatal(err)
	}
	if s.priv != nil {
		t.Fatal("opaque key pair decoded")
	}
	sig2, _, err := s.Sign("id-1", data)
	if err != nil || sig2 != sig {
		t.Errorf("opaque Sign = %s, %v; want %s", sig2, err, sig)
	}
	trusted, _ := TrustedKeys(signer)
	if err := Verify(trusted, "id-1", data, sig, signer); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

// opaque is a key pair that does not reveal its private key, like one kept
// in a hardware token.
type opaque struct{ nkeys.KeyPair }

func (opaque) PrivateKey() ([]byte, error) { return nil, nkeys.ErrCannotSign }

func TestSignerRejects(t *testing.T) {
	curve, err := nkeys.CreateCurveKeys()
	if err != nil {
		t.Fatal(err)
	}
	pubOnly, err := nkeys.FromPublicKey(signer(t, rfc8032Secret).PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		kp   nkeys.KeyPair
	}{{"nil", nil}, {"curve", curve}, {"public key only", pubOnly}} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewSigner(tt.kp); !errors.Is(err, backend.ErrInvalidConfig) {
				t.Errorf("NewSigner = %v, want ErrInvalidConfig", err)
			}
		})
	}
	if _, err := NewSignerFromSeed([]byte("SUnot-a-seed")); !errors.Is(err, backend.ErrInvalidConfig) {
		t.Errorf("NewSignerFromSeed = %v, want ErrInvalidConfig", err)
	}
	seed, _ := keyPair(t, rfc8032Secret).Seed()
	_, err = TrustedKeys(string(seed))
	if !errors.Is(err, backend.ErrInvalidConfig) || strings.Contains(err.Error(), string(seed)) {
		t.Errorf("TrustedKeys(seed) = %v, want ErrInvalidConfig without the seed", err)
	}
	if _, err := TrustedKeys("UNOTAKEY"); !errors.Is(err, backend.ErrInvalidConfig) {
		t.Errorf("TrustedKeys(garbage) = %v, want ErrInvalidConfig", err)
	}
}

func TestVerifyRejects(t *testing.T) {
	s := signer(t, rfc8032Secret)
	data := []byte(`{}`)
	sig, pub, err := s.Sign("id", data)
	if err != nil {
		t.Fatal(err)
	}
	trusted, _ := TrustedKeys(pub)
	long := strings.Repeat("U", 10000)
	for _, tt := range []struct {
		name        string
		trusted     func(string) bool
		id          string
		sig, signer string
		want        error
	}{
		{"ok", trusted, "id", sig, pub, nil},
		{"nil trust", nil, "id", sig, pub, ErrUntrustedSigner},
		{"no signature", trusted, "id", "", pub, ErrUnsigned},
		{"no signer", trusted, "id", sig, "", ErrUnsigned},
		{"garbage signer", func(string) bool { return true }, "id", sig, long, ErrUntrustedSigner},
		{"short signature", trusted, "id", sig[:80], pub, ErrSignatureMismatch},
		{"not base64", trusted, "id", strings.Repeat("!", len(sig)), pub, ErrSignatureMismatch},
		{"id with NUL moved", trusted, "id\x00", sig, pub, ErrSignatureMismatch},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := Verify(tt.trusted, tt.id, data, tt.sig, tt.signer)
			if diff := cmp.Diff(tt.want, err, cmpopts.EquateErrors()); diff != "" {
				t.Errorf("Verify (-want +got):\n%s", diff)
			}
			if err != nil && len(err.Error()) > 200 {
				t.Errorf("error of %d bytes quotes too much of the input", len(err.Error()))
			}
		})
	}
}

func TestSignedEventRoundTrip(t *testing.T) {
	var ids IDs
	s := signer(t, rfc8032Secret)
	m := fullMessage()
	b, err := AppendSignedResponse(nil, &Attrs{Source: "/r", Type: backend.ResponseEventType}, &ids, &m, "q-1", s)
	if err != nil {
		t.Fatal(err)
	}
	ev, got, err := DecodeResponse(b)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(m, got, cmpOpts); diff != "" {
		t.Errorf("message (-want +got):\n%s", diff)
	}
	if ev.Signer != s.PublicKey() || len(ev.Signature) != sigLen {
		t.Errorf("attributes %q %q", ev.Signature, ev.Signer)
	}
	// Re-encoding the decoded attributes keeps them, verbatim.
	again := AppendResponse(nil, &ev.Attrs, &ids, &got)
	if string(again) != string(b) {
		t.Errorf("re-encoded\n%s\nwant\n%s", again, b)
	}
	// A non-string attribute is a typed error.
	bad := strings.Replace(string(b), `"tinkerbellsig":"`+ev.Signature+`"`, `"tinkerbellsig":5`, 1)
	var fe *backend.FieldError
	if _, err := Decode([]byte(bad), ""); !errors.As(err, &fe) || fe.Field != backend.SignatureExtension {
		t.Errorf("Decode = %v, want a FieldError on %s", err, backend.SignatureExtension)
	}
}

func BenchmarkSign(b *testing.B) {
	s := signer(b, rfc8032Secret)
	m := fullMessage()
	var ids IDs
	a := Attrs{Source: "/r", Type: backend.ResponseEventType}
	buf := make([]byte, 0, 2048)
	b.Run("unsigned", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf = AppendResponse(buf[:0], &a, &ids, &m)
		}
	})
	b.Run("signed", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf, _ = AppendSignedResponse(buf[:0], &a, &ids, &m, "q-1", s)
		}
	})
	ev, _ := Decode(buf, "")
	trusted, _ := TrustedKeys(s.PublicKey())
	b.Run("verify", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := VerifyEvent(trusted, "q-1", &ev); err != nil {
				b.Fatal(err)
			}
		}
	})
}
