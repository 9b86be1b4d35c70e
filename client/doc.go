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
// server acknowledged but never delivered before dying is recovered. The
// answer goes to the asker alone (Chat.To); repeat asks back off while
// nothing arrives, and the sender does not answer the same ask twice while
// its answer may be on the way.
//
// Every number given up is reported as a Missed event with its reason (the
// sender no longer holds it, the gap timed out, MaxHeld messages waited
// behind it, or the sender restarted); held messages are always delivered,
// never discarded. Nothing is skipped in silence.
//
// Numbers belong to the Session's incarnation (the Unix nanosecond it
// started): a user's new Session, after a restart, numbers from 1 in a
// larger incarnation, and receivers follow it instead of dropping its
// messages as duplicates.
//
// # Flow control
//
// A Session writes at most SendWindow bytes of unacknowledged messages to
// the server; later ones wait in the session and go out as Acks return.
// The server withholds Acks while a member of the room is behind, so the
// senders slow to the slowest reader before anything is lost.
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
// reading from the server (TCP pushes back, the server holds the room's
// senders, and cuts off a member that stays behind past its SlowTimeout). Calling Send from the goroutine that reads
// Events is fine.
package client
