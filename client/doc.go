// Package client is nearchat's client library: a Client is one user's
// presence in nearchat, and each of its rooms is a Session.
//
// # Client
//
// New validates a Config; Run registers the user with Central over REST
// (or takes the name back with a Token from an earlier session), then keeps
// one control connection to Central, reconnecting with jittered exponential
// backoff and registering again if Central forgot the user. Beside it, a
// prober measures the RTT to every live chat server each ProbeEvery (and
// at once when Central announces a new server, then again every 100 ms
// until it has three rounds of figures) and reports the latency
// vector to Central, which places rooms from it; each server is reported by
// its best round of the last three, so a momentary stall moves nothing.
// Request asks for a chat, Answer accepts or declines one. Every request
// carries a key and is sent again on each new control connection until its
// final status arrives, so a request in flight when Central (or the
// connection) died is answered by the next one, as the same request; an
// invitee may then be asked again (Incoming with the same Req). Central sends an
// Assign for each room the user is in, and the Client follows it: it opens
// the room's Session on the first one (RoomReady) and moves it on each
// later one (Moved); a placement is (epoch, server), and an Assign that
// differs in either is followed. After every (re)connect and each
// HoldingEvery the Client tells Central which rooms it holds and where
// (Holding), so any placement it missed is sent again. A broken room
// connection is reported to Central (Unreachable) until Central moves the
// room or confirms the server. A room left (Leave) is listed in every
// Holding until Central confirms the leave; a program about to exit calls
// LeavesConfirmed, with a deadline, before it stops Run, so that a leave
// made while Central fails over is not lost with the process.
//
// Probing scales with the number of servers: a round probes the ProbeBest
// servers with the best figures, the servers of the rooms held and any
// server not measured lately, and ProbeExplore of the others in turn, and
// the vector goes to Central only when it changed meaningfully. While
// rounds find nothing new, the interval doubles up to 4*ProbeEvery; a
// server that came or went, a median that moved, a failed probe, a server
// event from Central or a room connection that broke brings back the pace
// (the next round within ProbeEvery), a spread that changed alone is
// reported without it. A server
// is reported by its best of the last 3 rounds, with a spread that covers
// how far the best two of them disagree (a starved client's noise then
// moves no room: Central weighs gains against spreads, while one stalled
// round alone does not veto a move); its figure ages out after
// 3 of its probe periods in which the Client measured some server, so a
// Client whose every probe fails (it is overloaded itself) keeps its
// figures rather than make its room's server look unmeasured to Central,
// and so does a server a room's connection reaches (not silent). The
// list of servers comes from Central with every control connection (a
// ServerList after the Welcome; a server on it that the Client did not
// know is measured at once), and from its REST API every 2 minutes, or
// while no control connection is up; in between Central's announcements
// keep it. The vector goes to Central on the control
// connection (a Latency frame) while one is up, over REST otherwise. A probe reuses the connection of its server's
// previous probe (rtt.Config.Keep), so a round costs Pings, not dials.
//
// # Liveness
//
// A Session watches its room's connection (SessionConfig.Liveness): silent for
// max(Liveness/3, 2*RTT) it pings, and a ping unanswered for
// max(Liveness, 4*RTT, 2*(RTT+4*RTTVAR)) (RTT and RTTVAR: that
// connection's smoothed Ping/Pong time and deviation; any frame counts as
// an answer) makes it Broken with ErrSilent, which the
// Client reports to Central at once, marked as a silence (Central weighs it
// below a broken connection: see package central). A check that runs well
// past its time, or that finds the server's bytes waiting unread in the
// socket (Linux), means the process was starved, not the path silent: it
// looks again shortly instead of declaring silence. A silent connection is kept open: if
// the server was only stalled, its next frame makes the session connected
// again; a Move, even to the same server and epoch, joins anew.
//
// A chat server that speaks protocol version 6 is asked to do the pinging's
// work itself (proto.Beat): it writes an empty Pong whenever it has written
// nothing to the connection for max(Liveness/2, 2*RTT), so a quiet room
// costs one frame per interval, server to client, and a busy one none.
// Silence for that interval plus a grace of max(5/6 Liveness, 4*RTT,
// 2*(RTT+4*RTTVAR)), widened by the beats' own lateness, means what an
// unanswered ping does, and is found as soon. The RTT is kept current by
// the Acks of the session's messages, each round trip timed as TCP times
// a segment, and by a Ping when 2 s pass without one.
//
// Everything the Client sees arrives on one channel, Client.Events: the
// controller's events (Status, Incoming, RoomReady, RoomClosed, Connected,
// Disconnected, Error) and every room's (Message, Presence, Moved, Drained,
// Missed, Broken, Error), each carrying its Room. One move is one Moved
// event, with the Assign that caused it.
//
// # Session
//
// A Session is one room on one chat server at a time. It can be used
// without a Client (Open with a SessionConfig, Move, Send, Session.Events) by whoever gets
// assignments another way, as the chat server's tests and the benchmarks do.
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
// its answer may be on the way, nor past the asker's share (two Windows,
// refilled at two Windows per GapTimeout).
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
// senders slow to the slowest reader before anything is lost. Resend
// answers go through the same window (the server acknowledges each resent
// message, Ack.Seq 0), ahead of the session's new messages, which wait
// until the answer is written: a long answer reaches its asker at the
// asker's pace, and the asker holds no newer messages behind its gap
// meanwhile. A session that is not reading (its user is behind on events)
// neither asks again for its gaps nor gives them up.
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
// A Client's methods are safe for concurrent use. It runs a control
// goroutine, a prober, a worker per room that follows Assigns one at a time
// (only the newest pending one matters), and a goroutine per room that
// passes the session's events on to Client.Events. Client.Events must be
// drained: while nobody reads it the control connection and every room
// wait. Calling Request, Answer, Leave or Session.Send from the goroutine
// that reads Client.Events is fine.
//
// A Session runs one goroutine that owns all of its state, plus a reader and
// a writer per connection. Its exported methods are safe for concurrent use;
// Move calls are serialized. Events arrive on one channel, which the user
// must keep draining: while EventBuffer events wait, the session stops
// reading from the server (TCP pushes back, the server holds the room's
// senders, and cuts off a member that stays behind past its SlowTimeout). Calling Send from the goroutine that reads
// Events is fine.
package client
