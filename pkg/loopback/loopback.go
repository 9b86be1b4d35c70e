// Package loopback tells whether an address or a request's Host names this
// machine. Ports bound to loopback without a password (the dashboard
// without a token, the metrics port) use it against DNS rebinding: a web
// page can point a name of its own at 127.0.0.1 once loaded and read such a
// port from the user's browser, but its requests then carry that name in
// Host, which no loopback name matches.
package loopback

import (
	"net"
	"strings"
)

// Name reports whether host (no port, no brackets) is localhost or a
// loopback IP address. Only the canonical forms net.ParseIP accepts count:
// spellings such as 127.1 or 2130706433 are left to whatever resolver sees
// them, and a resolver may send them anywhere.
func Name(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Addr reports whether addr (host:port, or unix:path) can only be reached
// from this machine.
func Addr(addr string) bool {
	if strings.HasPrefix(addr, "unix:") {
		return true
	}
	host, _, err := net.SplitHostPort(addr)
	return err == nil && Name(host)
}

// Host reports whether a request's Host (with or without a port) names
// this machine: localhost, a name under .localhost, or a loopback address;
// case and a final dot aside. Names under .localhost are reserved for
// loopback (RFC 6761) and browsers resolve them themselves, so no page can
// rebind one to its own server. The port is not looked at: whoever reached
// the port already knows it.
func Host(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")), ".")
	return Name(host) || strings.HasSuffix(host, ".localhost")
}
