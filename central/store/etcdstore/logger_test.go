package etcdstore

import (
	"bytes"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// TestLoggerKeepsErrorsOnly: the etcd client's errors reach Central's
// slog log with their fields; its warnings (a retry every 2 s while etcd
// is away) do not.
func TestLoggerKeepsErrorsOnly(t *testing.T) {
	var buf bytes.Buffer
	var cfg clientv3.Config
	WithLogger(slog.New(slog.NewTextHandler(&buf, nil)))(&cfg)
	l := cfg.Logger.With(zap.String("target", "etcd-endpoints"))
	l.Warn("retrying of unary invoker failed", zap.Int("attempt", 0))
	l.Error("lost the watch", zap.String("key", "/nearchat/x"))
	got := buf.String()
	if strings.Contains(got, "retrying") || !strings.Contains(got, `msg="etcd client: lost the watch"`) ||
		!strings.Contains(got, "key=/nearchat/x") || !strings.Contains(got, "target=etcd-endpoints") {
		t.Fatalf("log:\n%s", got)
	}
}

func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	live := ln.Addr().String()
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	defer ln.Close()
	if why := Unreachable([]string{"http://" + deadAddr}, nil, time.Second); why == "" {
		t.Fatal("a closed port counted reachable")
	}
	if why := Unreachable([]string{"http://" + deadAddr, "http://" + live}, nil, time.Second); why != "" {
		t.Fatalf("one member listening: %s", why)
	}
}
