package unsent

import "golang.org/x/sys/unix"

// Bytes is how many bytes socket fd holds that the kernel has not sent
// (SIOCOUTQNSD): the peer's window is shut, or about to be. 0 if unknown.
func Bytes(fd int) int {
	n, err := unix.IoctlGetInt(fd, unix.SIOCOUTQNSD)
	if err != nil {
		return 0
	}
	return n
}
