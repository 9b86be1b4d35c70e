package chatserver

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"nearchat/pkg/proto"
	"nearchat/pkg/wire"
)

// ending is how the server ended a raw TLS connection: the alerts it sent
// (level, description), and the frames before them.
type ending struct {
	frames []wire.Type
	alerts [][]byte
	closed bool
}

// end reads and opens everything the server sends until it closes the
// connection or timeout passes.
func (r *rawTLS) end(timeout time.Duration) ending {
	var out ending
	r.c.SetReadDeadline(time.Now().Add(timeout))
	b := make([]byte, 64<<10)
	for {
		for len(r.buf) >= recordHeader {
			n := recordHeader + int(binary.BigEndian.Uint16(r.buf[3:]))
			if n > len(r.buf) {
				break
			}
			pt, typ, size, err := r.in.open(nil, r.buf[:recordHeader], r.buf[recordHeader:n], &r.nonce)
			r.buf = r.buf[n:]
			if err != nil {
				r.t.Fatalf("a record from the server does not open: %v", err)
			}
			switch pt = pt[len(pt)-size:]; typ {
			case typeHandshake:
				if size > 0 && pt[0] == keyUpdate {
					_ = r.in.update()
				}
			case typeAlert:
				out.alerts = append(out.alerts, append([]byte(nil), pt...))
			case typeAppData:
				r.plain = append(r.plain, pt...)
			}
		}
		for len(r.plain) >= wire.HeaderSize {
			n := wire.LenSize + int(binary.BigEndian.Uint32(r.plain))
			if len(r.plain) < n {
				break
			}
			out.frames = append(out.frames, wire.Type(r.plain[wire.LenSize]))
			r.plain = r.plain[n:]
		}
		k, err := r.c.Read(b)
		r.buf = append(r.buf, b[:k]...)
		var ne net.Error
		switch {
		case err == nil || k > 0:
		case errors.As(err, &ne) && ne.Timeout():
			return out
		default:
			out.closed = true
			return out
		}
	}
}

func welcomed(t *testing.T, r *rawTLS) {
	t.Helper()
	if _, err := r.c.Write(r.frame(&proto.Hello{V: wire.Version})); err != nil {
		t.Fatal(err)
	}
	if typ, err := r.next(10 * time.Second); err != nil || typ != proto.TWelcome {
		t.Fatalf("hello: frame 0x%02x, %v", byte(typ), err)
	}
}

// A TLS member's connection ends in TLS's own terms (RFC 8446, 6): a fault
// in its records with the alert that names it, its close_notify with ours,
// and the server's own cut (an error frame) with close_notify after it, so
// the peer can tell a deliberate close from a cut made on the way. Before,
// every one was a bare TCP close (abuse probe, 2026-12-03).
func TestTLSEndsWithAlerts(t *testing.T) {
	ca := devCA(t)
	s := startTLSServer(t, ca)
	for _, tc := range []struct {
		name  string
		probe func(r *rawTLS) []byte
		level byte
		desc  byte
		frame wire.Type // an error frame before the alert, or 0
	}{
		{"bad record MAC", func(r *rawTLS) []byte {
			rec := r.frame(&proto.Ping{ID: 1})
			rec[len(rec)-1] ^= 1
			return rec
		}, 2, alertBadRecordMAC, 0},
		{"record overflow", func(r *rawTLS) []byte { return r.record(typeAppData, make([]byte, maxPlain+1)) }, 2, alertRecordOverflow, 0},
		{"change_cipher_spec after the handshake", func(r *rawTLS) []byte { return []byte{20, 3, 3, 0, 1, 1} }, 2, alertUnexpected, 0},
		{"second ClientHello", func(r *rawTLS) []byte { return r.record(typeHandshake, []byte{1, 0, 0, 2, 3, 3}) }, 2, alertUnexpected, 0},
		{"KeyUpdate request 2", func(r *rawTLS) []byte { return r.record(typeHandshake, []byte{keyUpdate, 0, 0, 1, 2}) }, 2, alertIllegalParameter, 0},
		{"malformed KeyUpdate", func(r *rawTLS) []byte { return r.record(typeHandshake, []byte{keyUpdate, 0, 0, 2, 0, 0}) }, 2, alertDecodeError, 0},
		{"client close_notify", func(r *rawTLS) []byte { return r.record(typeAlert, []byte{1, 0}) }, 1, alertCloseNotify, 0},
		{"cut off by the protocol", func(r *rawTLS) []byte { return r.frame(&proto.Chat{Num: 1, Text: "not joined"}) }, 1, alertCloseNotify, proto.TError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := dialRawTLS(t, s, ca, 0)
			welcomed(t, r)
			if _, err := r.c.Write(tc.probe(r)); err != nil {
				t.Fatal(err)
			}
			got := r.end(10 * time.Second)
			t.Logf("frames % x, alerts % x, closed %v", got.frames, got.alerts, got.closed)
			if !got.closed {
				t.Fatal("the connection was not closed")
			}
			if len(got.alerts) != 1 || len(got.alerts[0]) != 2 || got.alerts[0][0] != tc.level || got.alerts[0][1] != tc.desc {
				t.Errorf("alerts % x, want one of level %d, description %d", got.alerts, tc.level, tc.desc)
			}
			if tc.frame != 0 && (len(got.frames) == 0 || got.frames[len(got.frames)-1] != tc.frame) {
				t.Errorf("frames % x, want 0x%02x before the alert", got.frames, byte(tc.frame))
			}
		})
	}
}

// Key updates are paced: each costs the loop three HKDF expansions and a
// new AEAD, and a byte of data between runs of them resets the useless-
// record count, so one client re-keyed 107,000 times a second, 64% of the
// loop every member on it shares (abuse probe, 2026-12-03). Past the
// burst, the connection ends with unexpected_message; a few are fine.
func TestTLSKeyUpdatesPaced(t *testing.T) {
	ca := devCA(t)
	s := startTLSServer(t, ca)
	r := dialRawTLS(t, s, ca, 0)
	welcomed(t, r)
	ping, _ := wire.AppendFrame(nil, &proto.Ping{ID: 1})
	var out []byte
	for range 3 {
		out = append(out, r.keyUpdate(true)...)
	}
	out = append(out, r.record(typeAppData, ping)...)
	if _, err := r.c.Write(out); err != nil {
		t.Fatal(err)
	}
	if typ, err := r.next(10 * time.Second); err != nil || typ != proto.TPong {
		t.Fatalf("after 3 key updates: frame 0x%02x, %v; want a Pong", byte(typ), err)
	}
	// The storm: runs of key updates, each broken by one byte of data.
	out = out[:0]
	for i := range ping {
		for range 8 {
			out = append(out, r.keyUpdate(true)...)
		}
		out = append(out, r.record(typeAppData, ping[i:i+1])...)
	}
	if _, err := r.c.Write(out); err != nil {
		t.Fatal(err)
	}
	got := r.end(10 * time.Second)
	if !got.closed || len(got.alerts) != 1 || got.alerts[0][1] != alertUnexpected {
		t.Fatalf("a key update storm: alerts % x, closed %v; want unexpected_message and a close", got.alerts, got.closed)
	}
}

// Records sealed under the client's handshake key are taken only up to its
// Finished (crypto/tls read them); one after it is the client's fault, as
// it would be later. Before, they were skipped unchecked and the Hello
// behind them welcomed (abuse probe, 2026-12-03).
func TestTLSHandshakeKeyEndsAtFinished(t *testing.T) {
	ca := devCA(t)
	s := startTLSServer(t, ca)
	hello, _ := wire.AppendFrame(nil, &proto.Hello{V: wire.Version})
	for _, tc := range []struct {
		name string
		typ  byte
		body []byte
	}{
		{"a second ClientHello", typeHandshake, []byte{1, 0, 0, 2, 3, 3}},
		{"a second Finished", typeHandshake, append([]byte{20, 0, 0, 32}, make([]byte, 32)...)},
		{"application data", typeAppData, []byte("0123456789")},
		{"a fatal alert", typeAlert, []byte{2, 40}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := afterFinished(t, s, ca, func(keys *keyCapture, nonce *[12]byte) []byte {
				var out, hs halfConn
				if err := out.setSecret(tls.TLS_AES_128_GCM_SHA256, keys.client); err != nil {
					t.Error(err)
				}
				if err := hs.setSecret(tls.TLS_AES_128_GCM_SHA256, keys.clientHS); err != nil {
					t.Error(err)
				}
				hs.seq = 1 // the Finished went out under sequence number 0
				rec := hs.seal(nil, tc.typ, tc.body, nonce)
				return append(rec, out.seal(nil, typeAppData, hello, nonce)...)
			})
			if err == nil && len(b) >= wire.HeaderSize && wire.Type(b[wire.LenSize]) == proto.TWelcome {
				t.Fatal("a record under the handshake key after the Finished was skipped, and the Hello behind it welcomed")
			}
			// crypto/tls names the alert it got: unexpected_message.
			if err == nil || !strings.Contains(err.Error(), "unexpected message") {
				t.Fatalf("the client read %d bytes, %v; want the unexpected_message alert", len(b), err)
			}
		})
	}
}

// A KeyUpdate may come in pieces, one record each (RFC 8446, 5.1), as
// stacks other than crypto/tls may send it; data in the middle of one, or
// a piece that makes it longer than a KeyUpdate, ends the connection.
// Before, a split KeyUpdate ended it (TLS review, 2026-12-03).
func TestTLSKeyUpdateInPieces(t *testing.T) {
	ca := devCA(t)
	s := startTLSServer(t, ca)
	r := dialRawTLS(t, s, ca, 0)
	welcomed(t, r)
	out := r.record(typeHandshake, []byte{keyUpdate, 0})
	out = append(out, r.record(typeHandshake, []byte{0, 1})...)
	out = append(out, r.record(typeHandshake, []byte{0})...)
	if err := r.out.update(); err != nil {
		t.Fatal(err)
	}
	out = append(out, r.frame(&proto.Ping{ID: 5})...)
	if _, err := r.c.Write(out); err != nil {
		t.Fatal(err)
	}
	if typ, err := r.next(10 * time.Second); err != nil || typ != proto.TPong {
		t.Fatalf("a KeyUpdate in three records: frame 0x%02x, %v; want it taken and the Ping answered", byte(typ), err)
	}
	for _, tc := range []struct {
		name   string
		pieces [][]byte
	}{
		{"data in the middle", [][]byte{{keyUpdate, 0}, nil}},
		{"longer than a KeyUpdate", [][]byte{{keyUpdate, 0, 0}, {9, 0, 0, 0}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := dialRawTLS(t, s, ca, 0)
			welcomed(t, r)
			var out []byte
			for _, p := range tc.pieces {
				if p == nil {
					out = append(out, r.frame(&proto.Ping{ID: 6})...)
					continue
				}
				out = append(out, r.record(typeHandshake, p)...)
			}
			if _, err := r.c.Write(out); err != nil {
				t.Fatal(err)
			}
			if got := r.end(10 * time.Second); !got.closed || len(got.alerts) != 1 || got.alerts[0][1] != alertUnexpected {
				t.Fatalf("alerts % x, closed %v; want unexpected_message and a close", got.alerts, got.closed)
			}
		})
	}
}
