/*
 * Copyright (c) 2021 The Gnet Authors. All rights reserved.
 *
 * Licensed under the Apache License, Version 2.0 (the "License");
 * you may not use this file except in compliance with the License.
 * You may obtain a copy of the License at
 *
 *      http://www.apache.org/licenses/LICENSE-2.0
 *
 * Unless required by applicable law or agreed to in writing, software
 * distributed under the License is distributed on an "AS IS" BASIS,
 * WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
 * See the License for the specific language governing permissions and
 * limitations under the License.
 *
 */

package io

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Writev calls writev() on Linux.
func Writev(fd int, iov [][]byte) (int, error) {
	if len(iov) == 0 {
		return 0, nil
	}
	return unix.Writev(fd, iov)
}

// Readv calls readv() on Linux.
func Readv(fd int, iov [][]byte) (int, error) {
	if len(iov) == 0 {
		return 0, nil
	}
	return unix.Readv(fd, iov)
}

// The Raw functions below are nearchat's change (NEARCHAT.md, the third):
// read(2), write(2) and writev(2) on a non-blocking socket, made as raw
// system calls. Such a call never blocks, so telling the scheduler about
// it only costs: entersyscall wakes sysmon from its deep sleep whenever
// every P was idle, and sysmon then ticks every 20 µs on the loop's own CPU
// (11% of a chat server's CPU in a room of two, pinned to one CPU).

// RawRead reads into p from the non-blocking descriptor fd.
func RawRead(fd int, p []byte) (int, error) {
	r, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	if r > 0 {
		raceReadDone()
	}
	return int(r), nil
}

// RawWrite writes p to the non-blocking descriptor fd.
func RawWrite(fd int, p []byte) (int, error) {
	raceWriteBefore()
	r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// rawIovecs is how many buffers one RawWritev passes; the rest wait for
// the next call, as after any short write.
const rawIovecs = 64

// RawWritev writes the buffers of bs, in order, to the non-blocking
// descriptor fd. It may write less than all of them, like writev(2).
func RawWritev(fd int, bs [][]byte) (int, error) {
	var vecs [rawIovecs]unix.Iovec
	n := 0
	for _, b := range bs {
		if len(b) == 0 {
			continue
		}
		if n == rawIovecs {
			break
		}
		vecs[n].Base = unsafe.SliceData(b)
		vecs[n].SetLen(len(b))
		n++
	}
	if n == 0 {
		return 0, nil
	}
	raceWriteBefore()
	r, _, e := syscall.RawSyscall(syscall.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&vecs[0])), uintptr(n))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}
