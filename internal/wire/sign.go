package wire

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"sync"

	"github.com/nats-io/nkeys"

	"github.com/tinkerbell/backend"
	"github.com/tinkerbell/backend/internal/excerpt"
)

// Signed answers (optional). A responder holding an nkeys key pair signs
// each response event; a requester that trusts its public key verifies it.
// The signature covers
//
//	request id || 0x00 || data
//
// where "request id" is the id attribute of the request event being
// answered (UTF-8, as sent) and "data" is the exact bytes of the response's
// data value: for a data member holding a JSON object, the bytes of that
// object as they appear in the event, from '{' to the matching '}', never
// re-serialised; for data holding a JSON string, the string's decoded
// content; for data_base64, the decoded bytes. [Event.Data] is exactly
// these bytes. The signature is ed25519 (RFC 8032, pure), carried unpadded
// base64url in the extension attribute [backend.SignatureExtension]; the
// nkeys public key of the signer is in [backend.SignerExtension].
//
// The request id binds the answer to the question, so that a signed answer
// to one lookup cannot be replayed as the answer to another.

// Reasons for a rejected signature. Each matches [backend.ErrBadSignature].
var (
	// ErrUnsigned means the event carries no signature or no signer.
	ErrUnsigned = fmt.Errorf("%w: the reply is not signed", backend.ErrBadSignature)
	// ErrUntrustedSigner means the signer is not one of the trusted keys
	// (or is not an nkeys public key at all).
	ErrUntrustedSigner = fmt.Errorf("%w: the signer is not trusted", backend.ErrBadSignature)
	// ErrSignatureMismatch means the signature is malformed or does not
	// match the request id and data: the reply was altered, answers
	// another request, or was forged.
	ErrSignatureMismatch = fmt.Errorf("%w: the signature does not match", backend.ErrBadSignature)
)

// sigLen is the length of an encoded signature: 64 bytes, unpadded base64.
var sigLen = base64.RawURLEncoding.EncodedLen(ed25519.SignatureSize)

// Signer signs response events with an nkeys key pair. It decodes the key
// once, so that each signature costs one ed25519 signing and nothing more.
// It is safe for concurrent use.
type Signer struct {
	pub  string             // the encoded nkeys public key
	priv ed25519.PrivateKey // nil when kp does not reveal its key
	kp   nkeys.KeyPair
}

// NewSigner returns a Signer for kp, which must be able to sign: a key
// pair made from a seed (nkeys.FromSeed), of any type but curve (X) keys.
// User keys ("SU…" seeds, "U…" public keys) are the convention. Errors
// wrap [backend.ErrInvalidConfig].
func NewSigner(kp nkeys.KeyPair) (*Signer, error) {
	if kp == nil {
		return nil, fmt.Errorf("%w: nil nkeys key pair", backend.ErrInvalidConfig)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("%w: nkeys key pair: %v", backend.ErrInvalidConfig, err)
	}
	if nkeys.Prefix(pub) == nkeys.PrefixByteCurve {
		return nil, fmt.Errorf("%w: nkeys curve (X) keys cannot sign", backend.ErrInvalidConfig)
	}
	s := &Signer{pub: pub, kp: kp}
	if enc, err := kp.PrivateKey(); err == nil {
		if raw, err := nkeys.Decode(nkeys.PrefixBytePrivate, enc); err == nil && len(raw) == ed25519.PrivateKeySize {
			s.priv = ed25519.PrivateKey(raw)
		}
	}
	if s.priv == nil {
		// A key pair that keeps its key to itself: check that it signs.
		if _, err := kp.Sign([]byte("probe")); err != nil {
			return nil, fmt.Errorf("%w: nkeys key pair cannot sign: %v", backend.ErrInvalidConfig, err)
		}
	}
	return s, nil
}

// NewSignerFromSeed returns a Signer for an encoded nkeys seed ("SU…").
// Errors wrap [backend.ErrInvalidConfig] and never contain the seed.
func NewSignerFromSeed(seed []byte) (*Signer, error) {
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		return nil, fmt.Errorf("%w: not an nkeys seed: %v", backend.ErrInvalidConfig, err)
	}
	return NewSigner(kp)
}

// PublicKey returns the encoded nkeys public key of the signer, the value
// of [backend.SignerExtension].
func (s *Signer) PublicKey() string { return s.pub }

// msgPool holds the buffers the signed message is assembled in.
var msgPool = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// signedMessage calls f with requestID || 0x00 || data.
func signedMessage(requestID string, data []byte, f func([]byte)) {
	bp := msgPool.Get().(*[]byte)
	m := append(append(append((*bp)[:0], requestID...), 0), data...)
	f(m)
	if cap(m) <= 64<<10 {
		*bp = m[:0]
		msgPool.Put(bp)
	}
}

// AppendSignature appends the encoded signature of requestID and data to
// dst.
func (s *Signer) AppendSignature(dst []byte, requestID string, data []byte) ([]byte, error) {
	var sig []byte
	var err error
	signedMessage(requestID, data, func(m []byte) {
		if s.priv != nil {
			sig = ed25519.Sign(s.priv, m)
			return
		}
		sig, err = s.kp.Sign(m)
	})
	if err != nil {
		return dst, fmt.Errorf("wire: signing: %w", err)
	}
	if len(sig) != ed25519.SignatureSize {
		return dst, fmt.Errorf("wire: signing: signature of %d bytes", len(sig))
	}
	return base64.RawURLEncoding.AppendEncode(dst, sig), nil
}

// Sign returns the signature of requestID and data, and the signer's public
// key: the values of [backend.SignatureExtension] and
// [backend.SignerExtension].
func (s *Signer) Sign(requestID string, data []byte) (sig, signer string, err error) {
	b, err := s.AppendSignature(make([]byte, 0, sigLen), requestID, data)
	if err != nil {
		return "", "", err
	}
	return string(b), s.pub, nil
}

// Sign signs requestID and data with kp and returns the values of
// [backend.SignatureExtension] and [backend.SignerExtension]. A responder
// signing many replies should make a [Signer] once instead.
func Sign(kp nkeys.KeyPair, requestID string, data []byte) (sig, signer string, err error) {
	s, err := NewSigner(kp)
	if err != nil {
		return "", "", err
	}
	return s.Sign(requestID, data)
}

// Verify checks that sig is a valid signature of requestID and data made by
// signer, and that trusted(signer) holds. trusted is called only with a
// syntactically valid nkeys public key. The error matches
// [backend.ErrBadSignature] and one of [ErrUnsigned], [ErrUntrustedSigner]
// or [ErrSignatureMismatch]; it quotes at most a short excerpt of signer.
func Verify(trusted func(signer string) bool, requestID string, data []byte, sig, signer string) error {
	if sig == "" || signer == "" {
		return ErrUnsigned
	}
	if !nkeys.IsValidPublicKey(signer) || nkeys.Prefix(signer) == nkeys.PrefixByteCurve || trusted == nil || !trusted(signer) {
		return fmt.Errorf("%w: %q", ErrUntrustedSigner, excerpt.Short(signer))
	}
	pk, err := nkeys.FromPublicKey(signer)
	if err != nil {
		return fmt.Errorf("%w: %q", ErrUntrustedSigner, excerpt.Short(signer))
	}
	if len(sig) != sigLen {
		return fmt.Errorf("%w: malformed signature of %d bytes", ErrSignatureMismatch, len(sig))
	}
	var raw [ed25519.SignatureSize]byte
	if n, err := base64.RawURLEncoding.Decode(raw[:], []byte(sig)); err != nil || n != len(raw) {
		return fmt.Errorf("%w: malformed signature: not unpadded base64url", ErrSignatureMismatch)
	}
	signedMessage(requestID, data, func(m []byte) { err = pk.Verify(m, raw[:]) })
	if err != nil {
		return ErrSignatureMismatch
	}
	return nil
}

// VerifyEvent is [Verify] for a decoded response event: it checks the
// event's signature attributes against requestID and its data.
func VerifyEvent(trusted func(signer string) bool, requestID string, ev *Event) error {
	return Verify(trusted, requestID, ev.Data, ev.Signature, ev.Signer)
}

// TrustedKeys returns a function reporting whether a signer is one of keys,
// for [Verify]. Each key must be an nkeys public key that can sign (not a
// curve key); errors wrap [backend.ErrInvalidConfig]. With no keys, nothing
// is trusted.
func TrustedKeys(keys ...string) (func(signer string) bool, error) {
	set := make(map[string]struct{}, len(keys))
	for _, k := range keys {
		if !nkeys.IsValidPublicKey(k) || nkeys.Prefix(k) == nkeys.PrefixByteCurve {
			if nkeys.Prefix(k) == nkeys.PrefixByteSeed {
				return nil, fmt.Errorf("%w: trusted key is a seed, not a public key: never hand out seeds", backend.ErrInvalidConfig)
			}
			return nil, fmt.Errorf("%w: trusted key %q is not an nkeys public key", backend.ErrInvalidConfig, excerpt.Short(k))
		}
		set[k] = struct{}{}
	}
	return func(signer string) bool { _, ok := set[signer]; return ok }, nil
}
