//go:build linux && race

// nearchat's change (NEARCHAT.md, the third): the raw calls tell the race
// detector what unix.Read and unix.Write tell it, that I/O orders the
// goroutines on either side of it.

package io

import (
	"runtime"
	"unsafe"
)

var ioSync int64

func raceReadDone()    { runtime.RaceAcquire(unsafe.Pointer(&ioSync)) }
func raceWriteBefore() { runtime.RaceReleaseMerge(unsafe.Pointer(&ioSync)) }
