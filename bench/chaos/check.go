package chaos

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"nearchat/bench/cluster"
)

// placement is where a bot's latest run says it is.
type placement struct {
	room, server string
	epoch        uint64
	broken       bool // its chat link broke after it got there
}

// placements reads each running bot's latest placement from its events.
func placements(c *cluster.Cluster) map[string]placement {
	runs := map[string]int{}
	for _, b := range c.Bots() {
		if b.Running() {
			runs[b.Name] = b.Starts()
		}
	}
	out := map[string]placement{}
	for name := range runs {
		out[name] = placement{}
	}
	for _, e := range c.Events.All() {
		if run, ok := runs[e.Bot]; !ok || e.Run != run {
			continue
		}
		p := out[e.Bot]
		switch e.Kind() {
		case "joined":
			p = placement{room: e.Str("room"), server: e.Str("server"), epoch: uint64(e.Num("epoch"))}
		case "moved":
			p = placement{room: e.Str("room"), server: e.Str("to"), epoch: uint64(e.Num("epoch"))}
		case "broken":
			if e.Str("server") == p.server && uint64(e.Num("epoch")) == p.epoch {
				p.broken = true
			}
		case "received":
			// A message through the same server: the link works again.
			if !p.broken || e.Str("server") != p.server {
				continue
			}
			p.broken = false
		default:
			continue
		}
		out[e.Bot] = p
	}
	return out
}

// divergence lists how the room placements differ between Central's room
// listing and the running bots' own view; nil means converged: every room's
// members all on the room's server, at its epoch, with a live link.
func divergence(ctx context.Context, c *cluster.Cluster) []string {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	rooms, err := c.API.Rooms(cctx, c.Secret())
	if err != nil {
		return []string{fmt.Sprintf("Central's room listing: %v", err)}
	}
	up, err := c.UpServers(ctx)
	if err != nil {
		return []string{fmt.Sprintf("Central's server listing: %v", err)}
	}
	pl := placements(c)
	quit := quitters(c)
	var diff []string
	listed := map[string]bool{}
	for _, r := range rooms {
		if !up[r.Server] {
			diff = append(diff, fmt.Sprintf("room %s is on %s, which Central does not list as up", r.ID, r.Server))
		}
		for _, m := range r.Members {
			p, ok := pl[m]
			if !ok {
				// Not a running bot of ours. One that quit (SIGTERM: it
				// leaves its rooms and waits for Central to confirm)
				// must not be listed; a killed one may be, as it may
				// come back (rel7 R7-5: a quit bot still listed passed).
				if quit[m] {
					diff = append(diff, fmt.Sprintf("%s quit and left, yet Central lists it in room %s", m, r.ID))
				}
				continue
			}
			listed[m] = true
			switch {
			case p.room == "":
				diff = append(diff, fmt.Sprintf("%s: Central lists it in room %s, it holds no room", m, r.ID))
			case p.room != r.ID:
				diff = append(diff, fmt.Sprintf("%s: Central lists it in room %s, it holds room %q", m, r.ID, p.room))
			case p.server != r.Server || p.epoch != r.Epoch:
				diff = append(diff, fmt.Sprintf("%s: on %s epoch %d, Central says %s epoch %d", m, p.server, p.epoch, r.Server, r.Epoch))
			case p.broken:
				diff = append(diff, fmt.Sprintf("%s: its link to %s (epoch %d) is broken", m, p.server, p.epoch))
			}
		}
	}
	for m, p := range pl {
		if !listed[m] && p.room != "" {
			diff = append(diff, fmt.Sprintf("%s: holds room %s on %s epoch %d, which Central does not list it in", m, p.room, p.server, p.epoch))
		}
	}
	sort.Strings(diff)
	return diff
}

// quitters lists the bots not running whose last run quit cleanly: it
// printed its report, and no "unconfirmed" event says Central did not
// confirm its leave.
func quitters(c *cluster.Cluster) map[string]bool {
	last := map[string]int{}
	for _, b := range c.Bots() {
		if !b.Running() {
			last[b.Name] = b.Starts()
		}
	}
	out := map[string]bool{}
	for _, e := range c.Events.All() {
		if run, ok := last[e.Bot]; !ok || e.Run != run {
			continue
		}
		switch {
		case e.Kind() == "report":
			if _, doubt := out[e.Bot]; !doubt {
				out[e.Bot] = true
			}
		case e.Kind() == "unconfirmed" && e.Str("what") == "leave":
			out[e.Bot] = false
		}
	}
	return out
}

// run is one run of one bot, read from its events.
type botRun struct {
	bot      string
	run      int
	inc      string
	joinedAt time.Time
	lastAt   time.Time
	clean    bool // printed its report
	reportAt time.Time
	report   map[string]any
}

type sentMsg struct {
	num uint64
	at  time.Time
}

// inFlight is how long before the final stop a message may have been sent
// and still be on its way when the receivers stop: not owed.
const inFlight = 2 * time.Second

// delivery checks every receiver's stream: nothing twice, nothing out of
// per-sender order, nothing owed missing without a Missed that covers it.
// stop is when every bot was told to stop. It returns the violations and
// the counts received and reported missed.
func delivery(evs []cluster.Event, stop time.Time) (viol []string, received, missed int) {
	runs := map[string]*botRun{}
	key := func(bot string, run int) string { return bot + "#" + strconv.Itoa(run) }
	sent := map[string][]sentMsg{} // by sender "name inc"
	incEnd := map[string]*botRun{}
	for _, e := range evs {
		k := key(e.Bot, e.Run)
		r := runs[k]
		if r == nil {
			r = &botRun{bot: e.Bot, run: e.Run}
			runs[k] = r
		}
		r.lastAt = e.At
		switch e.Kind() {
		case "ready":
			r.inc = e.Str("inc")
			incEnd[e.Bot+" "+r.inc] = r
		case "joined":
			if r.joinedAt.IsZero() {
				r.joinedAt = e.At
			}
		case "sent":
			s := e.Bot + " " + e.Str("inc")
			sent[s] = append(sent[s], sentMsg{num: uint64(e.Num("num")), at: e.At})
		case "report":
			r.clean, r.report, r.reportAt = true, e.Fields, e.At
		}
	}
	// The highest number of each sender incarnation anyone received: a
	// killed sender's messages up to it were acknowledged by the server.
	maxGot := map[string]uint64{}
	for _, e := range evs {
		if e.Kind() == "received" {
			s := e.Str("from") + " " + e.Str("inc")
			maxGot[s] = max(maxGot[s], uint64(e.Num("num")))
		}
	}
	type stream struct {
		last uint64
		seen map[uint64]bool
	}
	for _, r := range sortedRuns(runs) {
		if r.joinedAt.IsZero() {
			continue
		}
		streams := map[string]*stream{}
		var gaps []struct {
			from        string
			first, last uint64
		}
		var dup, reorder []string
		for _, e := range evs {
			if e.Bot != r.bot || e.Run != r.run {
				continue
			}
			switch e.Kind() {
			case "received":
				received++
				s := e.Str("from") + " " + e.Str("inc")
				st := streams[s]
				if st == nil {
					st = &stream{seen: map[uint64]bool{}}
					streams[s] = st
				}
				n := uint64(e.Num("num"))
				switch {
				case st.seen[n]:
					dup = append(dup, fmt.Sprintf("%s #%d", e.Str("from"), n))
				case n < st.last:
					reorder = append(reorder, fmt.Sprintf("%s #%d after #%d", e.Str("from"), n, st.last))
				}
				st.seen[n] = true
				st.last = max(st.last, n)
			case "missed":
				first, last := uint64(e.Num("first")), uint64(e.Num("last"))
				missed += int(last - first + 1)
				gaps = append(gaps, struct {
					from        string
					first, last uint64
				}{e.Str("from"), first, last})
			}
		}
		who := fmt.Sprintf("%s (run %d)", r.bot, r.run)
		if len(dup) > 0 {
			viol = append(viol, fmt.Sprintf("%s got %d messages twice: %s", who, len(dup), firstFew(dup)))
		}
		if len(reorder) > 0 {
			viol = append(viol, fmt.Sprintf("%s got %d messages out of per-sender order: %s", who, len(reorder), firstFew(reorder)))
		}
		for s, msgs := range sent {
			from, _, _ := strings.Cut(s, " ")
			if from == r.bot {
				continue
			}
			st := streams[s]
			sender := incEnd[s]
			var lost []uint64
			for _, m := range msgs {
				if st != nil && st.seen[m.num] {
					continue
				}
				// Owed: sent after this receiver joined, or after
				// something later from the same incarnation arrived.
				owed := m.at.After(r.joinedAt) || (st != nil && m.num < st.last)
				// Not owed: what a killed receiver would have got after it
				// died, or a killed sender's unacknowledged tail.
				if !r.clean && m.at.After(r.lastAt.Add(-time.Second)) {
					owed = false
				}
				if sender != nil && !sender.clean && m.num > maxGot[s] && m.at.After(sender.lastAt.Add(-3*time.Second)) {
					owed = false
				}
				if m.at.After(stop.Add(-inFlight)) {
					owed = false
				}
				// Nor what was sent after a receiver that quit on its
				// own (a scenario stopped it early) left the room.
				if r.clean && m.at.After(r.reportAt.Add(-inFlight)) {
					owed = false
				}
				if !owed {
					continue
				}
				excused := false
				for _, g := range gaps {
					if g.from == from && m.num >= g.first && m.num <= g.last {
						excused = true
						break
					}
				}
				if !excused {
					lost = append(lost, m.num)
				}
			}
			if len(lost) > 0 {
				viol = append(viol, fmt.Sprintf("%s lost %d of %s's messages (incarnation %s) without a Missed: %s",
					who, len(lost), from, strings.TrimPrefix(s, from+" "), ranges(lost)))
			}
		}
	}
	return viol, received, missed
}

func sortedRuns(m map[string]*botRun) []*botRun {
	out := make([]*botRun, 0, len(m))
	for _, r := range m {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].bot != out[j].bot {
			return out[i].bot < out[j].bot
		}
		return out[i].run < out[j].run
	})
	return out
}

func firstFew(s []string) string {
	if len(s) > 5 {
		return strings.Join(s[:5], ", ") + fmt.Sprintf(", ... (%d more)", len(s)-5)
	}
	return strings.Join(s, ", ")
}

// ranges prints sorted numbers as "1-5, 9".
func ranges(ns []uint64) string {
	sort.Slice(ns, func(i, j int) bool { return ns[i] < ns[j] })
	var parts []string
	for i := 0; i < len(ns); {
		j := i
		for j+1 < len(ns) && ns[j+1] == ns[j]+1 {
			j++
		}
		if i == j {
			parts = append(parts, strconv.FormatUint(ns[i], 10))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", ns[i], ns[j]))
		}
		i = j + 1
	}
	return firstFew(parts)
}

// rss returns a process's resident set in bytes (0 if unknown).
func rss(pid int) int64 {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
