package wiretest_test

import (
	"testing"
	"time"

	"nearchat/pkg/proto"
	"nearchat/pkg/testkit"
	"nearchat/pkg/wire"
	"nearchat/pkg/wiretest"
)

func TestMain(m *testing.M) { testkit.VerifyNoLeaks(m) }

func TestPeerAgainstEcho(t *testing.T) {
	e := wiretest.EchoServer(t, 0, nil)
	p := wiretest.Dial(t, e.Addr())
	if w := p.Hello(&proto.Hello{Agent: "test/1"}); w.Server != "" || w.V != wire.Version {
		t.Fatalf("welcome %+v", w)
	}
	p.Send(&proto.Ping{ID: 7, At: 8})
	p.Send(&proto.Chat{Num: 1}) // the echo ignores what is not Hello or Ping
	raw, _ := wire.AppendFrame(nil, &proto.Ping{ID: 9})
	p.Raw(raw)
	if pong := wiretest.Expect[*proto.Pong](p, nil); pong.ID != 7 || pong.At != 8 {
		t.Fatalf("pong %+v", pong)
	}
	if pong := p.ExpectType(proto.TPong, nil).(*proto.Pong); pong.ID != 9 {
		t.Fatalf("pong %+v", pong)
	}
	e.Stop()
	p.ExpectClosed(0)
}

func TestEchoRefusing(t *testing.T) {
	refuse := func(*proto.Hello) wire.Message {
		return &proto.Error{Code: proto.CodeServerFull, Reason: "full", Fatal: true}
	}
	e := wiretest.EchoServer(t, 0, refuse)
	p := wiretest.Dial(t, e.Addr())
	p.Send(&proto.Hello{V: wire.Version})
	if got := wiretest.Expect[*proto.Error](p, nil); got.Code != proto.CodeServerFull {
		t.Fatalf("error %+v", got)
	}

	silent := wiretest.EchoServer(t, 0, func(*proto.Hello) wire.Message { return nil })
	q := wiretest.Dial(t, silent.Addr())
	q.Send(&proto.Hello{V: wire.Version})
	if m, err := q.Next(50 * time.Millisecond); err == nil || wiretest.Closed(err) {
		t.Fatalf("silent listener: Next = %v, %v; want a timeout that is not a close", m, err)
	}
}

func TestWaitFor(t *testing.T) {
	start := time.Now()
	testkit.WaitFor(t, 5*time.Second, "50 ms to pass", func() bool { return time.Since(start) > 50*time.Millisecond })
	log := testkit.Logger(t)
	log.Info("logged through t.Log", "k", 1)
}
