// Package client is nearchat's client library: the room session that speaks
// to chat servers and keeps the delivery guarantee across relocations, with
// the control connection to Central to come beside it.
//
// # Delivery guarantee
//
// A Session numbers the messages its user sends, 1, 2, 3..., keeps every one
// the server has not acknowledged and a window of recent acknowledged ones,
// and sends the unacknowledged ones again after each move. The receiving
// side keeps a cursor per sender: it drops anything at or below the cursor
// (a duplicate), holds back what arrives ahead of a gap, and delivers in each
// sender's order. When a member joins a server it states the last number it
// sent; a receiver whose cursor for that member is lower asks the member,
// through the server, to send the tail again (Resend), so a message the old
// server acknowledged but never delivered before dying is recovered. What a
// sender no longer holds is reported plainly (Missed), never skipped in
// silence.
//
// # Make-before-break
//
// Move joins the room on the new server while the old connection stays
// open. Messages sent while the join is in flight are held, so the number
// announced in the Join is exactly the last one sent on the old server. Once
// Joined arrives, sending switches to the new server and the unacknowledged
// messages go out again. The old connection is closed only when nothing more
// can arrive on it: every other member has left it, or is present on the new
// server with our cursor at the number it announced there; or the old
// connection died; or DrainTimeout passed. Then any remaining tail is asked
// for again.
//
// # Concurrency
//
// A Session runs one goroutine that owns all of its state, plus a reader and
// a writer per connection. Its exported methods are safe for concurrent use;
// Move calls are serialized. Events arrive on one channel, which the user
// must keep draining: while EventBuffer events wait, the session stops
// reading from the server (TCP pushes back, and a server eventually cuts off
// a member that never reads). Calling Send from the goroutine that reads
// Events is fine.
package client
