package bench

import (
	"fmt"
	"syscall"
)

// RaiseFileLimit lifts the soft RLIMIT_NOFILE to want, or to the hard limit
// when that is lower, and returns the soft limit now in force. Fan-out to
// thousands of members needs two descriptors per member in one process.
func RaiseFileLimit(want uint64) (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, fmt.Errorf("bench: getrlimit: %w", err)
	}
	if l.Cur >= want {
		return l.Cur, nil
	}
	l.Cur = min(want, l.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, fmt.Errorf("bench: setrlimit %d: %w", l.Cur, err)
	}
	return l.Cur, nil
}
