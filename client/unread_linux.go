package client

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// unread reports whether bytes from the server wait in c's socket, read
// by the kernel and not yet by us: then the connection is not silent,
// this process is behind (starved of CPU), and silence must not be
// declared. A TLS connection is asked about the TCP connection under it.
func unread(c net.Conn) bool {
	if tc, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = tc.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	n := 0
	if err := rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil {
		return false
	}
	return n > 0
}
