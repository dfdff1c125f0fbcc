package admin

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// hostGuard refuses requests whose Host header names anything but a
// loopback address, "localhost", or one of the hosts given. A web page in
// the operator's browser can make it send requests to 127.0.0.1 through a
// name the page controls (DNS rebinding): such requests carry that name in
// Host, and are refused here, so the page cannot read the admin API or the
// profiler. (The listener is on loopback by default; a non-loopback admin
// address is added to the hosts by the caller.)
func hostGuard(next http.Handler, hosts []string) http.Handler {
	allowed := map[string]bool{"localhost": true}
	for _, h := range hosts {
		if h = hostOnly(h); h != "" {
			allowed[h] = true
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !hostAllowed(r.Host, allowed) {
			http.Error(w, "403 forbidden: the admin listener answers only to loopback addresses, localhost and the hosts given with -admin-host", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func hostAllowed(host string, allowed map[string]bool) bool {
	h := hostOnly(host)
	if h == "" {
		return false
	}
	if allowed[h] {
		return true
	}
	a, err := netip.ParseAddr(h)
	return err == nil && a.Unmap().IsLoopback()
}

// hostOnly is the host of a Host header or an address, lower case, without
// port, brackets or a trailing dot.
func hostOnly(hp string) string {
	h := hp
	if sh, _, err := net.SplitHostPort(hp); err == nil {
		h = sh
	}
	h = strings.TrimSuffix(strings.Trim(h, "[]"), ".")
	return strings.ToLower(h)
}
