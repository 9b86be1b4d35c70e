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
