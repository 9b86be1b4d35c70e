package linkdelay

// frameRing is the delay line of one direction: a FIFO of frames, each with
// the monotonic time (in nanoseconds) at which it is due to be sent.
//
// All frame bytes live in one preallocated byte slice used as a circular
// buffer, and the per-frame bookkeeping lives in a preallocated ring of
// entries, so that steady-state operation allocates nothing and memory use is
// fixed by the configured size.
//
// A receive needs a contiguous region of maxFrame bytes (the kernel has to be
// given a buffer big enough for the largest possible frame before the frame's
// real length is known). reserve hands out such a region or nil when there is
// none; commit then records how many bytes the frame really used. A frame
// never straddles the end of the buffer: when the space left at the end is
// too small, writing continues at offset 0 and the tail end is skipped.
//
// frameRing is not safe for concurrent use; each direction owns one.
type frameRing struct {
	data     []byte
	maxFrame int

	ents  []ringEntry // capacity is a power of two
	mask  int
	head  int // index of the oldest entry
	count int // number of queued entries

	tail    int // byte offset just past the newest frame
	pending int // byte offset handed out by the last reserve
	bytes   int // sum of the lengths of the queued frames
}

type ringEntry struct {
	off, n   int32
	deadline int64
}

// newFrameRing makes a ring of (at least) size bytes able to hold frames of up
// to maxFrame bytes, and at most maxEntries frames (rounded up to a power of
// two).
func newFrameRing(size, maxFrame, maxEntries int) *frameRing {
	if maxFrame < 1 {
		maxFrame = 1
	}
	if size < 2*maxFrame+1 {
		size = 2*maxFrame + 1
	}
	if maxEntries < 2 {
		maxEntries = 2
	}
	n := 1
	for n < maxEntries {
		n <<= 1
	}
	return &frameRing{
		data:     make([]byte, size),
		maxFrame: maxFrame,
		ents:     make([]ringEntry, n),
		mask:     n - 1,
	}
}

// Len reports the number of queued frames.
func (r *frameRing) Len() int { return r.count }

// Bytes reports the number of queued frame bytes.
func (r *frameRing) Bytes() int { return r.bytes }

// reserve returns a maxFrame-byte region to receive the next frame into, or
// nil when the ring is full (the caller then drops the frame: tail drop).
// The region only becomes part of the queue once commit is called; calling
// reserve again without commit hands out the same region.
func (r *frameRing) reserve() []byte {
	if r.count == len(r.ents) {
		return nil
	}
	pos := 0
	if r.count > 0 {
		h := int(r.ents[r.head].off)
		switch {
		case r.tail >= h: // queued bytes are [h, tail): free space at both ends
			if len(r.data)-r.tail >= r.maxFrame {
				pos = r.tail
			} else if h > r.maxFrame { // strictly: keep tail != head after wrapping
				pos = 0
			} else {
				return nil
			}
		default: // wrapped: queued bytes are [h, end) and [0, tail); free is [tail, h)
			if h-r.tail > r.maxFrame {
				pos = r.tail
			} else {
				return nil
			}
		}
	}
	r.pending = pos
	return r.data[pos : pos+r.maxFrame]
}

// commit appends the frame of n bytes that was received into the region
// returned by the last reserve, due at deadline.
func (r *frameRing) commit(n int, deadline int64) {
	if n <= 0 || n > r.maxFrame {
		panic("linkdelay: frameRing.commit: bad frame length")
	}
	r.ents[(r.head+r.count)&r.mask] = ringEntry{off: int32(r.pending), n: int32(n), deadline: deadline}
	r.count++
	r.tail = r.pending + n
	r.bytes += n
}

// peek returns the oldest frame and its deadline. The slice aliases the ring
// and is valid until the next pop.
func (r *frameRing) peek() (frame []byte, deadline int64, ok bool) {
	if r.count == 0 {
		return nil, 0, false
	}
	e := r.ents[r.head]
	return r.data[e.off : e.off+e.n], e.deadline, true
}

// pop removes the oldest frame.
func (r *frameRing) pop() {
	if r.count == 0 {
		return
	}
	r.bytes -= int(r.ents[r.head].n)
	r.head = (r.head + 1) & r.mask
	r.count--
	if r.count == 0 {
		// Empty: start again at the beginning so the next frames are
		// contiguous.
		r.head = 0
		r.tail = 0
	}
}
