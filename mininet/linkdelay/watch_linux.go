//go:build linux

package linkdelay

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// WatchProcess returns a channel that is closed once process pid has exited.
// It uses a pidfd where the kernel has them and falls back to polling
// otherwise. If isParent is true, pid is taken to be the caller's parent and
// a change of getppid() also counts as its death (this covers a parent that
// died before the watch started). The watch ends, without closing the
// channel, when ctx is done.
func WatchProcess(ctx context.Context, pid int, isParent bool) (<-chan struct{}, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("linkdelay: invalid pid %d", pid)
	}
	done := make(chan struct{})
	if isParent && os.Getppid() != pid {
		close(done)
		return done, nil
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	switch {
	case errors.Is(err, unix.ESRCH):
		close(done)
		return done, nil
	case err != nil:
		pidfd = -1 // old kernel or not allowed: poll with kill(pid, 0)
		if e := unix.Kill(pid, 0); errors.Is(e, unix.ESRCH) {
			close(done)
			return done, nil
		}
	}
	go func() {
		if pidfd >= 0 {
			defer unix.Close(pidfd)
		}
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		for ctx.Err() == nil {
			if pidfd >= 0 {
				fds[0].Revents = 0
				n, err := unix.Poll(fds, 250)
				if err == nil && n > 0 {
					close(done)
					return
				}
			} else {
				_ = unix.Nanosleep(&unix.Timespec{Nsec: 250e6}, nil)
				if e := unix.Kill(pid, 0); errors.Is(e, unix.ESRCH) {
					close(done)
					return
				}
			}
			if isParent && os.Getppid() != pid {
				close(done)
				return
			}
		}
	}()
	return done, nil
}
