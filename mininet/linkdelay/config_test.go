package linkdelay

import (
	"strings"
	"testing"
	"time"

	"nearchat/pkg/testkit"
)

// TestValidate: every setting bin/linkdelay takes from a flag is refused
// out of range with a *bounds.Error naming that flag; a negative
// QueueBytes used to mean the default in silence.
func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		flag string // "" means valid
	}{
		{"defaults", func(c *Config) {}, ""},
		{"queue 0 is the default", func(c *Config) { c.QueueBytes = 0 }, ""},
		{"queue negative", func(c *Config) { c.QueueBytes = -1 }, "queue-bytes"},
		{"queue past a GiB", func(c *Config) { c.QueueBytes = MaxQueueBytes + 1 }, "queue-bytes"},
		{"no a", func(c *Config) { c.A = "" }, "a"},
		{"b too long", func(c *Config) { c.B = strings.Repeat("b", 16) }, "b"},
		{"a with a slash", func(c *Config) { c.A = "x/y" }, "a"},
		{"same interfaces", func(c *Config) { c.B = c.A }, "b"},
		{"zero delay", func(c *Config) { c.Delay = 0 }, ""},
		{"negative delay", func(c *Config) { c.Delay = -time.Millisecond }, "delay"},
		{"delay past the max", func(c *Config) { c.Delay = MaxDelay + 1 }, "delay"},
		{"negative delay b->a", func(c *Config) { c.DelayBA = -1 }, "delay-ba"},
		{"rtprio 100", func(c *Config) { c.RealtimePriority = 100 }, "rtprio"},
		{"nice -21", func(c *Config) { c.Nice = -21 }, "nice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{A: "mid-a", B: "mid-b", Delay: 10 * time.Millisecond, QueueBytes: DefaultQueueBytes, RealtimePriority: 10, Nice: -10}
			tc.edit(&cfg)
			testkit.ExpectFlagError(t, cfg.Validate(), tc.flag)
		})
	}
}
