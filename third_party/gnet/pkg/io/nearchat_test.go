//go:build linux

// nearchat's tests of its change (NEARCHAT.md, the third): the raw calls
// behave as read(2), write(2) and writev(2) on a non-blocking socket.

package io

import (
	"bytes"
	"fmt"
	"testing"

	"golang.org/x/sys/unix"
)

func socketPair(t *testing.T) (int, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Close(fds[0]); _ = unix.Close(fds[1]) })
	return fds[0], fds[1]
}

func TestRawReadWrite(t *testing.T) {
	a, b := socketPair(t)
	buf := make([]byte, 64)
	if n, err := RawRead(b, buf); n != 0 || err != unix.EAGAIN {
		t.Fatalf("read of an empty socket: %d, %v; want 0, EAGAIN", n, err)
	}
	if n, err := RawWrite(a, []byte("hello")); n != 5 || err != nil {
		t.Fatalf("write: %d, %v", n, err)
	}
	if n, err := RawRead(b, buf); n != 5 || err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read: %d, %v, %q", n, err, buf[:n])
	}
	if n, err := RawWrite(a, nil); n != 0 || err != nil {
		t.Fatalf("empty write: %d, %v", n, err)
	}
	_ = unix.Close(b)
	if n, err := RawWrite(a, []byte("x")); n != 0 || err != unix.EPIPE {
		t.Fatalf("write to a closed peer: %d, %v; want 0, EPIPE", n, err)
	}
}

// RawWritev writes its buffers in order, skipping empty ones, at most
// rawIovecs per call; the caller writes the rest as after a short write.
func TestRawWritevInOrder(t *testing.T) {
	a, b := socketPair(t)
	var bs [][]byte
	var want bytes.Buffer
	for i := 0; i < 3*rawIovecs; i++ {
		s := []byte(fmt.Sprintf("<%d>", i))
		if i%7 == 0 {
			s = nil
		}
		bs = append(bs, s)
		want.Write(s)
	}
	var got bytes.Buffer
	buf := make([]byte, 4096)
	for left := bs; len(left) > 0; {
		n, err := RawWritev(a, left)
		if err != nil || n <= 0 {
			t.Fatalf("writev: %d, %v", n, err)
		}
		for n > 0 {
			if k := len(left[0]); n < k {
				left[0] = left[0][n:]
				n = 0
			} else {
				n -= k
				left = left[1:]
			}
		}
		for len(left) > 0 && len(left[0]) == 0 {
			left = left[1:]
		}
		for {
			k, err := RawRead(b, buf)
			if err == unix.EAGAIN {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			got.Write(buf[:k])
		}
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("read %q\nwant %q", got.Bytes(), want.Bytes())
	}
	if n, err := RawWritev(a, [][]byte{nil, {}}); n != 0 || err != nil {
		t.Fatalf("writev of empty buffers: %d, %v", n, err)
	}
}
