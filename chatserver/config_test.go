package chatserver

import (
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"nearchat/pkg/bounds"
	"nearchat/pkg/testkit"
)

// TestValidate: every setting bin/chatserver takes from a flag is refused
// out of its range with a *bounds.Error naming that flag, so the program
// exits 2 at startup instead of starting with it (a thousands of event
// loops, an id Central refuses at registration, a port past 65535).
func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		flag string // "" means valid
	}{
		{"defaults", func(c *Config) {}, ""},
		{"explicit id", func(c *Config) { c.ID = "serv1" }, ""},
		{"id with a space", func(c *Config) { c.ID = "serv 1" }, "id"},
		{"id too long", func(c *Config) { c.ID = strings.Repeat("s", 33) }, "id"},
		{"id with a slash", func(c *Config) { c.ID = "a/b" }, "id"},
		{"port past 65535", func(c *Config) { c.Listen = "127.0.0.1:70000" }, "listen"},
		{"no port", func(c *Config) { c.Listen = "127.0.0.1" }, "listen"},
		{"TLS listen", func(c *Config) { c.TLS, c.TLSListen, c.Listen = &tls.Config{}, "127.0.0.1:-1", "" }, "listen"},
		{"TLS plain listen", func(c *Config) { c.TLS, c.TLSListen, c.Listen = &tls.Config{}, "127.0.0.1:0", "x" }, "plain-listen"},
		{"TLS only", func(c *Config) { c.TLS, c.TLSListen, c.Listen = &tls.Config{}, "127.0.0.1:0", "" }, ""},
		{"loops 0 is one per CPU", func(c *Config) { c.Loops = 0 }, ""},
		{"loops 1024", func(c *Config) { c.Loops = 1024 }, ""},
		{"loops 1025", func(c *Config) { c.Loops = 1025 }, "loops"},
		{"loops negative", func(c *Config) { c.Loops = -1 }, "loops"},
		{"max conns 0", func(c *Config) { c.MaxConns = 0 }, "max-conns"},
		{"per source negative", func(c *Config) { c.MaxConnsPerSource = -1 }, "max-conns-per-source"},
		{"hello timeout 0", func(c *Config) { c.HelloTimeout = 0 }, "hello-timeout"},
		{"frame timeout past a day", func(c *Config) { c.FrameTimeout = 25 * time.Hour }, "frame-timeout"},
		{"max rooms 0", func(c *Config) { c.MaxRooms = 0 }, "max-rooms"},
		{"max members 0", func(c *Config) { c.MaxMembers = 0 }, "max-members"},
		{"max outbound below a frame", func(c *Config) { c.MaxOutbound = 1000 }, "max-outbound"},
		{"history negative", func(c *Config) { c.History = -1 }, "history"},
		{"high water at max outbound", func(c *Config) { c.HighWater = c.MaxOutbound }, "high-water"},
		{"high water negative", func(c *Config) { c.HighWater = -1 }, "high-water"},
		{"slow timeout 0", func(c *Config) { c.SlowTimeout = 0 }, "slow-timeout"},
		{"idle timeout 0 is never", func(c *Config) { c.IdleTimeout = 0 }, ""},
		{"idle timeout negative", func(c *Config) { c.IdleTimeout = -time.Second }, "idle-timeout"},
		{"send rate 0", func(c *Config) { c.SendRate = 0 }, "send-rate"},
		{"resend rate negative", func(c *Config) { c.ResendRate = -1 }, "resend-rate"},
		{"history budget negative", func(c *Config) { c.HistoryBudget = -1 }, "history-budget"},
		{"outbound budget negative", func(c *Config) { c.OutboundBudget = -1 }, "outbound-budget"},
		{"advertise port 0", func(c *Config) { c.Advertise = "10.0.0.1:0" }, "advertise"},
		{"advertise longer than Central takes", func(c *Config) { c.Advertise = strings.Repeat("a", 300) + ":1" }, "advertise"},
		{"heartbeat 0 is Central's", func(c *Config) { c.Heartbeat = 0 }, ""},
		{"heartbeat 1ns", func(c *Config) { c.Heartbeat = 1 }, "heartbeat"},
		{"shutdown grace negative", func(c *Config) { c.ShutdownGrace = -1 }, "shutdown-grace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.edit(&cfg)
			before := cfg
			testkit.ExpectFlagError(t, cfg.Validate(), tc.flag)
			if cfg.HighWater != before.HighWater || cfg.HistoryBudget != before.HistoryBudget {
				t.Error("Validate changed the config")
			}
		})
	}
}

// TestTokenFileChecked: -token-file took any file there was as the token,
// sent its content to Central and replaced it with the token Central
// issued (/etc/passwd, in the usability review 7, H1). Only a file
// holding a token or nothing, or none yet in a directory that exists, is
// taken; anything else is refused at startup, naming the flag.
func TestTokenFileChecked(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name, path string
		ok         bool
	}{
		{"not there yet", filepath.Join(dir, "new.token"), true},
		{"empty", write("empty", "\n"), true},
		{"a token", write("tok", strings.Repeat("ab", 32)+"\n"), true},
		{"a password file", write("passwd", "root:x:0:0:root:/root:/bin/bash\n"), false},
		{"a short hex string", write("short", "abcdef\n"), false},
		{"a big file", write("big", strings.Repeat("0", 4096)), false},
		{"a directory", dir, false},
		{"no such directory", filepath.Join(dir, "nodir", "tok"), false},
	} {
		before, _ := os.ReadFile(tc.path)
		cfg := DefaultConfig()
		cfg.TokenFile = tc.path
		err := cfg.Validate()
		var be *bounds.Error
		switch {
		case tc.ok && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case !tc.ok && (!errors.As(err, &be) || be.Name != "token-file"):
			t.Errorf("%s: %v, want -token-file refused", tc.name, err)
		}
		if after, _ := os.ReadFile(tc.path); string(after) != string(before) {
			t.Errorf("%s: the file changed", tc.name)
		}
	}
}
