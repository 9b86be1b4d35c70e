package chatserver

import (
	"testing"

	"nearchat/pkg/proto"
	"nearchat/pkg/wiretest"
)

// TestClientErrorAndPongAccepted checks the two frames of every connection
// a client may send a chat server besides Hello and Ping: a Pong is taken
// and ignored, a non-fatal Error is taken and the connection stays, and a
// fatal Error (the client is closing) ends the connection without an Error
// of our own in reply (two peers that answer an Error with one would trade
// them forever) and takes the member out of its room; in plaintext and in
// TLS.
func TestClientErrorAndPongAccepted(t *testing.T) {
	t.Run("plain", func(t *testing.T) {
		s := startServer(t, nil)
		a, _ := joinAs(t, s, "peer-error", "alice")
		b, _ := joinAs(t, s, "peer-error", "bob")
		clientErrorAndPong(t, a, b)
	})
	t.Run("tls", func(t *testing.T) {
		ca := devCA(t)
		s := startTLSServer(t, ca)
		a := tlsMember(t, s.Addr(), ca, "peer-error", "alice")
		b := tlsMember(t, s.Addr(), ca, "peer-error", "bob")
		clientErrorAndPong(t, a, b)
	})
}

func clientErrorAndPong(t *testing.T, a, b *peer) {

	alive := func(p *peer, id uint64) {
		t.Helper()
		p.send(&proto.Ping{ID: id})
		for {
			m, err := p.next(wiretest.Timeout)
			if err != nil {
				t.Fatalf("waiting for pong %d: %v", id, err)
			}
			switch m := m.(type) {
			case *proto.Pong:
				if m.ID == id {
					return
				}
			case *proto.Error:
				t.Fatalf("got %+v, want pong %d", m, id)
			}
		}
	}

	a.send(&proto.Pong{ID: 7, At: 1})
	alive(a, 1)
	a.send(&proto.Error{Code: proto.CodeBadBody, Reason: "a frame we could not read"})
	alive(a, 2)

	a.send(&proto.Error{Code: proto.CodeShutdown, Reason: "quitting", Fatal: true})
	a.ExpectClosedQuietly()
	// bob hears alice leave, as a lone Presence or in a batch.
	for {
		m, err := b.next(wiretest.Timeout)
		if err != nil {
			t.Fatalf("bob waiting for alice's leave: %v", err)
		}
		var changes []proto.Presence
		switch m := m.(type) {
		case *proto.Presence:
			changes = []proto.Presence{*m}
		case *proto.Presences:
			changes = m.Changes
		}
		for _, c := range changes {
			if c.User == "alice" && !c.Here {
				return
			}
		}
	}
}

// TestErrorBeforeHelloNotAnswered: an Error as a connection's first frame
// was answered with a fatal no_hello Error, and an Error frame whose body
// did not decode with a bad_body one (black-box sweep, 2026-12-05): the
// rule that an Error is never answered with an Error held only after the
// Hello. Now a non-fatal Error before the Hello is taken and the Hello
// still awaited, and a fatal or unreadable one closes the connection
// without a word; in plaintext and in TLS.
func TestErrorBeforeHelloNotAnswered(t *testing.T) {
	// An Error frame (type 0x03) whose body is the msgpack integer 1,
	// not a map.
	garbled := []byte{0, 0, 0, 2, byte(proto.TError), 0x01}
	run := func(t *testing.T, open func(t *testing.T) *peer) {
		t.Run("non-fatal, then hello", func(t *testing.T) {
			p := open(t)
			p.send(&proto.Error{Code: proto.CodeInternal, Reason: "not yet"})
			p.Hello(&proto.Hello{Agent: "test"})
		})
		t.Run("fatal", func(t *testing.T) {
			p := open(t)
			p.send(&proto.Error{Code: proto.CodeShutdown, Reason: "quitting", Fatal: true})
			p.ExpectClosedQuietly()
		})
		t.Run("unreadable", func(t *testing.T) {
			p := open(t)
			p.raw(garbled)
			p.ExpectClosedQuietly()
		})
		t.Run("unreadable after hello", func(t *testing.T) {
			p := open(t)
			p.Hello(&proto.Hello{Agent: "test"})
			p.raw(garbled)
			p.ExpectClosedQuietly()
		})
	}
	t.Run("plain", func(t *testing.T) {
		s := startServer(t, nil)
		run(t, func(t *testing.T) *peer { return dial(t, s) })
	})
	t.Run("tls", func(t *testing.T) {
		ca := devCA(t)
		s := startTLSServer(t, ca)
		run(t, func(t *testing.T) *peer {
			p, err := dialTLS(t, s.Addr(), ca, nil)
			if err != nil {
				t.Fatal(err)
			}
			return p
		})
	})
}
