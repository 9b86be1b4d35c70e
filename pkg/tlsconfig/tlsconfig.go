// Package tlsconfig builds nearchat's TLS 1.3 configurations from PEM files,
// wraps dialers with TLS, and makes a development CA for `make certs`, the
// demo and the tests.
//
// Every link verifies the peer's certificate against a configured CA: there
// is no "insecure" switch. Servers may also require client certificates
// (chat servers presenting one to Central instead of, or beside, the cluster
// secret).
package tlsconfig

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
)

// Server returns a TLS 1.3 server configuration with the certificate in
// certFile/keyFile. With clientCA set, clients must present a certificate
// signed by it.
func Server(certFile, keyFile, clientCA string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: server certificate: %w", err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}}
	if clientCA != "" {
		pool, err := loadPool(clientCA)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// Client returns a TLS 1.3 client configuration that trusts only the CA in
// caFile, presenting certFile/keyFile when both are given.
func Client(caFile, certFile, keyFile string) (*tls.Config, error) {
	pool, err := loadPool(caFile)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool}
	if certFile != "" || keyFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("tls: client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

func loadPool(caFile string) (*x509.CertPool, error) {
	if caFile == "" {
		return nil, errors.New("tls: a CA file is needed to verify peers")
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("tls: CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls: CA %s holds no PEM certificate", caFile)
	}
	return pool, nil
}

// Dialer dials through Base (nil: a plain net.Dialer) and runs a TLS
// handshake with Config, verifying the server's name against the host part
// of the address dialed. It implements proto.Dialer and is safe for
// concurrent use.
type Dialer struct {
	Base   BaseDialer
	Config *tls.Config
}

// BaseDialer opens the connections a Dialer runs TLS over: *net.Dialer, or
// one that adds latency (package delaynet).
type BaseDialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// DialContext dials addr and completes the TLS handshake within ctx.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	base := d.Base
	if base == nil {
		base = &net.Dialer{}
	}
	raw, err := base.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		raw.Close()
		return nil, err
	}
	cfg := d.Config.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	c := tls.Client(raw, cfg)
	if err := c.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("tls handshake with %s: %w", addr, err)
	}
	return c, nil
}
