package chatserver

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/time/rate"
)

// The TLS 1.3 record layer of an established connection (RFC 8446, 5.2),
// run on the event loop in the loop's own buffers. crypto/tls does the
// handshake; its key log hands us the application traffic secrets, and the
// tls.Conn is then dropped, with the buffers its handshake grew (a
// post-quantum ClientHello leaves several kilobytes behind). What a member
// keeps is two AEADs, two IVs and sequence numbers.

const (
	recordHeader  = 5
	maxPlain      = 16 << 10       // largest plaintext in one record
	maxCiphertext = maxPlain + 256 // largest record body allowed in

	// Content types, and the one post-handshake message a client may send.
	typeAlert     = 21
	typeHandshake = 22
	typeAppData   = 23
	keyUpdate     = 24

	errRecordMsg = "chatserver: TLS " // prefix of record errors

	// Alert descriptions (RFC 8446, 6) the server ends a connection with.
	alertCloseNotify      = 0
	alertUnexpected       = 10
	alertBadRecordMAC     = 20
	alertRecordOverflow   = 22
	alertIllegalParameter = 47
	alertDecodeError      = 50
)

// recordError is a fault in the peer's records, and the alert that names
// it to the peer before the connection ends.
type recordError struct {
	alert byte
	msg   string
}

func (e *recordError) Error() string { return errRecordMsg + e.msg }

func recordErr(alert byte, format string, args ...any) error {
	return &recordError{alert: alert, msg: fmt.Sprintf(format, args...)}
}

// alertOf is the alert that answers err: the one a recordError names,
// decode_error for anything else.
func alertOf(err error) byte {
	var re *recordError
	if errors.As(err, &re) {
		return re.alert
	}
	return alertDecodeError
}

// halfConn protects one direction.
type halfConn struct {
	suite  uint16
	secret []byte
	aead   cipher.AEAD
	iv     [12]byte
	seq    uint64
}

func suiteHash(suite uint16) func() hash.Hash {
	if suite == tls.TLS_AES_256_GCM_SHA384 {
		return sha512.New384
	}
	return sha256.New
}

// expandLabel is HKDF-Expand-Label (RFC 8446, 7.1) with an empty context.
func expandLabel(suite uint16, secret []byte, label string, n int) ([]byte, error) {
	info := make([]byte, 0, 4+6+len(label))
	info = binary.BigEndian.AppendUint16(info, uint16(n))
	info = append(info, byte(6+len(label)))
	info = append(info, "tls13 "...)
	info = append(info, label...)
	info = append(info, 0)
	return hkdf.Expand(suiteHash(suite), secret, string(info), n)
}

// setSecret derives the key and IV of a traffic secret (RFC 8446, 7.3).
func (h *halfConn) setSecret(suite uint16, secret []byte) error {
	keyLen := 16
	switch suite {
	case tls.TLS_AES_128_GCM_SHA256:
	case tls.TLS_AES_256_GCM_SHA384, tls.TLS_CHACHA20_POLY1305_SHA256:
		keyLen = 32
	default:
		return fmt.Errorf("%scipher suite %s is not TLS 1.3", errRecordMsg, tls.CipherSuiteName(suite))
	}
	key, err := expandLabel(suite, secret, "key", keyLen)
	if err != nil {
		return err
	}
	iv, err := expandLabel(suite, secret, "iv", 12)
	if err != nil {
		return err
	}
	var aead cipher.AEAD
	if suite == tls.TLS_CHACHA20_POLY1305_SHA256 {
		aead, err = chacha20poly1305.New(key)
	} else {
		var block cipher.Block
		if block, err = aes.NewCipher(key); err == nil {
			aead, err = cipher.NewGCM(block)
		}
	}
	if err != nil {
		return err
	}
	*h = halfConn{suite: suite, secret: secret, aead: aead}
	copy(h.iv[:], iv)
	return nil
}

// update moves to the next traffic secret after a KeyUpdate.
func (h *halfConn) update() error {
	next, err := expandLabel(h.suite, h.secret, "traffic upd", suiteHash(h.suite)().Size())
	if err != nil {
		return err
	}
	return h.setSecret(h.suite, next)
}

// nonce writes the per-record nonce into n, which lives in the loop so
// that handing it to the AEAD allocates nothing.
func (h *halfConn) nonce(n *[12]byte) {
	*n = h.iv
	for i := 0; i < 8; i++ {
		n[4+i] ^= byte(h.seq >> (56 - 8*i))
	}
}

// seal appends one record carrying payload (at most maxPlain bytes) of
// content type typ to dst.
func (h *halfConn) seal(dst []byte, typ byte, payload []byte, n *[12]byte) []byte {
	size := len(payload) + 1 + h.aead.Overhead()
	if cap(dst)-len(dst) < recordHeader+size {
		dst = append(dst, make([]byte, recordHeader+size)...)[:len(dst)]
	}
	hdr := len(dst)
	dst = append(dst, typeAppData, 3, 3, byte(size>>8), byte(size))
	start := len(dst)
	dst = append(dst, payload...)
	dst = append(dst, typ)
	h.nonce(n)
	dst = h.aead.Seal(dst[:start], n[:], dst[start:], dst[hdr:start])
	h.seq++
	return dst
}

// alert appends one alert record of level and description to dst.
func (h *halfConn) alert(dst []byte, level, desc byte, n *[12]byte) []byte {
	return h.seal(dst, typeAlert, []byte{level, desc}, n)
}

// open decrypts record body ct (with its header hdr), appending the
// plaintext to dst; it returns the content type and the plaintext's length.
func (h *halfConn) open(dst, hdr, ct []byte, n *[12]byte) ([]byte, byte, int, error) {
	h.nonce(n)
	start := len(dst)
	out, err := h.aead.Open(dst, n[:], ct, hdr)
	if err != nil {
		return dst, 0, 0, recordErr(alertBadRecordMAC, "record failed authentication")
	}
	h.seq++
	if len(out)-start > maxPlain+1 {
		// RFC 8446 section 5.4: content, type and padding fit 2^14 + 1.
		return dst, 0, 0, recordErr(alertRecordOverflow, "record of %d bytes of plaintext, limit %d", len(out)-start, maxPlain+1)
	}
	// The content type is the last non-zero byte; zeros after it pad.
	i := len(out) - 1
	for i >= start && out[i] == 0 {
		i--
	}
	if i < start {
		return dst, 0, 0, recordErr(alertUnexpected, "record without a content type")
	}
	return out[:i], out[i], i - start, nil
}

// holdsFinished reports whether the handshake messages in p include a
// Finished (type 20).
func holdsFinished(p []byte) bool {
	for len(p) >= 4 {
		if p[0] == 20 {
			return true
		}
		n := 4 + (int(p[1])<<16 | int(p[2])<<8 | int(p[3]))
		if n > len(p) {
			break
		}
		p = p[n:]
	}
	return false
}

// gather takes one record's piece of a post-handshake message, which may
// come in pieces (RFC 8446, 5.1), and returns the message once whole (nil
// while more is to come). The only one a client may send, KeyUpdate, is 5
// bytes: gathering stops past that.
func (rl *recordLayer) gather(piece []byte) ([]byte, error) {
	msg := piece
	if len(rl.hsPart) > 0 {
		if len(rl.hsPart)+len(piece) > 5 {
			return nil, recordErr(alertUnexpected, "handshake message of more than 5 bytes after the handshake")
		}
		msg = append(rl.hsPart, piece...)
	}
	if len(msg) >= 4 && len(msg) >= 4+(int(msg[1])<<16|int(msg[2])<<8|int(msg[3])) {
		rl.hsPart = nil
		return msg, nil // whole, or longer than it says: keyUpdate judges
	}
	if len(msg) > 5 {
		return nil, recordErr(alertUnexpected, "handshake message of more than 5 bytes after the handshake")
	}
	rl.hsPart = append(rl.hsPart[:0:0], msg...) // piece is the loop's buffer
	return nil, nil
}

// recordLayer is a TLS member's protection state. Event loop only.
type recordLayer struct {
	in, out halfConn
	pending []byte // ciphertext of a record not yet whole; nil when none
	useless int    // records in a row that carried no stream bytes
	hsPart  []byte // the start of a handshake message split over records
	// keyUpdates paces the peer's key updates; nil until its first.
	keyUpdates *rate.Limiter
}

// keyCapture collects the application traffic secrets, and the client's
// handshake traffic secret, from crypto/tls's key log during one
// connection's handshake.
type keyCapture struct {
	client, server []byte
	clientHS       []byte
}

func (k *keyCapture) Write(line []byte) (int, error) {
	f := bytes.Fields(line)
	if len(f) != 3 {
		return len(line), nil
	}
	secret, err := hex.DecodeString(string(f[2]))
	if err != nil {
		return 0, err
	}
	switch string(f[0]) {
	case "CLIENT_TRAFFIC_SECRET_0":
		k.client = secret
	case "SERVER_TRAFFIC_SECRET_0":
		k.server = secret
	case "CLIENT_HANDSHAKE_TRAFFIC_SECRET":
		k.clientHS = secret
	}
	return len(line), nil
}

// newRecordLayer builds the record layer of a finished handshake. read
// and written are every byte the handshake read from and wrote to the
// socket: records the client sent after its Finished may already be among
// the bytes read, and the server may have sent session tickets under the
// new keys, so the sequence numbers and the first unread application
// record are found by trying the application keys on those records. When
// those records are at fault, the record layer comes back with the error,
// for the alert that answers it.
func newRecordLayer(suite uint16, keys *keyCapture, read, written []byte) (*recordLayer, error) {
	if keys.client == nil || keys.server == nil {
		return nil, errors.New(errRecordMsg + "handshake logged no traffic secrets")
	}
	rl := &recordLayer{}
	if err := rl.in.setSecret(suite, keys.client); err != nil {
		return nil, err
	}
	if err := rl.out.setSecret(suite, keys.server); err != nil {
		return nil, err
	}
	var nonce [12]byte
	var scratch []byte
	// Our own records under the new keys: session tickets.
	for b := written; len(b) >= recordHeader; {
		n := recordHeader + int(binary.BigEndian.Uint16(b[3:]))
		if n > len(b) {
			break
		}
		if b[0] == typeAppData {
			// A record under the handshake keys fails; each success moves
			// the sequence number on.
			_, _, _, _ = rl.out.open(scratch[:0], b[:recordHeader], b[recordHeader:n], &nonce)
		}
		b = b[n:]
	}
	// The client's first application record: what the client sent is its
	// plaintext hello records (ClientHello, ChangeCipherSpec), then records
	// under its handshake key (Finished, and a certificate before it),
	// then its application records, the first of which may be partial
	// (the handshake is over, so every handshake record was whole).
	// Anything else among the bytes read (a record neither key opens, a
	// plaintext one after the encrypted ones) ends the connection, as it
	// would after the handshake.
	var hs halfConn
	if keys.clientHS == nil {
		return nil, errors.New(errRecordMsg + "handshake logged no client handshake secret")
	}
	if err := hs.setSecret(suite, keys.clientHS); err != nil {
		return nil, err
	}
	b := read
	encrypted, finished := false, false
	for len(b) >= recordHeader {
		n := recordHeader + int(binary.BigEndian.Uint16(b[3:]))
		if n > len(b) {
			break
		}
		if b[0] != typeAppData {
			if encrypted || (b[0] != typeHandshake && b[0] != 20) {
				return rl, recordErr(alertUnexpected, "plaintext record of type %d after the handshake", b[0])
			}
			b = b[n:]
			continue
		}
		encrypted = true
		if pt, typ, _, err := hs.open(scratch[:0], b[:recordHeader], b[recordHeader:n], &nonce); err == nil {
			// crypto/tls took these, up to the Finished; one after it,
			// or one that is no handshake message, is the client's
			// fault as it would be later (abuse probe, 2026-12-03: they
			// were skipped unchecked).
			if finished || typ != typeHandshake {
				return rl, recordErr(alertUnexpected, "record of type %d under the handshake key after the client's Finished", typ)
			}
			finished = holdsFinished(pt)
			b = b[n:]
			continue
		}
		probe := rl.in
		if _, _, _, err := probe.open(scratch[:0], b[:recordHeader], b[recordHeader:n], &nonce); err != nil {
			return rl, recordErr(alertBadRecordMAC, "a record after the handshake failed authentication")
		}
		break
	}
	if len(b) > 0 {
		rl.pending = append([]byte(nil), b...)
	}
	return rl, nil
}
