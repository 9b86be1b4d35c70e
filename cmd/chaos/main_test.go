package main

import (
	"testing"
	"time"

	"nearchat/bench/chaos"
	"nearchat/pkg/testkit"
)

func TestMain(m *testing.M) { testkit.VerifyNoLeaks(m) }

// TestCheckFlags: -runs 0 and a -run matching no scenario used to run
// nothing and pass; -hold 0 made every long fault last no time; each is
// now refused naming its flag.
func TestCheckFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*chaos.Config)
		runs int
		only string
		flag string // "" means valid
	}{
		{"defaults", nil, 1, "", ""},
		{"a scenario", nil, 1, "^kill", ""},
		{"no runs", nil, 0, "", "runs"},
		{"negative runs", nil, -3, "", "runs"},
		{"too many runs", nil, maxRuns + 1, "", "runs"},
		{"bad regexp", nil, 1, "(", "run"},
		{"matches nothing", nil, 1, "no-such-scenario", "run"},
		{"hold 0", func(c *chaos.Config) { c.Hold = 0 }, 1, "", "hold"},
		{"converge negative", func(c *chaos.Config) { c.Converge = -time.Second }, 1, "", "converge"},
		{"central rss 0", func(c *chaos.Config) { c.CentralRSS = 0 }, 1, "", "central-rss"},
		{"server rss negative", func(c *chaos.Config) { c.ServerRSS = -1 << 20 }, 1, "", "server-rss"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := chaos.DefaultConfig()
			if tc.edit != nil {
				tc.edit(&cfg)
			}
			testkit.ExpectFlagError(t, checkFlags(&cfg, tc.runs, tc.only), tc.flag)
		})
	}
}

// TestBadFlagsRefused: the binary exits 2 with one line, before running
// a scenario.
func TestBadFlagsRefused(t *testing.T) {
	bin := testkit.BuildOnce(t, "nearchat/cmd/chaos")
	dir := t.TempDir()
	testkit.ExpectRefused(t, bin, []string{"-bin", dir, "-dir", dir, "-runs", "0"}, "chaos: invalid value 0 for -runs: want 1 to 1000")
	testkit.ExpectRefused(t, bin, []string{"-bin", dir, "-dir", dir, "-run", "no-such-scenario"}, `invalid value "no-such-scenario" for -run`)
	testkit.ExpectRefused(t, bin, []string{"-bin", dir, "-dir", dir, "-server-rss", "99999999999999"}, "invalid value 99999999999999 for -server-rss")
}
