// Package unsent ends connections whose peer stopped reading without
// leaving what they could not send to the kernel.
//
// A graceful close of a socket whose peer's receive window is shut leaves
// the bytes the kernel has not sent, with the FIN behind them, in an
// orphan socket that lives as long as the peer answers the zero-window
// probes, outside every descriptor budget (abuse sweep, 2026-12-03: one
// non-reading client kept 2.2 MB for 6 minutes after its close). Abort
// resets such a connection instead, which frees the buffer at once.
package unsent

// Socket is the part of a gnet.Conn Abort uses.
type Socket interface {
	Fd() int
	SetLinger(secs int) error
}

// Abort makes the next close of s reset the connection (SO_LINGER {1, 0})
// if its kernel holds bytes it could not send, and reports whether it
// did. Bytes sent and not yet acknowledged do not count: a peer that reads
// gets them (and they reach it before the reset would).
func Abort(s Socket) bool {
	if Bytes(s.Fd()) <= 0 {
		return false
	}
	return s.SetLinger(0) == nil
}
