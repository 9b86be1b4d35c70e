package main

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"nearchat/chatserver"
	"nearchat/pkg/testkit"
)

// TestFlagRanges: each setting out of range is refused by parseFlags as a
// *bounds.Error naming its flag. -probe-every 0 used to mean the default
// and a -liveness under the library's minimum was found only at the
// first room.
func TestFlagRanges(t *testing.T) {
	bot := []string{"-bot", "-name", "x", "-accept"}
	for _, tc := range []struct {
		name string
		args []string
		flag string // "" means valid
	}{
		{"defaults", nil, ""},
		{"bot defaults", bot, ""},
		{"probe every 0", []string{"-probe-every", "0"}, "probe-every"},
		{"probe every 1ms", []string{"-probe-every", "1ms"}, "probe-every"},
		{"probe every 2h", []string{"-probe-every", "2h"}, "probe-every"},
		{"liveness off", []string{"-liveness", "0"}, ""},
		{"liveness 1ms", []string{"-liveness", "1ms"}, "liveness"},
		{"liveness negative", []string{"-liveness", "-1s"}, "liveness"},
		{"liveness 2m", []string{"-liveness", "2m"}, "liveness"},
		{"rate 0", append(bot, "-rate", "0"), "rate"},
		{"rate huge", append(bot, "-rate", "1e6"), "rate"},
		{"count negative", append(bot, "-count", "-1"), "count"},
		{"duration negative", append(bot, "-duration", "-1s"), "duration"},
		{"size past a message", append(bot, "-size", "5000"), "size"},
		{"size 4096", append(bot, "-size", "4096"), ""},
		{"token", []string{"-token", strings.Repeat("0a", 32)}, ""},
		{"token cut short", []string{"-token", strings.Repeat("0a", 31)}, "token"},
		{"token not hex", []string{"-token", strings.Repeat("0a", 31) + "0g"}, "token"},
		{"central URL", []string{"-central", "https://central.example:8080"}, ""},
		{"central replicas", []string{"-central", "127.0.0.1:8080,127.0.0.2:8080"}, ""},
		{"central bad port", []string{"-central", "127.0.0.1:http"}, "central"},
		{"central empty replica", []string{"-central", "127.0.0.1:8080,"}, "central"},
		{"central other scheme", []string{"-central", "ftp://127.0.0.1:8080"}, "central"},
		{"control", []string{"-control", "127.0.0.1:9000,127.0.0.2:9000"}, ""},
		{"control without port", []string{"-control", "127.0.0.1"}, "control"},
		{"control port past 65535", []string{"-control", "127.0.0.1:70000"}, "control"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			_, err := parseFlags(tc.args, &out)
			testkit.ExpectFlagError(t, err, tc.flag)
		})
	}
}

// TestBadFlagsExit2: the binary refuses them with one line and status 2,
// before it looks for Central.
func TestBadFlagsExit2(t *testing.T) {
	bin := testkit.BuildOnce(t, "nearchat/cmd/chat")
	testkit.ExpectRefused(t, bin, []string{"-probe-every", "0"}, "chat: invalid value 0s for -probe-every: want 50ms to 1h")
	testkit.ExpectRefused(t, bin, []string{"-bot", "-name", "x", "-accept", "-liveness", "1ms"}, "chat: invalid value 1ms for -liveness")
	// A token cut short when copied used to be found only by Central, after
	// the name was typed; it is described, not printed (a credential).
	short := strings.Repeat("5f", 31)
	testkit.ExpectRefused(t, bin, []string{"-token", short}, "chat: invalid value of 62 characters for -token: want 64 hex digits")
	testkit.ExpectRefused(t, bin, []string{"-bot", "-name", "x", "-accept", "-token", short}, "for -token")
	testkit.ExpectRefused(t, bin, []string{"-bot", "-name", "x", "-accept", "-central", "127.0.0.1:http"}, `chat: invalid value "127.0.0.1:http" for -central`)
	testkit.ExpectRefused(t, bin, []string{"-bot", "-name", "x", "-accept", "-control", "127.0.0.1"}, `chat: invalid value "127.0.0.1" for -control`)
}

// TestChatServerAsControl: a chat server's address given as -control is
// named as such at startup, where the client used to retry it forever.
func TestChatServerAsControl(t *testing.T) {
	bin := testkit.BuildOnce(t, "nearchat/cmd/chat")
	c := startCluster(t)
	cfg := chatserver.DefaultConfig()
	cfg.Listen, cfg.ID, cfg.Loops = "127.0.0.1:0", "serv9", 1
	cfg.Logger = testLog(t)
	srv, err := chatserver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()

	rctx, rcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer rcancel()
	cmd := exec.CommandContext(rctx, bin, "-bot", "-name", "x", "-accept", "-central", c.rest, "-control", srv.Addr())
	cmd.Env = cleanEnv()
	out, _ := cmd.CombinedOutput()
	if rctx.Err() != nil {
		t.Fatalf("still running after 20 s: %s", out)
	}
	if !strings.Contains(string(out), `is chat server "serv9", not Central's control port`) {
		t.Fatalf("output does not name the chat server:\n%s", out)
	}
}
