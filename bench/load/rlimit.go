package load

import (
	"fmt"
	"syscall"
)

// raiseFileLimit lifts the soft RLIMIT_NOFILE towards want (never above the
// hard limit) and returns the limit now in force. Every member holds a
// control and a chat connection, and Central and the chat servers, which
// hold their other ends, inherit the limit.
func raiseFileLimit(want uint64) (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, fmt.Errorf("load: getrlimit: %w", err)
	}
	if l.Cur >= want {
		return l.Cur, nil
	}
	l.Cur = min(want, l.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, fmt.Errorf("load: setrlimit %d: %w", l.Cur, err)
	}
	return l.Cur, nil
}
