package ticket

import (
	"crypto/ed25519"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

func TestVerify(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	otherPub, otherPriv, _ := ed25519.GenerateKey(nil)
	_ = otherPub
	now := time.Unix(1_800_000_000, 0)
	good := Claims{Room: "r-1", User: "alice", Epoch: 3, Expires: now.Add(time.Minute).Unix()}
	sign := func(k ed25519.PrivateKey, c Claims) []byte {
		b, err := Sign(k, c)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	flipped := sign(priv, good)
	flipped[len(flipped)-1] ^= 1
	tampered := sign(priv, good)
	tampered[3] ^= 1
	// inspect is what Inspect finds: what Verify finds but a bad
	// signature, which it cannot see.
	tests := []struct {
		name          string
		ticket        []byte
		room, user    string
		want, inspect error
	}{
		{"valid", sign(priv, good), "r-1", "alice", nil, nil},
		{"another room", sign(priv, good), "r-2", "alice", ErrMismatch, ErrMismatch},
		{"another user", sign(priv, good), "r-1", "bob", ErrMismatch, ErrMismatch},
		{"expired", sign(priv, Claims{Room: "r-1", User: "alice", Epoch: 3, Expires: now.Unix()}), "r-1", "alice", ErrExpired, ErrExpired},
		{"broken signature", flipped, "r-1", "alice", ErrSignature, nil},
		{"tampered claims", tampered, "r-1", "alice", ErrSignature, ErrMismatch}, // the key "room" became "rnom"
		{"signed by another key", sign(otherPriv, good), "r-1", "alice", ErrSignature, nil},
		{"empty", nil, "r-1", "alice", ErrMalformed, ErrMalformed},
		{"signature only", make([]byte, ed25519.SignatureSize), "r-1", "alice", ErrMalformed, ErrMalformed},
		{"not msgpack", append([]byte{0xc1}, sign(priv, good)...), "r-1", "alice", ErrSignature, ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, f := range []struct {
				name string
				want error
				run  func() (Claims, error)
			}{
				{"Verify", tc.want, func() (Claims, error) { return Verify(pub, tc.ticket, tc.room, tc.user, now) }},
				{"Inspect", tc.inspect, func() (Claims, error) { return Inspect(tc.ticket, tc.room, tc.user, now) }},
			} {
				c, err := f.run()
				if !errors.Is(err, f.want) || (f.want == nil && err != nil) {
					t.Fatalf("%s = %v, want %v", f.name, err, f.want)
				}
				if f.want == nil && c != good {
					t.Fatalf("%s: claims = %+v, want %+v", f.name, c, good)
				}
			}
		})
	}
}

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	privPath, pubPath := filepath.Join(dir, "k"), filepath.Join(dir, "k.pub")
	if err := GenerateFiles(privPath, pubPath); err != nil {
		t.Fatal(err)
	}
	priv, err := LoadPrivate(privPath)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := LoadPublic(pubPath)
	if err != nil {
		t.Fatal(err)
	}
	tk, _ := Sign(priv, Claims{Room: "r", User: "u", Expires: time.Now().Add(time.Hour).Unix()})
	if _, err := Verify(pub, tk, "r", "u", time.Now()); err != nil {
		t.Fatalf("round trip through files: %v", err)
	}
	if _, err := LoadPublic(privPath); err == nil {
		t.Fatal("a private key file was accepted as a public key")
	}
}
