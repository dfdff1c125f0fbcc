package httpfront

import (
	"log/slog"
	"net/http"
	"time"
)

// MaxHeaderBytes is the limit on the request line plus headers.
const MaxHeaderBytes = 16 << 10

// headerSlop is what net/http adds to Server.MaxHeaderBytes before
// enforcing it (net/http's initialReadLimitSize, "bufio slop").
const headerSlop = 4096

// NewServer returns an HTTP/1.1 server for h listening on addr.
//
//   - ReadHeaderTimeout 10s: bounds slow-loris clients.
//   - ReadTimeout and WriteTimeout 0: responses are streamed from the pool
//     and may legitimately take long; a whole-response deadline would cut
//     large downloads. Stalls are the Source's business (ErrUpstreamTimeout).
//   - IdleTimeout 120s with keep-alives on: browsers and download managers
//     issue many (range) requests per connection.
//   - Request line plus headers are limited to MaxHeaderBytes (16 KiB).
//     net/http allows 4 KiB beyond Server.MaxHeaderBytes, so the field is
//     set 4 KiB lower to make the limit on the wire exactly 16 KiB; beyond
//     it the client gets 431.
//   - HTTP/2 is disabled even with TLS: the gateway is specified as
//     HTTP/1.1 and the header limit above is HTTP/1-specific.
//   - net/http's own error log (TLS handshake errors, bad requests) goes to
//     slog at debug level: it is client noise, not gateway failure. The
//     logger is h's if h came from NewHandler, else slog.Default().
func NewServer(addr string, h http.Handler) *http.Server {
	log := slog.Default()
	if hh, ok := h.(*handler); ok {
		log = hh.log
	}
	var protos http.Protocols
	protos.SetHTTP1(true)
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       0,
		WriteTimeout:      0,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    MaxHeaderBytes - headerSlop,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		Protocols:         &protos,
	}
}
