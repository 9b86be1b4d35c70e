// Package wire is nearchat's frame codec, and its documentation is the
// protocol specification shared by every program: Central's control port, the
// chat servers, the terminal client, the bot and the benchmarks.
//
// # Frames
//
// Every TCP stream carries a sequence of frames:
//
//	 0               1               2               3               4               5
//	+---------------+---------------+---------------+---------------+---------------+- - - - - - - - -+
//	|                length L (uint32, big-endian)                  |  type (uint8)  |  msgpack body   |
//	+---------------+---------------+---------------+---------------+---------------+- - - - - - - - -+
//	                                                                 <-------------- L bytes ---------->
//
// L counts the type byte and the body, so a frame occupies 4+L bytes on the
// wire and L is never 0. A receiver reads the four length bytes first and
// rejects the frame when L exceeds its maximum (MaxFrame, 64 KiB, unless
// configured lower) before it buffers a single body byte: an oversized or
// malformed frame costs the receiver nothing but an error frame and a closed
// connection. The body is one msgpack value, a map keyed by the short field
// names listed in package proto; unknown keys, a key twice in one map,
// trailing bytes, values of the wrong msgpack type, negative integers (no
// field takes one), maps of more than 32 keys and values nested deeper
// than 8 are all errors. Every length the body declares is
// checked against the bytes actually present before decoding, so a frame
// can never make its receiver allocate more than the frame's own size.
//
// # Handshake
//
// The first frame in each direction is a version exchange: the dialing side
// sends Hello{v, agent, token}, the listening side answers Welcome{v, server,
// max} or an Error frame and closes. A listener speaks every version from
// MinVersion to Version: its Welcome names the Hello's version, and from
// then on it sends that peer only frames of that version (a version-2 chat
// member gets Presence frames where a version-3 one gets Presences). A
// peer whose Hello names another version gets Error{code: Version}; a
// dialer takes only a Welcome in its own version. The agent names the
// dialing program ("chat/1"): printable UTF-8 of at most 64 bytes, or
// Error{code: BadRequest}. Nothing else is accepted before Hello. The
// current version is Version.
//
// # Errors
//
// Error{code, reason, fatal} carries a numeric code (see proto.Code*) and a
// sentence for humans. When fatal is true the sender closes the connection
// right after it; otherwise the request that caused it failed and the
// connection goes on.
//
// # Reading frames
//
// There are two frame readers and nothing else parses frames: Reader, for a
// goroutine blocked on a net.Conn, and Next, for an event loop that peeks
// at a connection's inbound buffer (gnet.Conn is an Inbound). Both refuse a
// frame over the receiver's maximum after its four length bytes. The
// dialing side of the handshake is proto.Dial; the listening side's version
// rule is proto.CheckHello, and proto.CodeOf names the Error code that
// answers a frame that breaks these rules.
//
// The message types themselves, their type bytes and fields, are specified in
// package proto, next to their definitions.
//
// # Concurrency
//
// The functions of this package are safe for concurrent use; they keep no
// state but pools.
package wire
