package chatserver

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"testing"
	"time"

	"nearchat/pkg/proto"
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

// BenchmarkSealPerDelivery is the price TLS adds to each delivery on the
// loop: sealing the frames a member is owed, as sealTo does, in records
// of one frame (a lone delivery), 16, and as many as fill a record (a
// busy room's pass). Plaintext pays nothing here: its frames are written
// as they are. Its ns/delivery beside the plaintext server's whole cost
// per delivery (deliveries per CPU-s in `make bench`) bounds what TLS
// fan-out can reach against plaintext on the machine.
func BenchmarkSealPerDelivery(b *testing.B) {
	secret := bytes.Repeat([]byte{7}, 48)
	text := bytes.Repeat([]byte{'x'}, 64)
	frame := proto.AppendDeliver(nil, 1<<40, "u1", 1<<20, time.Now().UnixNano(), text, 0)
	for _, suite := range []uint16{tls.TLS_AES_128_GCM_SHA256, tls.TLS_CHACHA20_POLY1305_SHA256} {
		for _, frames := range []int{1, 16, maxPlain / len(frame)} {
			b.Run(fmt.Sprintf("%s/frames=%d", tls.CipherSuiteName(suite), frames), func(b *testing.B) {
				var h halfConn
				if err := h.setSecret(suite, secret); err != nil {
					b.Fatal(err)
				}
				batch := bytes.Repeat(frame, frames)
				var n [12]byte
				out := make([]byte, 0, recordHeader+maxCiphertext)
				b.SetBytes(int64(len(batch)))
				b.ReportAllocs()
				for b.Loop() {
					out = h.seal(out[:0], typeAppData, batch, &n)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*frames), "ns/delivery")
				b.ReportMetric(float64(len(frame)), "B/delivery")
			})
		}
	}
}
