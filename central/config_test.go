package central

import (
	"crypto/ed25519"
	"testing"
	"time"

	"nearchat/pkg/testkit"
)

// TestValidate: every setting bin/central takes from a flag is refused
// out of its range with a *bounds.Error naming that flag, so the program
// exits 2 at startup instead of starting with it (a scan every
// nanosecond, a gain percentage no move can reach, a port past 65535).
func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		flag string // "" means valid
	}{
		{"defaults", func(c *Config) {}, ""},
		{"rest port past 65535", func(c *Config) { c.RESTListen = "127.0.0.1:65536" }, "rest"},
		{"control no port", func(c *Config) { c.ControlListen = "127.0.0.1" }, "control"},
		{"heartbeat 0", func(c *Config) { c.HeartbeatInterval = 0 }, "heartbeat"},
		{"heartbeat 1ns", func(c *Config) { c.HeartbeatInterval = 1 }, "heartbeat"},
		{"offline before heartbeat", func(c *Config) { c.OfflineAfter = 2 * time.Second }, "offline-after"},
		{"scan 1ns", func(c *Config) { c.ScanInterval = 1 }, "scan"},
		{"scan past a day", func(c *Config) { c.ScanInterval = 25 * time.Hour }, "scan"},
		{"request timeout 0", func(c *Config) { c.RequestTimeout = 0 }, "request-timeout"},
		{"awaiting every 0", func(c *Config) { c.AwaitingEvery = 0 }, "awaiting-every"},
		{"assign retry negative", func(c *Config) { c.AssignRetry = -time.Second }, "assign-retry"},
		{"assign give up 0", func(c *Config) { c.AssignGiveUp = 0 }, "assign-give-up"},
		{"session grace 0", func(c *Config) { c.SessionGrace = 0 }, "session-grace"},
		{"reconnect grace 0 fails at once", func(c *Config) { c.ReconnectGrace = 0 }, ""},
		{"reconnect grace negative", func(c *Config) { c.ReconnectGrace = -1 }, "reconnect-grace"},
		{"probe timeout 0", func(c *Config) { c.ProbeTimeout = 0 }, "probe-timeout"},
		{"min gain negative", func(c *Config) { c.Policy.MinGain = -time.Millisecond }, "min-gain"},
		{"min gain pct 100", func(c *Config) { c.Policy.MinGainPct = 100 }, ""},
		{"min gain pct past 100", func(c *Config) { c.Policy.MinGainPct = 150 }, "min-gain-pct"},
		{"min dwell negative", func(c *Config) { c.Policy.MinDwell = -1 }, "min-dwell"},
		{"spread factor negative", func(c *Config) { c.Policy.SpreadFactor = -1 }, "spread-factor"},
		{"room ttl 0", func(c *Config) { c.RoomTTL = 0 }, "room-ttl"},
		{"control idle 0 keeps", func(c *Config) { c.ControlIdle = 0 }, ""},
		{"control idle negative", func(c *Config) { c.ControlIdle = -1 }, "control-idle"},
		{"max outbound small", func(c *Config) { c.MaxOutbound = 1000 }, "max-outbound"},
		{"max members 1", func(c *Config) { c.MaxMembers = 1 }, "max-members"},
		{"max members huge", func(c *Config) { c.MaxMembers = 1 << 20 }, "max-members"},
		{"request rate 0", func(c *Config) { c.RequestRate = 0 }, "request-rate"},
		{"request burst 0", func(c *Config) { c.RequestBurst = 0 }, "request-burst"},
		{"register rate negative", func(c *Config) { c.RegisterRate = -1 }, "register-rate"},
		{"register burst 0", func(c *Config) { c.RegisterBurst = 0 }, "register-burst"},
		{"max conns negative", func(c *Config) { c.MaxConns = -1 }, "max-conns"},
		{"per source negative", func(c *Config) { c.MaxConnsPerSource = -1 }, "max-conns-per-source"},
		{"ticket ttl 0", func(c *Config) { c.TicketTTL = 0 }, "ticket-ttl"},
		{"ticket ttl within give up", func(c *Config) { c.TicketKey, c.TicketTTL = make(ed25519.PrivateKey, 64), time.Minute }, "ticket-ttl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.edit(&cfg)
			testkit.ExpectFlagError(t, cfg.Validate(), tc.flag)
		})
	}
}
