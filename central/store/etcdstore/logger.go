package etcdstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// WithLogger sends the etcd client's own errors to l, as slog records
// like the rest of Central's log, and drops its warnings: by default the
// client wrote JSON lines of its own among Central's, one every 2 s while
// etcd was unreachable ("retrying of unary invoker failed"), and never
// said so in words (usability review 7, M10; Unreachable does).
func WithLogger(l *slog.Logger) Option {
	return func(c *clientv3.Config) { c.Logger = zap.New(&slogCore{l: l}) }
}

// slogCore is a zapcore.Core writing zap entries of error level and above
// to a slog.Logger.
type slogCore struct {
	l      *slog.Logger
	fields []zapcore.Field
}

func (c *slogCore) Enabled(lvl zapcore.Level) bool { return lvl >= zapcore.ErrorLevel }

func (c *slogCore) With(fs []zapcore.Field) zapcore.Core {
	return &slogCore{l: c.l, fields: append(c.fields[:len(c.fields):len(c.fields)], fs...)}
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fs []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range append(c.fields[:len(c.fields):len(c.fields)], fs...) {
		f.AddTo(enc)
	}
	attrs := make([]slog.Attr, 0, len(enc.Fields))
	for k, v := range enc.Fields {
		attrs = append(attrs, slog.Any(k, v))
	}
	c.l.LogAttrs(context.Background(), slog.LevelError, "etcd client: "+e.Message, attrs...)
	return nil
}

func (c *slogCore) Sync() error { return nil }

// Unreachable reports, when no etcd member at endpoints lets this
// replica in within timeout, why for the first of them; "" when one does.
// Without tc that means a TCP connection (the usual mistakes: a wrong
// address, etcd not started); with tc, a TLS handshake too, and a moment
// after it for etcd to refuse our certificate (TLS 1.3 says so only
// after the handshake): a missing or untrusted client certificate is
// named, where the etcd client's own retries would be silent. It says
// nothing of quorum.
func Unreachable(endpoints []string, tc *tls.Config, timeout time.Duration) string {
	var why string
	for _, e := range endpoints {
		host := e
		if u, err := url.Parse(e); err == nil && u.Host != "" {
			host = u.Host
		}
		err := admits(host, tc, timeout)
		if err == nil {
			return ""
		}
		if why == "" {
			why = err.Error()
		}
	}
	return strings.TrimSpace(why)
}

// admits dials host and, with tc, shakes hands and waits briefly for a
// refusal of our certificate.
func admits(host string, tc *tls.Config, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", host, timeout)
	if err != nil || tc == nil {
		if c != nil {
			c.Close()
		}
		return err
	}
	defer c.Close()
	cfg := tc.Clone()
	if cfg.ServerName == "" {
		if h, _, err := net.SplitHostPort(host); err == nil {
			cfg.ServerName = h
		}
	}
	tl := tls.Client(c, cfg)
	tl.SetDeadline(time.Now().Add(timeout))
	if err := tl.Handshake(); err != nil {
		return fmt.Errorf("TLS handshake with %s: %w", host, err)
	}
	// etcd waits for the HTTP/2 preface, so a read that times out means
	// it took our certificate; an alert means it did not.
	tl.SetReadDeadline(time.Now().Add(timeout / 4))
	var b [1]byte
	_, err = tl.Read(b[:])
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	return fmt.Errorf("TLS handshake with %s: %w", host, err)
}
