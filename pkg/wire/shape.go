package wire

import (
	"encoding/binary"
	"errors"
)

// errShape and errNegative are wrapped into ErrBody by Unmarshal.
var (
	errShape    = errors.New("declared length runs past the body")
	errNegative = errors.New("negative integer: no field of the protocol takes one")
)

// checkShape walks one msgpack value in b without decoding it and fails
// when any string, binary, extension, array or map declares more than the
// bytes left could hold, or when bytes are left over. msgpack's decoder
// trusts declared lengths and allocates them up front, so without this a
// 16-byte frame declaring a 2 GiB array would exhaust the receiver's memory.
// Every element takes at least one byte, so the values still owed can never
// exceed the bytes still unread. It also refuses negative integers: every
// integer of the protocol is a count, a number or a time that is never
// negative, and msgpack's decoder would wrap -1 into an unsigned field as
// 2^64-1 (abuse probe, 2026-12-02).
func checkShape(b []byte) error {
	i, owed := 0, 1
	// take returns the next n header bytes, or nil when b is too short.
	take := func(n int) []byte {
		if n > len(b)-i {
			return nil
		}
		h := b[i : i+n]
		i += n
		return h
	}
	for owed > 0 {
		if i >= len(b) {
			return errShape
		}
		c := b[i]
		i++
		owed--
		var skip, more int // payload bytes to skip, values added
		switch {
		case c >= 0xe0:
			return errNegative
		case c <= 0x7f, c == 0xc0, c == 0xc2, c == 0xc3:
		case c&0xf0 == 0x80:
			more = 2 * int(c&0x0f)
		case c&0xf0 == 0x90:
			more = int(c & 0x0f)
		case c&0xe0 == 0xa0:
			skip = int(c & 0x1f)
		default:
			var n int
			switch c {
			case 0xc4, 0xd9, 0xc7: // bin8, str8, ext8
				h := take(1)
				if h == nil {
					return errShape
				}
				n = int(h[0])
			case 0xc5, 0xda, 0xc8, 0xdc, 0xde: // bin16, str16, ext16, array16, map16
				h := take(2)
				if h == nil {
					return errShape
				}
				n = int(binary.BigEndian.Uint16(h))
			case 0xc6, 0xdb, 0xc9, 0xdd, 0xdf: // bin32, str32, ext32, array32, map32
				h := take(4)
				if h == nil {
					return errShape
				}
				n = int(binary.BigEndian.Uint32(h))
			}
			switch c {
			case 0xc4, 0xc5, 0xc6, 0xd9, 0xda, 0xdb:
				skip = n
			case 0xc7, 0xc8, 0xc9:
				skip = n + 1 // the extension's type byte
			case 0xdc, 0xdd:
				more = n
			case 0xde, 0xdf:
				more = 2 * n
			case 0xcc, 0xd0:
				skip = 1
			case 0xcd, 0xd1:
				skip = 2
			case 0xca, 0xce, 0xd2:
				skip = 4
			case 0xcb, 0xcf, 0xd3:
				skip = 8
			case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1, 2, 4, 8, 16 plus type byte
				skip = 1 + 1<<(c-0xd4)
			default: // 0xc1 is never used
				return errShape
			}
		}
		if skip > len(b)-i {
			return errShape
		}
		if c >= 0xd0 && c <= 0xd3 && b[i] >= 0x80 {
			return errNegative
		}
		i += skip
		owed += more
		if owed > len(b)-i {
			return errShape
		}
	}
	if i != len(b) {
		return errShape
	}
	return nil
}
