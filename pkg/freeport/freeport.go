// Package freeport hands tests and harnesses loopback ports to give to a
// process that binds them later.
package freeport

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// Addr returns a loopback address with a port free at the time of the
// call. The port lies below the kernel's ephemeral range
// (net.ipv4.ip_local_port_range), so no outgoing connection and no :0
// listener can take it before the process it is meant for binds it, and
// this process never hands the same port out twice. (Ports from the
// ephemeral range were taken in that window: a chaos run of 220 scenarios
// lost two to "address already in use" and to a Central address answered
// by some other listener.)
func Addr() (string, error) {
	lo, hi := 10000, ephemeralStart()
	if hi-lo >= 1000 {
		freePorts.Lock()
		defer freePorts.Unlock()
		for range 64 {
			p := lo + rand.IntN(hi-lo)
			if freePorts.given[p] {
				continue
			}
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err != nil {
				continue
			}
			l.Close()
			freePorts.given[p] = true
			return l.Addr().String(), nil
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// freePorts is what Addr has handed out.
var freePorts = struct {
	sync.Mutex
	given map[int]bool
}{given: map[int]bool{}}

// ephemeralStart is the first port of the kernel's ephemeral range, 32768
// when it cannot be read.
func ephemeralStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return n
}
