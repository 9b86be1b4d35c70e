package central

import (
	"context"
	"time"

	"nearchat/pkg/rtt"
)

// verifyTimeout bounds Central's check of a server's advertised address;
// verifyRetry is how often one that failed is checked again, on the
// server's heartbeats.
const (
	verifyTimeout = 3 * time.Second
	verifyRetry   = 30 * time.Second
)

// verifyAddrLocked checks, off the lock, that s's advertised address
// answers as s: a Hello, a Welcome naming s, one Ping. A server that
// registered an address nobody reaches (a wrong -advertise, a port its
// firewall closes, a TLS server Central has no -chat-ca for) was listed as
// up, and no one was told: every member's probe of it failed in silence.
// The outcome is logged when it changes, listed in GET /v1/servers
// (addr_error) and sent back in the server's heartbeat answers for its own
// log. Placement needs no verdict from it: members measure what they
// reach.
func (c *Central) verifyAddrLocked(s *serverRec) {
	if s.verifying || s.gone {
		return
	}
	s.verifying = true
	addr, id := s.rec.Addr, s.rec.ID
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		ctx, cancel := context.WithTimeout(c.ctx, verifyTimeout)
		_, err := echo(ctx, verifyTimeout, rtt.Target{ID: id, Addr: addr}, c.cfg.ChatTLS)
		cancel()
		c.mu.Lock()
		defer c.mu.Unlock()
		s.verifying = false
		s.verifiedAt = time.Now()
		if c.ctx.Err() != nil || c.srvByID[id] != s {
			return
		}
		if s.rec.Addr != addr {
			c.verifyAddrLocked(s) // registered again at another address meanwhile
			return
		}
		why := ""
		if err != nil {
			why = err.Error()
		}
		if why == s.addrErr {
			return
		}
		s.addrErr = why
		if why != "" {
			c.log.Warn("a chat server's advertised address failed Central's check: clients are unlikely to reach it there (check the server's -advertise, its firewall, and Central's -chat-ca if it serves TLS)",
				"server", id, "addr", addr, "err", err)
		} else {
			c.log.Info("a chat server's advertised address answers Central's check now", "server", id, "addr", addr)
		}
	}()
}
