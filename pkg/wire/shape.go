package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
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

// Limits checkKeys applies: no message of the protocol nests deeper than
// three (a Holding's rooms, each a map) or has more than a dozen fields.
const (
	maxDepth = 8
	maxKeys  = 32
)

var (
	errDepth = fmt.Errorf("values nested deeper than %d: no message nests that deep", maxDepth)
	errKeys  = fmt.Errorf("a map of more than %d keys: no message has that many fields", maxKeys)
)

// checkKeys refuses a body (one that passed checkShape) in which a map
// names a key twice: msgpack's decoder takes the last, so two readers of
// one frame could disagree on what it says (a Join naming two rooms, its
// first for one check, its last for another). It also bounds nesting and
// the keys of a map, so that checking costs little on any frame.
func checkKeys(b []byte) error {
	_, err := walkKeys(b, 0, 0)
	return err
}

// walkKeys checks the value at b[i:] and returns the index past it.
func walkKeys(b []byte, i, depth int) (int, error) {
	c := b[i]
	var n int // entries of a map, elements of an array
	isMap := false
	switch {
	case c&0xf0 == 0x80:
		n, isMap, i = int(c&0x0f), true, i+1
	case c == 0xde:
		n, isMap, i = int(binary.BigEndian.Uint16(b[i+1:])), true, i+3
	case c == 0xdf:
		n, isMap, i = int(binary.BigEndian.Uint32(b[i+1:])), true, i+5
	case c&0xf0 == 0x90:
		n, i = int(c&0x0f), i+1
	case c == 0xdc:
		n, i = int(binary.BigEndian.Uint16(b[i+1:])), i+3
	case c == 0xdd:
		n, i = int(binary.BigEndian.Uint32(b[i+1:])), i+5
	default:
		return i + scalarSize(b[i:]), nil
	}
	if depth == maxDepth {
		return 0, errDepth
	}
	if !isMap {
		for range n {
			var err error
			if i, err = walkKeys(b, i, depth+1); err != nil {
				return 0, err
			}
		}
		return i, nil
	}
	if n > maxKeys {
		return 0, errKeys
	}
	var keys [maxKeys][]byte
	for k := range n {
		end := i + scalarSize(b[i:])
		key := b[i:end]
		if c := key[0]; c&0xe0 == 0xa0 || (c >= 0xd9 && c <= 0xdb) || (c >= 0xc4 && c <= 0xc6) {
			// A string's bytes, however its length is encoded; a binary
			// key's too, since the decoder takes it for the same field
			// (abuse probe, 2026-12-05: a Ping naming id as a string and
			// again as binary was answered with the second).
			key = key[strHeader(c):]
		}
		for _, prev := range keys[:k] {
			if bytes.Equal(prev, key) {
				return 0, fmt.Errorf("key %.32q given twice in one map", key)
			}
		}
		keys[k] = key
		var err error
		if i, err = walkKeys(b, end, depth+1); err != nil {
			return 0, err
		}
	}
	return i, nil
}

// strHeader is the header size of a msgpack string or binary that starts
// with c.
func strHeader(c byte) int {
	switch c {
	case 0xd9, 0xc4:
		return 2
	case 0xda, 0xc5:
		return 3
	case 0xdb, 0xc6:
		return 5
	}
	return 1
}

// scalarSize is the encoded size of the value at the start of b, which is
// neither a map nor an array (checkShape has vouched for its length).
func scalarSize(b []byte) int {
	c := b[0]
	switch {
	case c <= 0x7f, c >= 0xe0, c == 0xc0, c == 0xc2, c == 0xc3:
		return 1
	case c&0xe0 == 0xa0:
		return 1 + int(c&0x1f)
	}
	switch c {
	case 0xc4, 0xd9:
		return 2 + int(b[1])
	case 0xc5, 0xda:
		return 3 + int(binary.BigEndian.Uint16(b[1:]))
	case 0xc6, 0xdb:
		return 5 + int(binary.BigEndian.Uint32(b[1:]))
	case 0xc7:
		return 3 + int(b[1])
	case 0xc8:
		return 4 + int(binary.BigEndian.Uint16(b[1:]))
	case 0xc9:
		return 6 + int(binary.BigEndian.Uint32(b[1:]))
	case 0xcc, 0xd0:
		return 2
	case 0xcd, 0xd1:
		return 3
	case 0xca, 0xce, 0xd2:
		return 5
	case 0xcb, 0xcf, 0xd3:
		return 9
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8:
		return 2 + 1<<(c-0xd4)
	}
	return 1 // 0xc1, refused by checkShape
}
