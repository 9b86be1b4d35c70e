package main

import (
	"net"
	"os/exec"
	"slices"
	"testing"
	"time"

	"nearchat/bench"
	"nearchat/pkg/proto"
	"nearchat/pkg/wire"
)

// TestChildPinnedApartOncePinned: the server child is pinned to
// -server-cpu when the load generator has pinned itself (pinSelf), though
// runtime.NumCPU then says 1. Before, it was not pinned at all and ran
// on the load generator's CPU.
func TestChildPinnedApartOncePinned(t *testing.T) {
	if _, err := exec.LookPath("taskset"); err != nil {
		t.Skip("no taskset")
	}
	defer func(f func() int) { numCPU = f }(numCPU)
	numCPU = func() int { return 1 } // what a process pinned to one CPU sees
	tests := []struct {
		name   string
		pinned string // pinnedEnv
		cpus   string
		want   bool
	}{
		{"pinned by pinSelf", "1", "0", true},
		{"not pinned, one CPU", "", "0", false},
		{"no -server-cpu", "1", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(pinnedEnv, tt.pinned)
			cmd := childCommand([]string{"/bin/server", "-serve", "nearchat"}, tt.cpus)
			i := slices.Index(cmd.Args, "-c")
			got := i >= 0 && i+1 < len(cmd.Args) && cmd.Args[i+1] == tt.cpus
			if got != tt.want {
				t.Errorf("command %q: pinned to %q is %v, want %v", cmd.Args, tt.cpus, got, tt.want)
			}
			if last := cmd.Args[len(cmd.Args)-3:]; !slices.Equal(last, []string{"/bin/server", "-serve", "nearchat"}) {
				t.Errorf("command %q does not end with the child's arguments", cmd.Args)
			}
		})
	}
}

func TestInFlight(t *testing.T) {
	tests := []struct {
		window, batch, m      int
		wantWindow, wantBatch int
	}{
		{0, 0, 2, 1024, 1024},
		{0, 0, 16, 1024, 1024},
		{0, 0, 65, 1024, 1024},
		{0, 0, 256, 257, 257},
		{0, 0, 1024, 64, 64},
		{0, 0, 10_000, 64, 64},
		{0, 1, 2, 1024, 1},
		{64, 0, 1024, 64, 64},
		{64, 8, 2, 64, 8},
	}
	for _, tt := range tests {
		o := options{window: tt.window, batch: tt.batch}
		w, b := o.inFlight(tt.m)
		if w != tt.wantWindow || b != tt.wantBatch {
			t.Errorf("-window %d -batch %d, %d members: window %d batch %d, want %d and %d",
				tt.window, tt.batch, tt.m, w, b, tt.wantWindow, tt.wantBatch)
		}
	}
}

// TestSendCoalesces: a closed-loop sender writes every message its free
// slots allow, up to the batch, in one system call, numbered in order; a
// batch of 1 writes one.
func TestSendCoalesces(t *testing.T) {
	for _, tt := range []struct{ free, batch, want int }{
		{5, 8, 5}, {5, 3, 3}, {5, 1, 1}, {1, 8, 1},
	} {
		client, server := net.Pipe()
		r := &room{id: "r", members: 2, slots: make([]slot, 8), tokens: make(chan struct{}, 8)}
		for range tt.free {
			r.tokens <- struct{}{}
		}
		l := &load{p: &nearchatProto{}, size: 64, fail: make(chan struct{}), rooms: []*room{r}}
		r.l, r.sender = l, client
		got := make(chan []byte, 1)
		go func() {
			b := make([]byte, 64<<10)
			n, _ := server.Read(b) // net.Pipe: one Read takes one Write
			got <- b[:n]
		}()
		if err := l.send(r, time.Now(), tt.batch); err != nil {
			t.Fatal(err)
		}
		b := <-got
		var nums []uint64
		for len(b) > 0 {
			ty, body, n, err := wire.ParseFrame(b, 0)
			if err != nil || ty != proto.TChat {
				t.Fatalf("frame %v: %v", ty, err)
			}
			var c proto.Chat
			if err := wire.Unmarshal(body, &c); err != nil {
				t.Fatal(err)
			}
			nums = append(nums, c.Num)
			b = b[n:]
		}
		want := make([]uint64, tt.want)
		for i := range want {
			want[i] = uint64(i + 1)
		}
		if !slices.Equal(nums, want) {
			t.Errorf("%d free, batch %d: one write carried %v, want %v", tt.free, tt.batch, nums, want)
		}
		if left := len(r.tokens); left != tt.free-tt.want {
			t.Errorf("%d free, batch %d: %d slots left, want %d", tt.free, tt.batch, left, tt.free-tt.want)
		}
		client.Close()
		server.Close()
	}
}

// TestTallySumsRounds: a cell measured in rounds reports the rounds'
// sums, so that msgs/s is all deliveries over all the time measured, not
// an average of per-round rates.
func TestTallySumsRounds(t *testing.T) {
	var sum tally
	sum.add(tally{n: 1000, elapsed: time.Second, server: 500 * time.Millisecond, self: time.Second, reads: 10, writes: 20})
	sum.add(tally{n: 3000, elapsed: time.Second, server: 500 * time.Millisecond, self: 500 * time.Millisecond, reads: 30, writes: 20})
	want := tally{n: 4000, elapsed: 2 * time.Second, server: time.Second, self: 1500 * time.Millisecond, reads: 40, writes: 40}
	if sum != want {
		t.Fatalf("sum %+v, want %+v", sum, want)
	}
	r := sum.figures(new(bench.Histogram), 0)
	if r.msgsPerSec != 2000 || r.perCPU != 4000 || r.serverBusy != 0.5 || r.loadBusy != 0.75 || r.reads != 1 || r.writes != 1 {
		t.Errorf("figures %+v", r)
	}
}

// TestStampReaderStampsReads: a delivery's arrival is when the read that
// brought it returned; a read that returns nothing leaves the stamp.
func TestStampReaderStampsReads(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	sr := &stampReader{r: client}
	go server.Write([]byte("abc"))
	before := time.Now().UnixNano()
	b := make([]byte, 8)
	if n, err := sr.Read(b); err != nil || n != 3 {
		t.Fatalf("read %d, %v", n, err)
	}
	if sr.at < before || sr.at > time.Now().UnixNano() {
		t.Fatalf("stamp %d outside the read (%d and after)", sr.at, before)
	}
	at := sr.at
	server.Close()
	if n, _ := sr.Read(b); n != 0 || sr.at != at {
		t.Errorf("a read of nothing moved the stamp: %d bytes, %d -> %d", n, at, sr.at)
	}
}

// TestNearchatReceiversNotCutOff: the chat server of the benchmark keeps
// members that only listen. Every server of a pattern runs through the
// others' rounds, and with the default idle cut-off (30 s) nearchat's
// receivers were closed mid-run ("nothing received for 30s") in the
// default fixed-rate pattern and in every -full run.
func TestNearchatReceiversNotCutOff(t *testing.T) {
	if got := nearchatConfig().IdleTimeout; got != 0 {
		t.Fatalf("IdleTimeout %v: members that only listen are cut off after it", got)
	}
}
