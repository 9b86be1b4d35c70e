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
	seen     numSet
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
		s = &checkSender{}
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
	switch s.seen.add(num) {
	case addedBefore:
		s.dup++
		return false
	case addedLate:
		s.reorder++
		return false
	}
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
		return clampInt(s.seen.n)
	}
	return 0
}

// Report summarises everything observed so far.
func (c *Checker) Report() CheckReport {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := CheckReport{Missing: make(map[string]int), Told: make(map[string]int)}
	for u, s := range c.senders {
		r.Received += clampInt(s.seen.n)
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
	if s.expected >= 1 {
		seenIn = s.seen.countIn(1, s.expected)
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
	var toldAll uint64 // numbers in the told ranges not seen
	for _, r := range merged {
		toldAll += r[1] - r[0] + 1 - s.seen.countIn(r[0], r[1]) // cannot wrap: r[0] >= 1
	}
	return clampInt(s.expected - seenIn), clampInt(toldAll)
}

// numSet is the set of one sender's numbers seen, in memory that grows
// with the gaps and the late arrivals, not with the messages: numbers
// arriving in order extend the last of runs of consecutive numbers, and
// only a number below the highest seen, which breaks the guarantee, goes
// into a map. (One map entry per message held 1.4 million entries after
// a 2-minute chatload run of 2,000 rooms of 3, the biggest part of its
// heap, whose collections then stalled the members it measured.)
type numSet struct {
	runs [][2]uint64         // ascending, disjoint, first and last of each
	late map[uint64]struct{} // numbers seen below the highest seen at the time
	n    uint64              // numbers in the set
}

// The outcomes of numSet.add.
const (
	addedInOrder = iota // above every number seen before
	addedLate           // new, but below the highest seen
	addedBefore         // seen already
)

// add puts num in the set and says how it stood.
func (s *numSet) add(num uint64) int {
	k := len(s.runs) - 1
	switch {
	case k >= 0 && num == s.runs[k][1]+1 && s.runs[k][1] != math.MaxUint64:
		s.runs[k][1] = num
	case k < 0 || num > s.runs[k][1]:
		s.runs = append(s.runs, [2]uint64{num, num})
	case s.inRuns(num):
		return addedBefore
	default:
		if _, ok := s.late[num]; ok {
			return addedBefore
		}
		if s.late == nil {
			s.late = make(map[uint64]struct{})
		}
		s.late[num] = struct{}{}
		s.n++
		return addedLate
	}
	s.n++
	return addedInOrder
}

// inRuns reports whether num is in one of the runs.
func (s *numSet) inRuns(num uint64) bool {
	i := sort.Search(len(s.runs), func(i int) bool { return s.runs[i][1] >= num })
	return i < len(s.runs) && s.runs[i][0] <= num
}

// countIn counts the numbers of the set in lo..hi.
func (s *numSet) countIn(lo, hi uint64) uint64 {
	var n uint64
	for i := sort.Search(len(s.runs), func(i int) bool { return s.runs[i][1] >= lo }); i < len(s.runs) && s.runs[i][0] <= hi; i++ {
		n += min(hi, s.runs[i][1]) - max(lo, s.runs[i][0]) + 1
	}
	for num := range s.late {
		if lo <= num && num <= hi {
			n++
		}
	}
	return n
}

func clampInt(n uint64) int { return int(min(n, uint64(math.MaxInt))) }
