package connlimit

import (
	"context"
	"net"
	"net/http"
)

// ServeNewcomers makes srv keep the connections of a NewcomerListener (or
// Few) as newcomers except while they serve a request: a connection that
// is new, trickling a request's headers, or idle between requests gives
// way to a newer one at a full cap, while one whose whole request came is
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
		if nc, ok := r.Context().Value(newcomerKey{}).(*Newcomer); ok {
			nc.Hold()
		}
		h.ServeHTTP(w, r)
	})
}

type newcomerKey struct{}
