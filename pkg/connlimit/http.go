package connlimit

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync"
)

// ServeNewcomers makes srv keep the connections of a NewcomerListener (or
// Few) as newcomers except while they serve a request: a connection that
// is new, trickling a request's headers, or idle between requests gives
// way to a newer one at a full cap, while one whose whole request came
// (its header, and its body once the handler has read it to the end) is
// held until it idles again. It sets srv.ConnContext and srv.ConnState
// (calling any set before) and wraps srv.Handler; call it before Serve.
func ServeNewcomers(srv *http.Server) {
	cc, cs, h := srv.ConnContext, srv.ConnState, srv.Handler
	if h == nil {
		h = http.DefaultServeMux
	}
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if cc != nil {
			ctx = cc(ctx, c)
		}
		return context.WithValue(ctx, newcomerKey{}, NewcomerOf(c))
	}
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		if st == http.StateIdle {
			NewcomerOf(c).Relist()
		}
		if cs != nil {
			cs(c, st)
		}
	}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if nc, ok := r.Context().Value(newcomerKey{}).(*Newcomer); ok && nc != nil {
			if r.Body == nil || r.Body == http.NoBody {
				nc.Hold()
			} else {
				// net/http runs the handler once the header is in; a
				// body declared and never sent would hold the place
				// until ReadTimeout (abuse sweep 6: 16 such requests
				// shut a scraper out of metrics). The request is whole,
				// and the connection held, once its body has come.
				// A copy: net/http looks at the type of its own
				// request's Body to decide how to end the answer.
				r2 := *r
				r2.Body = &holdAtEOF{ReadCloser: r.Body, nc: nc}
				r = &r2
			}
		}
		h.ServeHTTP(w, r)
	})
}

type newcomerKey struct{}

// holdAtEOF holds nc once the body it wraps has been read to its end.
type holdAtEOF struct {
	io.ReadCloser
	nc   *Newcomer
	once sync.Once
}

func (b *holdAtEOF) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.once.Do(b.nc.Hold)
	}
	return n, err
}
