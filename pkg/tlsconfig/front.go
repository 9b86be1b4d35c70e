package chatserver

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// gnet has no TLS of its own. With TLS on, a listener beside the event
// loops terminates TLS and relays each connection's plaintext to the loops
// over a Unix socket in a private directory (or to the plaintext TCP port
// when one is configured too), so TLS members join the same rooms and meet
// the same limits, slow-consumer rule included. The cost is one relay hop
// per TLS connection; bench/ measures it beside the plain path.

// tlsFront is the TLS listener and its relays.
type tlsFront struct {
	ln      net.Listener
	backend string // "unix" or "tcp" address of the event loops
	network string
	sockDir string // private directory holding the Unix socket, if any
	log     func(msg string, args ...any)

	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func handshakeTimeout() time.Duration { return 10 * time.Second }

func (f *tlsFront) serve() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				f.log("TLS accept", "err", err)
			}
			return
		}
		f.wg.Add(1)
		go f.relay(c.(*tls.Conn))
	}
}

func (f *tlsFront) track(c net.Conn, on bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conns == nil {
		return false // closed
	}
	if on {
		f.conns[c] = struct{}{}
	} else {
		delete(f.conns, c)
	}
	return true
}

func (f *tlsFront) relay(c *tls.Conn) {
	defer f.wg.Done()
	defer c.Close()
	if !f.track(c, true) {
		return
	}
	defer f.track(c, false)
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout())
	err := c.HandshakeContext(ctx)
	cancel()
	if err != nil {
		f.log("TLS handshake failed", "remote", c.RemoteAddr(), "err", err)
		return
	}
	back, err := net.Dial(f.network, f.backend)
	if err != nil {
		f.log("TLS relay: reaching the event loops", "err", err)
		return
	}
	defer back.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		// Either side ending ends both: a closed member must not linger.
		_ = dst.Close()
		_ = src.Close()
		done <- struct{}{}
	}
	go pipe(back, c)
	go pipe(c, back)
	<-done
	<-done
}

// close stops accepting, ends every relayed connection and waits.
func (f *tlsFront) close() {
	_ = f.ln.Close()
	f.mu.Lock()
	conns := f.conns
	f.conns = nil
	f.mu.Unlock()
	for c := range conns {
		_ = c.Close()
	}
	f.wg.Wait()
	if f.sockDir != "" {
		_ = os.RemoveAll(f.sockDir)
	}
}

// plainBackend decides where the event loops listen when TLS is on: the
// configured plaintext address, or a Unix socket in a new private
// directory when plaintext is off.
func plainBackend(cfg *Config) (proto, addr, dir string, err error) {
	if cfg.Listen != "" {
		return "tcp", cfg.Listen, "", nil
	}
	dir, err = os.MkdirTemp("", "nearchat-chat-")
	if err != nil {
		return "", "", "", err
	}
	return "unix", filepath.Join(dir, "loops.sock"), dir, nil
}
