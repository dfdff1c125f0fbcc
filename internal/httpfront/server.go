package httpfront

import (
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// MaxHeaderBytes is the limit on the request line plus headers.
const MaxHeaderBytes = 16 << 10

// headerSlop is what net/http adds to Server.MaxHeaderBytes before
// enforcing it (net/http's initialReadLimitSize, "bufio slop").
const headerSlop = 4096

// HTTP/2 limits (with TLS only).
const (
	// MaxConcurrentStreams bounds requests in progress on one HTTP/2
	// connection (net/http's default is 250). Every response may hold a
	// -window of chunks, so one connection must not be able to open more
	// downloads than a browser would over its six HTTP/1.1 connections by
	// much; clients queue streams beyond it, nothing is refused.
	MaxConcurrentStreams = 32
	// MaxReceiveBuffer is the flow-control window for request bodies, per
	// stream and per connection (the HTTP/2 minimum for the latter). Only
	// GET and HEAD are served, so a body is never wanted.
	MaxReceiveBuffer = 64 << 10
)

// ServerOptions configures NewServer.
type ServerOptions struct {
	// TLS, if set, makes the server HTTPS (see Serve) with HTTP/2 and
	// HTTP/1.1 negotiated by ALPN. Without it the server speaks HTTP/1.1
	// only: no cleartext HTTP/2 (h2c), which clients do not use unasked.
	TLS *tls.Config
	// Logger receives net/http's own error log; nil means the logger of
	// h if h came from NewHandler, else slog.Default().
	Logger *slog.Logger
	// SendTimeout closes an HTTP/2 connection on which nothing could be
	// written for this long (HTTP2Config.WriteByteTimeout); the handler's
	// Options.SendTimeout cuts single responses. 0 means
	// DefaultSendTimeout; negative, none.
	SendTimeout time.Duration
}

// NewServer returns the server for h listening on addr.
//
//   - ReadHeaderTimeout 10s: bounds slow-loris clients, and the TLS
//     handshake too (net/http uses it for that).
//   - ReadTimeout and WriteTimeout 0: responses are streamed from the pool
//     and may legitimately take long; a whole-response deadline would cut
//     large downloads. Stalls are the Source's business (ErrUpstreamTimeout).
//   - IdleTimeout 120s with keep-alives on: browsers and download managers
//     issue many (range) requests per connection. It applies to idle
//     HTTP/2 connections as well.
//   - Request line plus headers are limited to MaxHeaderBytes (16 KiB).
//     net/http allows 4 KiB beyond Server.MaxHeaderBytes, so the field is
//     set 4 KiB lower to make the limit on the wire exactly 16 KiB; beyond
//     it the client gets 431. HTTP/2 derives SETTINGS_MAX_HEADER_LIST_SIZE
//     from the same field: 12 KiB + 320 = 12,608, counted the HTTP/2 way
//     (decoded name + value + 32 per field), which for a request with a
//     dozen fields is about the same budget as 16 KiB of HTTP/1 text
//     (request line, ": " and CRLFs included). net/http has no separate
//     knob; beyond it the stream gets 431.
//   - HTTP/2 (with TLS only): it lets a browser fetch a directory's files
//     over one connection, and a connection costs the per-client limits
//     one slot instead of six. The per-request rate limit sees every
//     stream (see package access). MaxConcurrentStreams and
//     MaxReceiveBuffer above bound a connection's cost.
//   - net/http's own error log (TLS handshake errors, bad requests) goes to
//     slog at debug level: it is client noise, not gateway failure.
func NewServer(addr string, h http.Handler, opt ServerOptions) *http.Server {
	log := opt.Logger
	if log == nil {
		log = slog.Default()
		if hh, ok := h.(*handler); ok {
			log = hh.log
		}
	}
	sendTimeout := opt.SendTimeout
	switch {
	case sendTimeout == 0:
		sendTimeout = DefaultSendTimeout
	case sendTimeout < 0:
		sendTimeout = 0
	}
	var protos http.Protocols
	protos.SetHTTP1(true)
	if opt.TLS != nil {
		protos.SetHTTP2(true)
	}
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		TLSConfig:         opt.TLS,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       0,
		WriteTimeout:      0,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    MaxHeaderBytes - headerSlop,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		Protocols:         &protos,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams:          MaxConcurrentStreams,
			MaxReceiveBufferPerConnection: MaxReceiveBuffer,
			MaxReceiveBufferPerStream:     MaxReceiveBuffer,
			WriteByteTimeout:              sendTimeout,
		},
	}
}

// Serve serves s on l, over TLS if s has a TLS configuration (l is then
// the plain TCP listener; the handshake happens per connection, after
// any access checks done by l).
func Serve(s *http.Server, l net.Listener) error {
	if s.TLSConfig != nil {
		return s.ServeTLS(l, "", "")
	}
	return s.Serve(l)
}
