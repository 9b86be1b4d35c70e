// Package ticket is the room admission ticket: Central signs, with Ed25519,
// that a user may join a room at an epoch until an expiry; chat servers,
// holding only Central's public key, check it on every Join.
//
// A ticket is bound to the placement it was issued for: the room's server
// and epoch. A chat server admits only tickets naming itself.
//
// A ticket also says when it was issued, so Central can revoke what it
// admits: chat servers refuse a ticket for an epoch their room has moved
// past, and one issued before its holder left the room (see
// centralapi.Revocation).
//
// Encoding: the msgpack map {room, user, epoch, srv, exp, iat} followed by the 64-byte
// Ed25519 signature over those map bytes. The signed bytes are exactly the
// bytes carried, so verification never depends on re-encoding.
package ticket

import (
	"crypto/ed25519"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"nearchat/pkg/atomicfile"
)

// Claims is what a ticket says.
type Claims struct {
	Room    string `msgpack:"room"`
	User    string `msgpack:"user"`
	Epoch   uint64 `msgpack:"epoch"`
	Server  string `msgpack:"srv"`           // the chat server the room is placed on at Epoch
	Expires int64  `msgpack:"exp"`           // Unix seconds
	Issued  int64  `msgpack:"iat,omitempty"` // Unix nanoseconds, on Central's clock
}

// Errors returned by Verify, wrapped with detail.
var (
	ErrMalformed = errors.New("ticket: malformed")
	ErrSignature = errors.New("ticket: bad signature")
	ErrExpired   = errors.New("ticket: expired")
	ErrMismatch  = errors.New("ticket: not for this room and user")
)

// Sign returns a ticket for c signed with priv.
func Sign(priv ed25519.PrivateKey, c Claims) ([]byte, error) {
	body, err := msgpack.Marshal(&c)
	if err != nil {
		return nil, fmt.Errorf("ticket: encode: %w", err)
	}
	return append(body, ed25519.Sign(priv, body)...), nil
}

// Open checks t's signature with pub and returns its claims, whoever
// and whenever they name: Central uses it to check that a chat server's
// report of a room carries a placement it signed, however long ago.
func Open(pub ed25519.PublicKey, t []byte) (Claims, error) {
	var c Claims
	if len(t) <= ed25519.SignatureSize {
		return c, fmt.Errorf("%w: %d bytes", ErrMalformed, len(t))
	}
	body, sig := t[:len(t)-ed25519.SignatureSize], t[len(t)-ed25519.SignatureSize:]
	if !ed25519.Verify(pub, body, sig) {
		return c, ErrSignature
	}
	return decode(body)
}

// decode reads the claims of a ticket's body.
func decode(body []byte) (Claims, error) {
	var c Claims
	if err := msgpack.Unmarshal(body, &c); err != nil {
		return c, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return c, nil
}

// Inspect checks what Verify checks but the signature: that t's claims
// name exactly room and user and have not expired at now. It costs a
// decode, where Verify costs an Ed25519 verification (some 50 µs), so a
// checker can refuse for free a ticket that could not pass anyway: one
// for someone else, or expired. The claims it returns prove nothing.
func Inspect(t []byte, room, user string, now time.Time) (Claims, error) {
	if len(t) <= ed25519.SignatureSize {
		return Claims{}, fmt.Errorf("%w: %d bytes", ErrMalformed, len(t))
	}
	c, err := decode(t[:len(t)-ed25519.SignatureSize])
	if err != nil {
		return c, err
	}
	return c, check(c, room, user, now)
}

// check is Verify's test of signed claims.
func check(c Claims, room, user string, now time.Time) error {
	if c.Room != room || c.User != user {
		return fmt.Errorf("%w: ticket is for %q in %q", ErrMismatch, c.User, c.Room)
	}
	if now.Unix() >= c.Expires {
		return fmt.Errorf("%w at %s", ErrExpired, time.Unix(c.Expires, 0).UTC().Format(time.RFC3339))
	}
	return nil
}

// Verify checks t's signature with pub, that it names exactly room and
// user, and that it has not expired at now. It returns the claims, so the
// caller can compare the epoch with what it knows.
func Verify(pub ed25519.PublicKey, t []byte, room, user string, now time.Time) (Claims, error) {
	c, err := Open(pub, t)
	if err != nil {
		return c, err
	}
	return c, check(c, room, user, now)
}

const (
	pemPrivate = "NEARCHAT TICKET PRIVATE KEY"
	pemPublic  = "NEARCHAT TICKET PUBLIC KEY"
)

// GenerateFiles writes a new key pair as PEM files (private 0600).
func GenerateFiles(privPath, pubPath string) error {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		return err
	}
	// Each file whole or not at all (atomicfile): a truncated key would
	// only be found when Central or a chat server loads it.
	return atomicfile.WriteAll([]atomicfile.File{
		{Path: privPath, Data: pem.EncodeToMemory(&pem.Block{Type: pemPrivate, Bytes: priv.Seed()}), Perm: 0o600},
		{Path: pubPath, Data: pem.EncodeToMemory(&pem.Block{Type: pemPublic, Bytes: pub}), Perm: 0o644},
	})
}

// LoadPrivate reads a private key written by GenerateFiles.
func LoadPrivate(path string) (ed25519.PrivateKey, error) {
	b, err := readPEM(path, pemPrivate, ed25519.SeedSize)
	if err != nil {
		return nil, err
	}
	return ed25519.NewKeyFromSeed(b), nil
}

// LoadPublic reads a public key written by GenerateFiles.
func LoadPublic(path string) (ed25519.PublicKey, error) {
	b, err := readPEM(path, pemPublic, ed25519.PublicKeySize)
	if err != nil {
		return nil, err
	}
	return ed25519.PublicKey(b), nil
}

func readPEM(path, typ string, size int) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ticket key: %w", err)
	}
	blk, _ := pem.Decode(data)
	if blk == nil || blk.Type != typ || len(blk.Bytes) != size {
		return nil, fmt.Errorf("ticket key %s: not a PEM block of type %q with %d bytes", path, typ, size)
	}
	return blk.Bytes, nil
}
