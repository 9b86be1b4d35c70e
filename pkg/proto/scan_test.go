package proto

import (
	"bytes"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"nearchat/pkg/wire"
)

func TestDeliverInfo(t *testing.T) {
	tests := []struct {
		name string
		d    Deliver
	}{
		{"zero", Deliver{}},
		{"small", Deliver{Seq: 1, From: "u1", Num: 2, At: 3, Text: "hi"}},
		{"now", Deliver{Seq: 70000, From: "sender", Num: 1 << 33, At: time.Now().UnixNano(), Text: strings.Repeat("x", 1024)}},
		{"max", Deliver{Seq: math.MaxUint64, From: strings.Repeat("z", 32), Num: math.MaxUint64 - 1, At: math.MaxInt64, Text: strings.Repeat("q", MaxText)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frame, err := wire.AppendFrame(nil, &tt.d)
			if err != nil {
				t.Fatal(err)
			}
			typ, body, _, err := wire.ParseFrame(frame, 0)
			if err != nil || typ != TDeliver {
				t.Fatalf("ParseFrame: type 0x%02x, %v", byte(typ), err)
			}
			seq, num, at, ok := DeliverInfo(body)
			if !ok || seq != tt.d.Seq || num != tt.d.Num || at != tt.d.At {
				t.Errorf("DeliverInfo = %d, %d, %d, %v; want %d, %d, %d, true", seq, num, at, ok, tt.d.Seq, tt.d.Num, tt.d.At)
			}
		})
	}
	// Negative integers are refused by the codec, so by the fast path too.
	negative := AppendDeliver(nil, 1, "a", 2, -5, []byte("y"), 0)[wire.HeaderSize:]
	for _, bad := range [][]byte{nil, {0x91, 0x01}, {0x81, 0xa2, 'a', 't', 0x90}, {0x81, 0xa2, 'a'}, {0x81, 0xa2, 'a', 't', 0x01, 0x00},
		negative, {0x81, 0xa2, 'a', 't', 0xff}, {0x81, 0xa3, 's', 'e', 'q', 0xd0, 0x80}} {
		if _, _, _, ok := DeliverInfo(bad); ok {
			t.Errorf("DeliverInfo(% x) ok, want not ok", bad)
		}
	}
}

func TestAppendChat(t *testing.T) {
	for _, size := range []int{0, 1, 31, 32, 64, 255, 256, 1024, MaxText} {
		text := strings.Repeat("t", size)
		frame := AppendChat([]byte("junk"), 42, 7, text)[4:]
		typ, body, n, err := wire.ParseFrame(frame, 0)
		if err != nil || typ != TChat || n != len(frame) {
			t.Fatalf("size %d: ParseFrame: type 0x%02x, n %d of %d, %v", size, byte(typ), n, len(frame), err)
		}
		var c Chat
		if err := wire.Unmarshal(body, &c); err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if c.Num != 42 || c.At != 7 || c.Text != text {
			t.Errorf("size %d: decoded num %d at %d text of %d bytes", size, c.Num, c.At, len(c.Text))
		}
	}
	if a := testing.AllocsPerRun(100, func() { _ = AppendChat(make([]byte, 0, 2048)[:0], 1, 2, "hello") }); a > 1 {
		t.Errorf("AppendChat: %.0f allocations, want only the caller's buffer", a)
	}
}

func TestHandEncodersDecode(t *testing.T) {
	for _, want := range []Deliver{{}, {Seq: 1, From: "u", Num: 2, At: 3, Text: "hi", Inc: 4},
		{Seq: math.MaxUint64, From: strings.Repeat("f", MaxUser), Num: 1 << 40, At: math.MaxInt64, Text: strings.Repeat("t", MaxText), Inc: math.MaxUint64},
		{Seq: 7, From: "x", Num: 8, At: 9, Text: strings.Repeat("t", 300)}} {
		b := AppendDeliver([]byte("junk"), want.Seq, want.From, want.Num, want.At, []byte(want.Text), want.Inc)[4:]
		var got Deliver
		decodeFrame(t, b, TDeliver, &got)
		if got != want {
			t.Fatalf("AppendDeliver(%+v) decodes to %+v", want, got)
		}
	}
	for _, want := range []Ack{{}, {Num: 1, Seq: 2}, {Num: math.MaxUint64, Seq: 1 << 40}} {
		var got Ack
		decodeFrame(t, AppendAck([]byte("junk"), want.Num, want.Seq)[4:], TAck, &got)
		if got != want {
			t.Fatalf("AppendAck(%+v) decodes to %+v", want, got)
		}
	}
}

func decodeFrame(t *testing.T, b []byte, typ wire.Type, v any) {
	t.Helper()
	got, body, n, err := wire.ParseFrame(b, 0)
	if err != nil || got != typ || n != len(b) {
		t.Fatalf("ParseFrame: type 0x%02x, %d of %d bytes, %v", byte(got), n, len(b), err)
	}
	if err := wire.Unmarshal(body, v); err != nil {
		t.Fatal(err)
	}
}

func TestScanChat(t *testing.T) {
	for _, want := range []Chat{{}, {Num: 1, At: 2, Text: "hello"}, {Num: 3, Text: "again", To: "bob"}, {Num: math.MaxUint64, At: math.MaxInt64, Text: strings.Repeat("x", MaxText)}} {
		// Both the codec's encoding and the hand-written one.
		coded, _ := wire.AppendFrame(nil, &want)
		frames := [][]byte{coded}
		if want.To == "" {
			frames = append(frames, AppendChat(nil, want.Num, want.At, want.Text))
		}
		for _, frame := range frames {
			_, body, _, err := wire.ParseFrame(frame, 0)
			if err != nil {
				t.Fatal(err)
			}
			num, at, text, to, ok := ScanChat(body)
			if !ok || num != want.Num || at != want.At || string(text) != want.Text || string(to) != want.To {
				t.Fatalf("ScanChat(%+v) = %d, %d, %d bytes, %v", want, num, at, len(text), ok)
			}
		}
	}
	negative := AppendChat(nil, 1, -1, "x")[wire.HeaderSize:]
	for _, bad := range [][]byte{nil, {0x91, 0x01}, {0x81, 0xa4, 't', 'e', 'x', 't', 0x01}, {0x81, 0xa3, 'n', 'u', 'm', 0xa1, 'x'}, {0x81, 0xa2, 'a', 't', 0x01, 0x00}, {0x82, 0xa3, 'n', 'u', 'm', 0x01, 0xa4, 'e', 'v', 'i', 'l', 0xc0},
		negative, {0x81, 0xa3, 'n', 'u', 'm', 0xff}, {0x81, 0xa3, 'n', 'u', 'm', 0xd1, 0xff, 0xff}} {
		if _, _, _, _, ok := ScanChat(bad); ok {
			t.Errorf("ScanChat(% x) ok, want not ok", bad)
		}
	}
	body := AppendChat(nil, 1, 2, "hi")[wire.HeaderSize:]
	if a := testing.AllocsPerRun(100, func() { _, _, _, _, _ = ScanChat(body) }); a != 0 {
		t.Errorf("ScanChat allocates %.0f times", a)
	}
}

// TestAppendPresences checks that coalescing encoded Presence frames gives
// the bytes wire.AppendFrame gives for the same Presences, across the
// msgpack array sizes.
func TestAppendPresences(t *testing.T) {
	for _, n := range []int{1, 2, 15, 16, 300, 1 << 16} {
		var want Presences
		var frames []byte
		for i := range n {
			p := Presence{User: fmt.Sprintf("u%d", i), Here: i%3 != 0, LastSent: uint64(i), Inc: uint64(i) << 20}
			want.Changes = append(want.Changes, p)
			frames, _ = wire.AppendFrame(frames, &p)
		}
		wantB, err := wire.AppendFrame(nil, &want)
		if n < 1<<12 && err != nil {
			t.Fatal(err)
		}
		got := AppendPresences([]byte("junk"), n, frames)[4:]
		if err == nil && !bytes.Equal(got, wantB) {
			t.Fatalf("n=%d: AppendPresences = %x, want %x", n, got, wantB)
		}
		body := got[wire.HeaderSize:]
		var dec Presences
		if err := wire.Unmarshal(body, &dec); err != nil || !reflect.DeepEqual(dec, want) {
			t.Fatalf("n=%d: decodes to %d changes, %v", n, len(dec.Changes), err)
		}
	}
}

// The scanners are the chat server's per-message parse (ScanChat) and the
// benchmarks' receivers' (DeliverInfo): a frame as a client's codec
// encodes it, and as the server's hand encoder does.
func BenchmarkScanChat(b *testing.B) {
	coded, _ := wire.AppendFrame(nil, &Chat{Num: 123456, At: time.Now().UnixNano(), Text: strings.Repeat("x", 64)})
	for _, bc := range []struct {
		name  string
		frame []byte
	}{{"codec", coded}, {"hand", AppendChat(nil, 123456, time.Now().UnixNano(), strings.Repeat("x", 64))}} {
		body := bc.frame[wire.HeaderSize:]
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if _, _, _, _, ok := ScanChat(body); !ok {
					b.Fatal("not ok")
				}
			}
		})
	}
}

func BenchmarkDeliverInfo(b *testing.B) {
	body := AppendDeliver(nil, 99, "sender", 123456, time.Now().UnixNano(), []byte(strings.Repeat("x", 64)), 7)[wire.HeaderSize:]
	for b.Loop() {
		if _, _, _, ok := DeliverInfo(body); !ok {
			b.Fatal("not ok")
		}
	}
}

// FuzzScanners: whatever ScanChat and DeliverInfo accept, the codec
// decodes to the same fields; the fast paths never take what the codec
// would read otherwise.
func FuzzScanners(f *testing.F) {
	for _, c := range []Chat{{}, {Num: 1, At: -2, Text: "hi"}, {Num: math.MaxUint64, At: math.MinInt64, Text: strings.Repeat("x", 300), To: "bob"}} {
		b, _ := wire.AppendFrame(nil, &c)
		f.Add(b[wire.HeaderSize:])
	}
	f.Add(AppendChat(nil, 7, 8, strings.Repeat("y", 64))[wire.HeaderSize:])
	f.Add(AppendDeliver(nil, 1, "from", 2, 3, []byte(strings.Repeat("z", 40)), 4)[wire.HeaderSize:])
	for _, d := range []Deliver{{}, {Seq: 300, From: strings.Repeat("f", 32), Num: 1 << 20, At: -1, Text: "t"}} {
		b, _ := wire.AppendFrame(nil, &d)
		f.Add(b[wire.HeaderSize:])
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if num, at, text, to, ok := ScanChat(body); ok {
			var c Chat
			if err := wire.Unmarshal(body, &c); err != nil {
				t.Fatalf("ScanChat took % x, the codec refuses it: %v", body, err)
			}
			if c.Num != num || c.At != at || c.Text != string(text) || c.To != string(to) {
				t.Fatalf("ScanChat(% x) = %d %d %q %q, the codec %+v", body, num, at, text, to, c)
			}
		}
		if seq, num, at, ok := DeliverInfo(body); ok {
			var d Deliver
			if err := wire.Unmarshal(body, &d); err == nil && (d.Seq != seq || d.Num != num || d.At != at) {
				t.Fatalf("DeliverInfo(% x) = %d %d %d, the codec %+v", body, seq, num, at, d)
			}
		}
	})
}
