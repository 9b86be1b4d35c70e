// Package mono is a monotonic clock read as an int64, for timers kept in
// atomics (when a connection was last read from, when a frame began).
// Wall clock readings (UnixNano) move when the system clock is stepped: a
// step forward made every idle connection look silent for the step, a step
// back made none, and in one make test a step cut a trickling frame off
// 25 ms before its deadline.
package mono

import "time"

var base = time.Now()

// Now returns the nanoseconds since the process loaded this package, plus
// one, so that it is never 0 (callers use 0 for "not set"). Differences of
// two readings are real elapsed time whatever the system clock does.
func Now() int64 { return int64(time.Since(base)) + 1 }
