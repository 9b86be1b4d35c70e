package central

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// connectDialer bounds the TCP connect of an echo check by timeout and
// notes whether it succeeded.
//
// It asks the kernel, not Go's network poller, whether the connection was
// made: connect(2) on a non-blocking socket, then poll(2) as a blocking
// system call, and one last poll with no wait once the deadline has
// passed. Through the poller, a Central starved of CPU learned late that a
// live server's port had accepted at once: its deadline timer fired first,
// the connect "timed out" a little past its bound (within the starvation
// guard's slack), and two members' silences declared the live server down
// (issue 14, TestStarvedCentralKeepsLiveServer). A refused connect still
// fails at once and a dark path (SYNs lost) at the bound, as before.
type connectDialer struct {
	timeout   time.Duration
	connected atomic.Bool
}

// pollSlice is the longest single wait in poll(2), so that a cancelled
// check (Central stopping) ends soon.
const pollSlice = 50 * time.Millisecond

func (d *connectDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	deadline := time.Now().Add(d.timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	ap, err := resolveAddrPort(ctx, addr)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	opErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: network, Addr: net.TCPAddrFromAddrPort(ap), Err: err}
	}
	family, sa := unix.AF_INET6, unix.Sockaddr(nil)
	if ip := ap.Addr(); ip.Is4() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ip.As4()}
	} else {
		sa6 := &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ip.As16()}
		if z := ip.Zone(); z != "" {
			if ifi, err := net.InterfaceByName(z); err == nil {
				sa6.ZoneId = uint32(ifi.Index)
			}
		}
		sa = sa6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, opErr(os.NewSyscallError("socket", err))
	}
	if err := connectBy(ctx, fd, sa, deadline); err != nil {
		unix.Close(fd)
		return nil, opErr(err)
	}
	f := os.NewFile(uintptr(fd), "echo "+addr)
	c, err := net.FileConn(f) // a dup of fd, on Go's poller from here
	f.Close()
	if err != nil {
		return nil, opErr(err)
	}
	d.connected.Store(true)
	return c, nil
}

// connectBy connects fd to sa, waiting in poll(2) until deadline.
func connectBy(ctx context.Context, fd int, sa unix.Sockaddr, deadline time.Time) error {
	err := unix.Connect(fd, sa)
	for errors.Is(err, unix.EINTR) {
		err = unix.Connect(fd, sa)
	}
	switch {
	case err == nil:
		return nil
	case !errors.Is(err, unix.EINPROGRESS) && !errors.Is(err, unix.EALREADY):
		return os.NewSyscallError("connect", err)
	}
	for {
		wait := max(time.Until(deadline), 0)
		ms := int((min(wait, pollSlice) + time.Millisecond - 1) / time.Millisecond)
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}, ms)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return os.NewSyscallError("poll", err)
		case n > 0:
			soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
			if err != nil {
				return os.NewSyscallError("getsockopt", err)
			}
			if soErr != 0 {
				return os.NewSyscallError("connect", unix.Errno(soErr))
			}
			return nil
		case wait == 0:
			// The kernel, asked after the deadline, has not connected.
			return os.ErrDeadlineExceeded
		case ctx.Err() != nil:
			return ctx.Err()
		}
	}
}

// resolveAddrPort resolves host:port to one address, the first the
// resolver gives (a literal address as it is).
func resolveAddrPort(ctx context.Context, addr string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.AddrPort{}, err
	}
	p, err := net.DefaultResolver.LookupPort(ctx, "tcp", port)
	if err != nil {
		return netip.AddrPort{}, err
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if len(ips) == 0 {
		return netip.AddrPort{}, fmt.Errorf("no address for %s", host)
	}
	return netip.AddrPortFrom(ips[0].Unmap(), uint16(p)), nil
}
