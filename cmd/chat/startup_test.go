package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"nearchat/central"
	"nearchat/pkg/centralapi"
	"nearchat/pkg/testkit"
	"nearchat/pkg/tlsconfig"
)

// startTLSCentral runs a Central serving TLS on both ports with a
// development CA, and returns it with the CA file.
func startTLSCentral(t *testing.T) (*central.Central, string) {
	t.Helper()
	files, err := tlsconfig.WriteDev(t.TempDir(), nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg := central.DefaultConfig()
	cfg.RESTListen, cfg.ControlListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.ClusterSecret = testSecret
	cfg.Logger = testLog(t)
	if cfg.TLS, err = tlsconfig.Server(files.ServerCert, files.ServerKey, ""); err != nil {
		t.Fatal(err)
	}
	cen, err := central.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = cen.Run(ctx) }()
	t.Cleanup(func() { cancel(); cen.Close(); <-done })
	return cen, files.CA
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestStartupErrors runs bin/chat with the mistakes people make when
// starting it, and checks that each is caught before any screen is drawn,
// with a message that says what to do, and never hangs.
func TestStartupErrors(t *testing.T) {
	bin := testkit.BuildOnce(t, "nearchat/cmd/chat")
	plain := startCluster(t)
	serv9 := plain.startServer("serv9", 0)
	tlsCen, ca := startTLSCentral(t)
	dead := closedPort(t)
	tests := []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"missing CA file", nil, []string{"-central", tlsCen.RESTAddr(), "-ca", "certs/nope.pem"},
			"cannot use the CA file given with -ca"},
		{"no -ca against a TLS Central", nil, []string{"-central", tlsCen.RESTAddr()},
			"serves TLS: start with -ca FILE"},
		{"-ca against a plaintext Central", nil, []string{"-central", plain.rest, "-ca", ca},
			"does not serve TLS: leave out -ca"},
		{"Central not running", nil, []string{"-central", dead},
			"is not reachable (connection refused). Is it running?"},
		{"NEARCHAT_CENTRAL read", []string{"NEARCHAT_CENTRAL=" + dead}, nil,
			dead + " is not reachable"},
		{"control port given as -central", nil, []string{"-central", plain.ctrl},
			"it looks like Central's control port"},
		{"chat server given as -central", nil, []string{"-central", serv9},
			serv9 + ` is chat server "serv9", not Central's REST API`},
		{"REST port given as -control", nil, []string{"-central", plain.rest, "-control", plain.rest},
			"refused our Hello: this is Central's REST port, which speaks HTTP; nearchat's framed protocol goes to its control port, " + plain.ctrl},
		{"nothing on -control", nil, []string{"-central", plain.rest, "-control", dead},
			"control port " + dead + " is not reachable"},
		{"bot flags without -bot", nil, []string{"-peer", "dave", "-rate", "3"},
			"-peer, -rate only work with -bot"},
		{"one bot flag without -bot", nil, []string{"-accept"},
			"-accept only works with -bot"},
		{"bot asking itself", nil, []string{"-bot", "-name", "x9", "-peer", "x9"},
			"that is the bot itself"},
		{"non-ASCII bot name", nil, []string{"-bot", "-name", "zoë", "-accept"},
			"'ë' (character 3) is not allowed"},
		{"over-long bot name", nil, []string{"-bot", "-name", strings.Repeat("a", 38), "-accept"},
			"has 38 characters; a user name has at most 32"},
		// The right address alone is enough: the control port is learned,
		// and the client gets as far as wanting a terminal.
		{"REST address alone", []string{"NEARCHAT_CENTRAL=" + plain.rest}, nil,
			"the terminal client needs a terminal"},
		{"TLS with NEARCHAT_CA", []string{"NEARCHAT_CENTRAL=" + tlsCen.RESTAddr(), "NEARCHAT_CA=" + ca}, nil,
			"the terminal client needs a terminal"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, tc.args...)
			cmd.Env = append(cleanEnv(), tc.env...)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			if ctx.Err() != nil {
				t.Fatalf("still running after 20 s: %s", out.String())
			}
			if err == nil {
				t.Fatalf("exit 0, want an error; output:\n%s", out.String())
			}
			if !strings.Contains(out.String(), tc.want) {
				t.Fatalf("output lacks %q:\n%s", tc.want, out.String())
			}
			t.Logf("%s", strings.TrimSpace(out.String()))
		})
	}
}

// cleanEnv is the test's environment without nearchat's variables.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NEARCHAT_") {
			env = append(env, kv)
		}
	}
	return env
}

// TestExplainCentralCleansMessage: what Central answers is printed on the
// terminal, before and after the screen is set up: its control characters
// and bidi overrides must not reach the terminal, nor a megabyte of it.
func TestExplainCentralCleansMessage(t *testing.T) {
	msg := "busy\x1b]0;owned\x07\u202e" + strings.Repeat("m", 1<<20)
	for _, err := range []error{
		&centralapi.Error{Status: 500, Code: "internal", Message: msg},
		fmt.Errorf("get: %w", errors.New(msg)),
	} {
		got := explainCentral("127.0.0.1:1", false, err).Error()
		if strings.ContainsAny(got, "\x1b\x07\u202e") {
			t.Errorf("explanation keeps control characters: %q", got[:min(len(got), 200)])
		}
		if len(got) > 1000 {
			t.Errorf("explanation is %d bytes", len(got))
		}
		if !strings.Contains(got, "busy\uFFFD]0;owned") {
			t.Errorf("explanation lost Central's words: %q", got[:min(len(got), 200)])
		}
	}
}
