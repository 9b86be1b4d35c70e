package chatserver

import (
	"bytes"
	"crypto/tls"
	"testing"
)

// TestRecordSealOpenAndKeyUpdate seals records with one side's state and
// opens them with the other's, for every TLS 1.3 suite, across a key
// update, and checks that a changed byte or a replayed record is refused.
func TestRecordSealOpenAndKeyUpdate(t *testing.T) {
	secret := bytes.Repeat([]byte{7}, 48)
	for _, suite := range []uint16{tls.TLS_AES_128_GCM_SHA256, tls.TLS_AES_256_GCM_SHA384, tls.TLS_CHACHA20_POLY1305_SHA256} {
		t.Run(tls.CipherSuiteName(suite), func(t *testing.T) {
			var w, r halfConn
			if err := w.setSecret(suite, secret); err != nil {
				t.Fatal(err)
			}
			if err := r.setSecret(suite, secret); err != nil {
				t.Fatal(err)
			}
			var nonce [12]byte
			roundTrip := func(msg string) []byte {
				t.Helper()
				rec := w.seal(nil, typeAppData, []byte(msg), &nonce)
				out, typ, n, err := r.open(nil, rec[:recordHeader], rec[recordHeader:], &nonce)
				if err != nil || typ != typeAppData || string(out[len(out)-n:]) != msg {
					t.Fatalf("open(seal(%q)) = %q, type %d, %v", msg, out, typ, err)
				}
				return rec
			}
			roundTrip("first")
			rec := roundTrip("second")
			if _, _, _, err := r.open(nil, rec[:recordHeader], rec[recordHeader:], &nonce); err == nil {
				t.Fatal("a replayed record opened")
			}
			if err := w.update(); err != nil {
				t.Fatal(err)
			}
			stale := r
			if err := r.update(); err != nil {
				t.Fatal(err)
			}
			roundTrip("after the update")
			rec2 := w.seal(nil, typeAppData, []byte("under the new key"), &nonce)
			if _, _, _, err := stale.open(nil, rec2[:recordHeader], rec2[recordHeader:], &nonce); err == nil {
				t.Fatal("the old key opened a record sealed after the update")
			}
			rec2[len(rec2)-1] ^= 1
			if _, _, _, err := r.open(nil, rec2[:recordHeader], rec2[recordHeader:], &nonce); err == nil {
				t.Fatal("a tampered record opened")
			}
		})
	}
}

// A record whose plaintext (content, type and padding) is over 2^14 + 1
// bytes is refused (RFC 8446 section 5.4), though its ciphertext fits:
// before, one of 16,623 bytes was taken (abuse probe, 2026-12-01).
func TestRecordOverflowRefused(t *testing.T) {
	secret := bytes.Repeat([]byte{7}, 32)
	var w, r halfConn
	if err := w.setSecret(tls.TLS_AES_128_GCM_SHA256, secret); err != nil {
		t.Fatal(err)
	}
	if err := r.setSecret(tls.TLS_AES_128_GCM_SHA256, secret); err != nil {
		t.Fatal(err)
	}
	var nonce [12]byte
	for _, size := range []int{maxPlain, maxPlain + 1, maxPlain + 200} {
		rec := w.seal(nil, typeAppData, make([]byte, size), &nonce)
		_, _, _, err := r.open(nil, rec[:recordHeader], rec[recordHeader:], &nonce)
		if (err == nil) != (size <= maxPlain) {
			t.Fatalf("%d bytes of content: open says %v", size, err)
		}
	}
}
