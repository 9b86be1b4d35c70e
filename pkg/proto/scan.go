package proto

import (
	"encoding/binary"

	"nearchat/pkg/wire"
)

// The per-message frames (Chat, Deliver, Ack) have hand-written fast paths
// here, used by the chat server's hot path and by the benchmarks: the
// msgpack codec reflects over the struct and allocates its strings, and
// these do neither. Each scanner understands the forms an encoder produces
// and reports ok=false for anything else, so the caller falls back to
// wire.Unmarshal; each encoder produces a map that the codec decodes to
// the same struct (the struct tags' keys, fixed-width integers), which the
// tests check.

// ScanChat pulls num, at, text and to out of a Chat body. Text and to
// alias b.
func ScanChat(b []byte) (num uint64, at int64, text, to []byte, ok bool) {
	n, b, ok := mapLen(b)
	if !ok {
		return 0, 0, nil, nil, false
	}
	var seen uint8 // the keys met so far: a key twice is the codec's to refuse
	for range n {
		var key []byte
		if key, b, ok = fixStr(b); !ok {
			if key, b, ok = str(b); !ok {
				return 0, 0, nil, nil, false
			}
		}
		var bit uint8
		switch string(key) {
		case "num":
			bit = 1
		case "at":
			bit = 2
		case "text":
			bit = 4
		case "to":
			bit = 8
		}
		if seen&bit != 0 {
			return 0, 0, nil, nil, false
		}
		seen |= bit
		switch string(key) {
		case "num", "at":
			var v int64
			if v, b, ok = int64Of(b); !ok {
				if v, b, ok = integer(b); !ok {
					return 0, 0, nil, nil, false
				}
			}
			if key[0] == 'n' {
				num = uint64(v)
			} else {
				at = v
			}
		case "text", "to":
			var v []byte
			if v, b, ok = str8(b); !ok {
				if v, b, ok = str(b); !ok {
					return 0, 0, nil, nil, false
				}
			}
			if key[0] == 't' && key[1] == 'e' {
				text = v
			} else {
				to = v
			}
		default:
			// A key Chat does not have: the codec refuses it, and the
			// fast path must not take what the codec refuses.
			return 0, 0, nil, nil, false
		}
	}
	// A time past 2^63-1 reads as negative: the codec path refuses it.
	return num, at, text, to, len(b) == 0 && at >= 0
}

// AppendDeliver appends a whole Deliver frame to dst.
func AppendDeliver(dst []byte, seq uint64, from string, num uint64, at int64, text []byte, inc uint64) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, byte(TDeliver), 0x86, 0xa3, 's', 'e', 'q', 0xcf)
	dst = binary.BigEndian.AppendUint64(dst, seq)
	dst = append(dst, 0xa4, 'f', 'r', 'o', 'm')
	dst = appendStr(dst, from)
	dst = appendMessage(dst, num, at, text)
	dst = append(dst, 0xa3, 'i', 'n', 'c', 0xcf)
	dst = binary.BigEndian.AppendUint64(dst, inc)
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-wire.LenSize))
	return dst
}

// AppendAck appends a whole Ack frame to dst.
func AppendAck(dst []byte, num, seq uint64) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, byte(TAck), 0x82, 0xa3, 'n', 'u', 'm', 0xcf)
	dst = binary.BigEndian.AppendUint64(dst, num)
	dst = append(dst, 0xa3, 's', 'e', 'q', 0xcf)
	dst = binary.BigEndian.AppendUint64(dst, seq)
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-wire.LenSize))
	return dst
}

// appendStr appends a msgpack string.
func appendStr[S string | []byte](dst []byte, s S) []byte {
	switch n := len(s); {
	case n < 32:
		dst = append(dst, 0xa0|byte(n))
	case n < 256:
		dst = append(dst, 0xd9, byte(n))
	case n < 1<<16:
		dst = append(dst, 0xda)
		dst = binary.BigEndian.AppendUint16(dst, uint16(n))
	default:
		dst = append(dst, 0xdb)
		dst = binary.BigEndian.AppendUint32(dst, uint32(n))
	}
	return append(dst, s...)
}

// DeliverInfo pulls seq, num and at out of a Deliver body without decoding
// its strings, so a receiver costs no allocation per frame. It understands
// the msgpack forms an encoder produces for Deliver (a map of short
// string keys to integers and strings); anything else reports ok=false and
// the caller falls back to wire.Unmarshal.
func DeliverInfo(b []byte) (seq, num uint64, at int64, ok bool) {
	n, b, ok := mapLen(b)
	if !ok {
		return 0, 0, 0, false
	}
	for range n {
		var key []byte
		if key, b, ok = fixStr(b); !ok {
			if key, b, ok = str(b); !ok {
				return 0, 0, 0, false
			}
		}
		switch string(key) {
		case "seq", "num", "at":
			var v int64
			if v, b, ok = int64Of(b); !ok {
				if v, b, ok = integer(b); !ok {
					return 0, 0, 0, false
				}
			}
			switch key[0] {
			case 's':
				seq = uint64(v)
			case 'n':
				num = uint64(v)
			default:
				at = v
			}
		default:
			if _, b, ok = fixStr(b); ok {
				continue
			}
			if _, b, ok = str8(b); ok {
				continue
			}
			if b, ok = skip(b); !ok {
				return 0, 0, 0, false
			}
		}
	}
	return seq, num, at, len(b) == 0 && at >= 0
}

func mapLen(b []byte) (int, []byte, bool) {
	switch {
	case len(b) >= 1 && b[0]&0xf0 == 0x80:
		return int(b[0] & 0x0f), b[1:], true
	case len(b) >= 3 && b[0] == 0xde:
		return int(binary.BigEndian.Uint16(b[1:])), b[3:], true
	case len(b) >= 5 && b[0] == 0xdf:
		return int(binary.BigEndian.Uint32(b[1:])), b[5:], true
	}
	return 0, b, false
}

// fixStr and int64Of are the forms the encoders write for keys, short
// strings and integers (a fixstr, a uint64 or int64 of 8 bytes), small
// enough for the compiler to inline into the scanners' loops, which fall
// back to str and integer for every other form.
func fixStr(b []byte) ([]byte, []byte, bool) {
	if len(b) == 0 || b[0]&0xe0 != 0xa0 {
		return nil, b, false
	}
	n := int(b[0]&0x1f) + 1
	if n > len(b) {
		return nil, b, false
	}
	return b[1:n], b[n:], true
}

func int64Of(b []byte) (int64, []byte, bool) {
	if len(b) < 9 || (b[0] != 0xcf && (b[0] != 0xd3 || b[1] >= 0x80)) {
		return 0, b, false // a negative int64 too: the codec refuses it (wire.Unmarshal)
	}
	return int64(binary.BigEndian.Uint64(b[1:9])), b[9:], true
}

// str8 is a string of 32 to 255 bytes, as a message's text often is.
func str8(b []byte) ([]byte, []byte, bool) {
	if len(b) < 2 || b[0] != 0xd9 {
		return nil, b, false
	}
	n := int(b[1]) + 2
	if n > len(b) {
		return nil, b, false
	}
	return b[2:n], b[n:], true
}

func str(b []byte) ([]byte, []byte, bool) {
	if len(b) > 0 && b[0]&0xe0 == 0xa0 {
		n := int(b[0] & 0x1f)
		if len(b)-1 < n {
			return nil, b, false
		}
		return b[1 : 1+n], b[1+n:], true
	}
	return sized(b, 0xd9, 0xda, 0xdb)
}

// sized splits off a msgpack value whose length follows its tag in 1, 2
// or 4 bytes (tags t8, t16, t32): its payload, and what follows it.
func sized(b []byte, t8, t16, t32 byte) ([]byte, []byte, bool) {
	if len(b) == 0 {
		return nil, b, false
	}
	var n, h int
	switch c := b[0]; {
	case c == t8 && len(b) >= 2:
		n, h = int(b[1]), 2
	case c == t16 && len(b) >= 3:
		n, h = int(binary.BigEndian.Uint16(b[1:])), 3
	case c == t32 && len(b) >= 5:
		n, h = int(binary.BigEndian.Uint32(b[1:])), 5
	default:
		return nil, b, false
	}
	if len(b)-h < n {
		return nil, b, false
	}
	return b[h : h+n], b[h+n:], true
}

func integer(b []byte) (int64, []byte, bool) {
	if len(b) == 0 {
		return 0, b, false
	}
	c := b[0]
	switch {
	case c <= 0x7f:
		return int64(c), b[1:], true
	case c >= 0xe0:
		return 0, b, false // negative: the codec refuses it (wire.Unmarshal)
	}
	var size int
	switch c {
	case 0xcc, 0xd0:
		size = 1
	case 0xcd, 0xd1:
		size = 2
	case 0xce, 0xd2:
		size = 4
	case 0xcf, 0xd3:
		size = 8
	}
	if size == 0 || len(b) < 1+size {
		return 0, b, false
	}
	p := b[1 : 1+size]
	var v int64
	switch c {
	case 0xcc:
		v = int64(p[0])
	case 0xcd:
		v = int64(binary.BigEndian.Uint16(p))
	case 0xce:
		v = int64(binary.BigEndian.Uint32(p))
	case 0xcf:
		v = int64(binary.BigEndian.Uint64(p))
	case 0xd0:
		v = int64(int8(p[0]))
	case 0xd1:
		v = int64(int16(binary.BigEndian.Uint16(p)))
	case 0xd2:
		v = int64(int32(binary.BigEndian.Uint32(p)))
	case 0xd3:
		v = int64(binary.BigEndian.Uint64(p))
	}
	if c >= 0xd0 && v < 0 {
		return 0, b, false // negative: the codec refuses it (wire.Unmarshal)
	}
	return v, b[1+size:], true
}

// skip steps over one scalar value (nil, bool, integer, string or binary).
func skip(b []byte) ([]byte, bool) {
	if len(b) == 0 {
		return b, false
	}
	switch c := b[0]; {
	case c == 0xc0 || c == 0xc2 || c == 0xc3:
		return b[1:], true
	case c&0xe0 == 0xa0 || c == 0xd9 || c == 0xda || c == 0xdb:
		_, rest, ok := str(b)
		return rest, ok
	case c == 0xc4 || c == 0xc5 || c == 0xc6:
		_, rest, ok := sized(b, 0xc4, 0xc5, 0xc6)
		return rest, ok
	}
	_, rest, ok := integer(b)
	return rest, ok
}

// AppendChat appends a whole Chat frame to dst, encoded by hand so the
// sender allocates nothing per message and allocs/op counts the server
// alone. It produces a msgpack map that Chat decodes (the key names
// of its struct tags; fixed-width integers), which TestAppendChat checks
// against wire.Unmarshal.
func AppendChat(dst []byte, num uint64, at int64, text string) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, byte(TChat), 0x83)
	dst = appendMessage(dst, num, at, text)
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-wire.LenSize))
	return dst
}

// appendMessage appends the num, at and text entries that Chat and Deliver
// share.
func appendMessage[S string | []byte](dst []byte, num uint64, at int64, text S) []byte {
	dst = append(dst, 0xa3, 'n', 'u', 'm', 0xcf)
	dst = binary.BigEndian.AppendUint64(dst, num)
	dst = append(dst, 0xa2, 'a', 't', 0xd3)
	dst = binary.BigEndian.AppendUint64(dst, uint64(at))
	dst = append(dst, 0xa4, 't', 'e', 'x', 't')
	return appendStr(dst, text)
}

// AppendPresences appends a whole Presences frame to dst whose changes are
// the n Presence frames concatenated in frames (each with its header, as
// wire.AppendFrame makes them), so a server can coalesce frames it has
// already encoded without decoding them.
func AppendPresences(dst []byte, n int, frames []byte) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, byte(TPresences), 0x81, 0xa7, 'c', 'h', 'a', 'n', 'g', 'e', 's')
	switch {
	case n < 16:
		dst = append(dst, 0x90|byte(n))
	case n < 1<<16:
		dst = append(dst, 0xdc)
		dst = binary.BigEndian.AppendUint16(dst, uint16(n))
	default:
		dst = append(dst, 0xdd)
		dst = binary.BigEndian.AppendUint32(dst, uint32(n))
	}
	for len(frames) >= wire.HeaderSize {
		l := int(binary.BigEndian.Uint32(frames))
		dst = append(dst, frames[wire.HeaderSize:wire.LenSize+l]...)
		frames = frames[wire.LenSize+l:]
	}
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-wire.LenSize))
	return dst
}
