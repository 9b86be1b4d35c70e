package bounds

import (
	"flag"
	"fmt"
	"io"
	"math"
	"strings"
	"testing"
	"time"
)

func TestMessages(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"int in range", Range("loops", 4, 1, 1024), ""},
		{"int below", Range("loops", 0, 1, 1024), "invalid value 0 for -loops: want 1 to 1024"},
		{"int above", Range("loops", 5000, 1, 1024), "invalid value 5000 for -loops: want 1 to 1024"},
		{"duration", Range("scan", 0, time.Millisecond, time.Hour), "invalid value 0s for -scan: want 1ms to 1h"},
		{"duration minutes", Range("dwell", -time.Second, 0, 90*time.Minute), "invalid value -1s for -dwell: want 0s to 1h30m"},
		{"float", Range("loss", 1.5, 0, 1), "invalid value 1.5 for -loss: want 0 to 1"},
		{"NaN", Range("loss", math.NaN(), 0, 1), "invalid value NaN for -loss: want 0 to 1"},
		{"at least", AtLeast("max-conns", -1, 0), "invalid value -1 for -max-conns: want at least 0"},
		{"at least ok", AtLeast("max-conns", 0, 0), ""},
		{"fail duration", Fail("ttl", 90*time.Minute, "whole seconds"), "invalid value 1h30m for -ttl: want whole seconds"},
		{"fail quotes strings", Fail("id", "a b", "letters"), `invalid value "a b" for -id: want letters`},
		{"addr", Addr("listen", "127.0.0.1:99999", false), `invalid value "127.0.0.1:99999" for -listen: want host:port, port 0 to 65535`},
		{"addr no port", Addr("listen", "localhost", false), `invalid value "localhost" for -listen: want host:port, port 0 to 65535`},
		{"addr port 0", Addr("listen", "127.0.0.1:0", false), ""},
		{"addr optional empty", Addr("metrics", "", true), ""},
		{"addr required empty", Addr("listen", "", false), `invalid value "" for -listen: want host:port, port 0 to 65535`},
		{"dial addr port 0", DialAddr("advertise", "10.0.0.1:0", true), `invalid value "10.0.0.1:0" for -advertise: want host:port, port 1 to 65535, or empty for none`},
		{"dial addr no host", DialAddr("advertise", ":80", false), `invalid value ":80" for -advertise: want host:port, port 1 to 65535`},
		{"dial addr", DialAddr("advertise", "[::1]:80", false), ""},
		{"first", First(nil, Range("a", 2, 0, 1), Range("b", 2, 0, 1)), "invalid value 2 for -a: want 0 to 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ""
			if tc.err != nil {
				got = tc.err.Error()
				if !Is(fmt.Errorf("wrapped: %w", tc.err)) {
					t.Errorf("Is(wrapped %v) = false", tc.err)
				}
			}
			if got != tc.want {
				t.Errorf("got %q\nwant %q", got, tc.want)
			}
		})
	}
}

// TestFromEnv: a flag the command line left unset takes its variable's
// value; one given keeps its own; a value the flag refuses is an error
// naming the variable.
func TestFromEnv(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	secret := fs.String("secret", "", "")
	other := fs.String("other", "", "")
	n := fs.Int("n", 0, "")
	if err := fs.Parse([]string{"-other", "mine"}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("X_SECRET", "s3")
	t.Setenv("X_OTHER", "theirs")
	if err := FromEnv(fs, map[string]string{"secret": "X_SECRET", "other": "X_OTHER"}); err != nil {
		t.Fatal(err)
	}
	if *secret != "s3" || *other != "mine" {
		t.Fatalf("secret %q other %q, want s3 (the variable) and mine (the flag)", *secret, *other)
	}
	t.Setenv("X_N", "many")
	if err := FromEnv(fs, map[string]string{"n": "X_N"}); err == nil || !strings.Contains(err.Error(), "$X_N") {
		t.Fatalf("a value the flag refuses: %v (n=%d), want an error naming $X_N", err, *n)
	}
}

// TestStray: a stray argument is named; after a boolean flag, "false"
// gets the -flag=false hint.
func TestStray(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.Bool("multicore", true, "")
	fs.String("rest", "", "")
	args := []string{"-rest", "a:1", "-multicore", "false"}
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	if got := Stray("central", fs, args); !strings.Contains(got, `unexpected argument "false"`) || !strings.Contains(got, "-multicore=false") {
		t.Fatalf("%s", got)
	}
	args = []string{"-rest", "a:1", "extra"}
	fs.Parse(args)
	if got := Stray("central", fs, args); !strings.Contains(got, `unexpected argument "extra"`) || strings.Contains(got, "boolean") {
		t.Fatalf("%s", got)
	}
}

// TestParseHint: a value that does not parse gets the form its flag takes.
func TestParseHint(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Duration("heartbeat", 0, "")
	fs.Int("max-outbound", 0, "unsent `bytes` after which ...")
	fs.Int("loops", 0, "")
	for _, tc := range []struct{ args, want string }{
		{"-heartbeat=5", "duration such as"},
		{"-max-outbound=4MiB", "whole number of bytes"},
		{"-loops=x", "want a whole number"},
	} {
		err := fs.Parse([]string{tc.args})
		if err == nil {
			t.Fatalf("%s parsed", tc.args)
		}
		if got := parseHint(fs, err); !strings.Contains(got, tc.want) {
			t.Errorf("%s: hint %q, want %q", tc.args, got, tc.want)
		}
	}
}
