package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"nearchat/pkg/centralapi"
	"nearchat/pkg/proto"
	"nearchat/pkg/tlsconfig"
	"nearchat/pkg/wire"
)

// preflight checks, before the terminal client draws anything or the bot
// prints its first event, what a person most often gets wrong when starting
// the client: the CA file, Central's address, TLS on one side only, the
// control port. It loads -ca into f.tls, fills f.control from Central when
// it was not given, and returns an error that says what to do.
func preflight(ctx context.Context, f *flags) error {
	if f.ca != "" {
		tc, err := tlsconfig.Client(f.ca, "", "")
		if err != nil {
			return fmt.Errorf("cannot use the CA file given with -ca (or NEARCHAT_CA): %v\n"+
				"Give the cluster's CA certificate (make certs writes certs/ca.pem), or leave -ca out for a Central without TLS", err)
		}
		f.tls = tc
	}
	api := centralapi.NewClient(f.central, nil)
	if f.tls != nil {
		api = centralapi.NewClientTLS(f.central, f.tls)
	}
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	h, err := api.Health(hctx)
	if err != nil {
		if framedAnswer(err, f.tls != nil) && !strings.Contains(f.central, ",") {
			// Central's control port or a chat server: a Hello tells which.
			if w, _ := hello(hctx, f.central, f.tls); w != nil && w.Server != proto.CentralName {
				return fmt.Errorf("%s is chat server %q, not Central's REST API: give Central's REST address with -central or NEARCHAT_CENTRAL", f.central, clipName(w.Server))
			}
		}
		return explainCentral(f.central, f.tls != nil, err)
	}
	if f.control == "" {
		if h.ControlPort == 0 {
			return fmt.Errorf("Central at %s did not say its control port (an older Central?): give it with -control HOST:PORT", f.central)
		}
		// Replicas (a comma-separated list) are taken to use the same
		// control port as the one that answered, each on its own host.
		var ctl []string
		for _, a := range strings.Split(f.central, ",") {
			ctl = append(ctl, net.JoinHostPort(centralHost(a), strconv.Itoa(h.ControlPort)))
		}
		f.control = strings.Join(ctl, ",")
		return nil
	}
	return checkControl(hctx, f)
}

// centralHost returns the host part of Central's REST address, given as
// host:port or as a URL.
func centralHost(addr string) string {
	if strings.Contains(addr, "://") {
		if u, err := url.Parse(addr); err == nil {
			return u.Hostname()
		}
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}

// explainCentral turns a failed first contact with Central's REST API into
// what to do about it.
func explainCentral(addr string, useTLS bool, err error) error {
	var ae *centralapi.Error
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var rhe tls.RecordHeaderError
	msg := err.Error()
	// What Central (or whatever answers at addr) says is printed on the
	// terminal: clipped and cleaned like any text from the network.
	switch {
	case errors.As(err, &ae) && strings.Contains(ae.Message, "HTTP request to an HTTPS server"):
		return fmt.Errorf("Central at %s serves TLS: start with -ca FILE (the cluster's CA, e.g. certs/ca.pem) or set NEARCHAT_CA", addr)
	case errors.As(err, &rhe) || strings.Contains(msg, "first record does not look like a TLS handshake") ||
		strings.Contains(msg, "HTTP response to HTTPS client"):
		return fmt.Errorf("Central at %s does not serve TLS: leave out -ca (and NEARCHAT_CA)", addr)
	case errors.As(err, &ua):
		return fmt.Errorf("Central at %s has a certificate the CA given with -ca did not sign: give the cluster's CA (the certs directory Central's certificate came from)", addr)
	case errors.As(err, &hn):
		return fmt.Errorf("Central's certificate is not valid for %q: %s; use the host name the certificate was made for", centralHost(addr), clipDetail(hn.Error()))
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("Central at %s is not reachable (connection refused). Is it running? Give its REST address with -central or NEARCHAT_CENTRAL", addr)
	case framedAnswer(err, useTLS):
		return fmt.Errorf("%s answers, but not as Central's REST API: it looks like Central's control port. Give the REST port with -central (the control port is learned from Central)", addr)
	case errors.Is(err, context.DeadlineExceeded) || strings.Contains(msg, "Client.Timeout"):
		return fmt.Errorf("Central at %s did not answer within 5 s: check the address (-central or NEARCHAT_CENTRAL) and the network", addr)
	case errors.As(err, &ae):
		return fmt.Errorf("Central at %s answered with an error: %s", addr, clipDetail(ae.Message))
	}
	var ne *net.OpError
	if errors.As(err, &ne) {
		return fmt.Errorf("Central at %s is not reachable (%s): check -central or NEARCHAT_CENTRAL", addr, clipDetail(ne.Err.Error()))
	}
	return fmt.Errorf("cannot reach Central at %s: %s", addr, clipDetail(msg))
}

// framedAnswer reports whether err is what an HTTP request to a port of
// nearchat's framed protocol gets: an answer that is not HTTP, or a close.
func framedAnswer(err error, useTLS bool) bool {
	return strings.Contains(err.Error(), "malformed HTTP") || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) && !useTLS
}

// hello says Hello to the framed-protocol port at addr and returns its
// Welcome (nil, and the frame's error or nil, for any other answer).
func hello(ctx context.Context, addr string, tc *tls.Config) (*proto.Welcome, error) {
	d := &net.Dialer{}
	var conn net.Conn
	var err error
	if tc != nil {
		conn, err = (&tlsconfig.Dialer{Base: d, Config: tc}).DialContext(ctx, "tcp", addr)
	} else {
		conn, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
	b, err := wire.AppendFrame(nil, &proto.Hello{V: wire.Version, Agent: "chat/1"})
	if err != nil {
		return nil, err
	}
	if _, err := conn.Write(b); err != nil {
		return nil, err
	}
	t, body, err := wire.NewReader(conn, wire.MaxFrame).Next()
	if err != nil {
		return nil, err
	}
	m, err := proto.Decode(t, body)
	if err != nil {
		return nil, err
	}
	w, _ := m.(*proto.Welcome)
	return w, nil
}

// checkControl makes sure -control, when given, is Central's control port:
// it says Hello and looks at the first bytes of the answer.
func checkControl(ctx context.Context, f *flags) error {
	if strings.Contains(f.control, ",") {
		return nil // replicas: the client tries each, one may be down
	}
	d := &net.Dialer{}
	var conn net.Conn
	var err error
	if f.tls != nil {
		conn, err = (&tlsconfig.Dialer{Base: d, Config: f.tls}).DialContext(ctx, "tcp", f.control)
	} else {
		conn, err = d.DialContext(ctx, "tcp", f.control)
	}
	if err != nil {
		return fmt.Errorf("Central's control port %s is not reachable (%v): leave -control out, the client learns the port from Central", f.control, unwrapOp(err))
	}
	defer conn.Close()
	hello, err := wire.AppendFrame(nil, &proto.Hello{V: wire.Version, Agent: "chat/1"})
	if err != nil {
		return err
	}
	// The blank line makes an HTTP server answer at once (400) instead of
	// waiting for the rest of a request; Central has answered the Hello
	// before it reads past it.
	hello = append(hello, "\r\n\r\n"...)
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := conn.Write(hello); err != nil {
		return fmt.Errorf("Central's control port %s: %v", f.control, err)
	}
	head := make([]byte, 5)
	if _, err := io.ReadFull(conn, head); err != nil {
		return fmt.Errorf("%s did not answer as Central's control port (%v): leave -control out, the client learns the port from Central", f.control, unwrapOp(err))
	}
	if bytes.HasPrefix(head, []byte("HTTP/")) {
		return fmt.Errorf("-control %s is an HTTP port (Central's REST port?): leave -control out, the client learns the control port from Central", f.control)
	}
	// A chat server answers the Hello too: its Welcome names it.
	n := int(binary.BigEndian.Uint32(head[:4]))
	if n < 1 || n > wire.MaxFrame {
		return fmt.Errorf("-control %s does not speak nearchat's protocol: leave -control out, the client learns the control port from Central", f.control)
	}
	body := make([]byte, n-1)
	if _, err := io.ReadFull(conn, body); err != nil {
		return fmt.Errorf("%s did not answer as Central's control port (%v): leave -control out, the client learns the port from Central", f.control, unwrapOp(err))
	}
	if m, err := proto.Decode(wire.Type(head[4]), body); err == nil {
		if w, ok := m.(*proto.Welcome); ok && w.Server != proto.CentralName {
			return fmt.Errorf("-control %s is chat server %q, not Central's control port: leave -control out, the client learns the port from Central", f.control, clipName(w.Server))
		}
		if e, ok := m.(*proto.Error); ok && e.Code == proto.CodeWrongPort {
			// The reason says what to do: Central's REST port names the
			// control port, a TLS port asks for -ca.
			return fmt.Errorf("-control %s refused our Hello: %s", f.control, clipDetail(e.Reason))
		}
	}
	return nil
}

func unwrapOp(err error) error {
	var ne *net.OpError
	if errors.As(err, &ne) {
		return ne.Err
	}
	return err
}
