package client

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
)

// Checker verifies the delivery guarantee from the receiving end: feed it
// every message received (Observe) and, at the end, how many each sender
// sent (Expect); Report then counts what was lost, duplicated or out of
// order. Feed it the Missed events too (Missed): a message missing but
// announced as missed is a told loss, one missing and never announced a
// silent loss, which the guarantee forbids. The bot and the tests use it.
// Safe for concurrent use.
type Checker struct {
	mu      sync.Mutex
	senders map[string]*checkSender
}

type checkSender struct {
	last     uint64 // highest number observed
	seen     map[uint64]struct{}
	told     [][2]uint64 // ranges announced as missed
	expected uint64
	dup      int
	reorder  int
}

// CheckReport is the outcome of a Checker.
type CheckReport struct {
	Received   int            // distinct messages
	Duplicates int            // messages seen more than once
	OutOfOrder int            // messages observed after a higher number of the same sender
	Missing    map[string]int // by sender: expected but never seen
	Told       map[string]int // by sender: of Missing, how many a Missed event announced
}

// Silent counts the messages missing without a Missed event: losses the
// guarantee forbids.
func (r CheckReport) Silent() int {
	n := 0
	for u, m := range r.Missing {
		n += m - r.Told[u]
	}
	return n
}

// OK reports whether every expected message arrived exactly once, in order.
func (r CheckReport) OK() bool {
	if r.Duplicates > 0 || r.OutOfOrder > 0 {
		return false
	}
	for _, n := range r.Missing {
		if n > 0 {
			return false
		}
	}
	return true
}

func (r CheckReport) String() string {
	var miss []string
	for u, n := range r.Missing {
		if n > 0 {
			miss = append(miss, fmt.Sprintf("%s:%d", u, n))
		}
	}
	sort.Strings(miss)
	return fmt.Sprintf("received %d, duplicates %d, out of order %d, missing [%s], silent %d",
		r.Received, r.Duplicates, r.OutOfOrder, strings.Join(miss, " "), r.Silent())
}

// NewChecker returns an empty Checker.
func NewChecker() *Checker { return &Checker{senders: make(map[string]*checkSender)} }

func (c *Checker) sender(from string) *checkSender {
	s := c.senders[from]
	if s == nil {
		s = &checkSender{seen: make(map[uint64]struct{})}
		c.senders[from] = s
	}
	return s
}

// Observe records message num of from. It returns false when the message
// breaks the guarantee: a duplicate, or one arriving after a higher number.
func (c *Checker) Observe(from string, num uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.sender(from)
	if _, ok := s.seen[num]; ok {
		s.dup++
		return false
	}
	s.seen[num] = struct{}{}
	if num < s.last {
		s.reorder++
		return false
	}
	s.last = num
	return true
}

// Missed records that messages first..last of from were announced missed.
func (c *Checker) Missed(from string, first, last uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.sender(from)
	s.told = append(s.told, [2]uint64{first, last})
}

// Expect records that from sent messages 1..n.
func (c *Checker) Expect(from string, n uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sender(from).expected = n
}

// Count returns how many distinct messages of from were observed.
func (c *Checker) Count(from string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.senders[from]; s != nil {
		return len(s.seen)
	}
	return 0
}

// Report summarises everything observed so far.
func (c *Checker) Report() CheckReport {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := CheckReport{Missing: make(map[string]int), Told: make(map[string]int)}
	for u, s := range c.senders {
		r.Received += len(s.seen)
		r.Duplicates += s.dup
		r.OutOfOrder += s.reorder
		miss, told := s.missing()
		r.Missing[u] = miss
		r.Told[u] = told
	}
	return r
}

// missing counts the numbers 1..expected never seen, and how many of them
// a Missed event announced. It works from the messages seen and the told
// ranges, never number by number: expected and the ranges come from the
// peers (a Chat numbered 2^62 is a peer's to send), and a loop from 1 to
// expected could run for years.
func (s *checkSender) missing() (miss, told int) {
	var seenIn uint64
	for n := range s.seen {
		if n >= 1 && n <= s.expected {
			seenIn++
		}
	}
	// The told ranges, cut to 1..expected, sorted and merged.
	rs := make([][2]uint64, 0, len(s.told))
	for _, r := range s.told {
		lo, hi := max(r[0], 1), min(r[1], s.expected)
		if lo <= hi {
			rs = append(rs, [2]uint64{lo, hi})
		}
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i][0] < rs[j][0] })
	merged := rs[:0]
	for _, r := range rs {
		if k := len(merged) - 1; k >= 0 && r[0] <= merged[k][1]+1 && merged[k][1] != ^uint64(0) {
			merged[k][1] = max(merged[k][1], r[1])
			continue
		}
		merged = append(merged, r)
	}
	var toldAll uint64 // numbers in the told ranges, seen or not
	for _, r := range merged {
		toldAll += r[1] - r[0] + 1 // cannot wrap: r[0] >= 1
	}
	for n := range s.seen {
		i := sort.Search(len(merged), func(i int) bool { return merged[i][1] >= n })
		if i < len(merged) && merged[i][0] <= n {
			toldAll--
		}
	}
	return clampInt(s.expected - seenIn), clampInt(toldAll)
}

func clampInt(n uint64) int { return int(min(n, uint64(math.MaxInt))) }
