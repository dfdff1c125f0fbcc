package gateway

import (
	"errors"
	"maps"

	"github.com/fastfile/fschunk/internal/auth"
	"github.com/fastfile/fschunk/internal/fschunk"
	"github.com/fastfile/fschunk/internal/pool"
)

// Allowed is the list of servers a gateway admits: each server's static
// public key and its name ("" when the list gives none; the server's
// HEARTBEAT then names it).
type Allowed map[auth.PublicKey]string

func (a Allowed) clone() Allowed {
	if a == nil {
		return Allowed{}
	}
	return maps.Clone(a)
}

// errIdentity: an AUTH, valid for its own key, claims a server instance
// that another key owns.
var errIdentity = errors.New("gateway: server instance claimed by another key")

// unlistedError: a valid handshake from a key the allowed list lacks.
type unlistedError struct{ key auth.PublicKey }

func (e *unlistedError) Error() string {
	return "gateway: server key " + e.key.String() + " is not in the allowed list"
}

// allowKey is the responder's admission check: between reading Noise's
// first message (which proves the key) and writing the second.
func (g *Gateway) allowKey(k auth.PublicKey) error {
	if _, ok := (*g.allowed.Load())[k]; !ok {
		return &unlistedError{key: k}
	}
	return nil
}

// listedName is the name the allowed list gives key k, "" if none.
func (g *Gateway) listedName(k auth.PublicKey) string { return (*g.allowed.Load())[k] }

// SetAllowed replaces the list of admitted servers (the file was edited,
// or SIGHUP). Servers whose key left the list are revoked at once: told
// GOODBYE and evicted, their sessions dropped, their outstanding reads
// handed to other holders by the engine; their next handshakes are
// refused. Servers still listed are not disturbed. It returns how many
// servers were revoked.
func (g *Gateway) SetAllowed(a Allowed) int {
	a = a.clone()
	g.allowed.Store(&a)
	var gone []*peer
	g.mu.RLock()
	for _, p := range g.peers {
		if _, ok := a[p.key]; !ok {
			gone = append(gone, p)
		}
	}
	g.mu.RUnlock()
	bye := fschunk.Goodbye{Reason: fschunk.GoodbyeRevoked}
	for _, p := range gone {
		// The GOODBYE makes the server stop sending at once instead of
		// timing out; it then tries to register again and is refused.
		g.sendTo(p, fschunk.TypeGoodbye, bye.Append)
		g.ctr.revoked.Add(1)
		g.log.Warn("server revoked: its key left the allowed servers list", "server", p.id.String(), "name", g.pool.Name(p.id), "key", p.key.Short())
		g.evict(p.id, "revoked")
	}
	for _, s := range g.pool.Servers() {
		if p := g.peer(s.ID); p != nil {
			if name := a[p.key]; name != "" {
				g.pool.SetName(s.ID, name)
			}
		}
	}
	return len(gone)
}

// SetStatics replaces the gateway's key pairs (a rotation: the next key
// added, or made the only one), without a restart. Sessions are kept;
// handshakes addressed to a key no longer held fail.
func (g *Gateway) SetStatics(cur, next auth.StaticKey) error {
	return g.resp.SetStatics(statics(cur, next))
}

// PublicKeys returns the public keys the gateway answers for.
func (g *Gateway) PublicKeys() []auth.PublicKey { return g.resp.Publics() }

func statics(cur, next auth.StaticKey) []auth.StaticKey {
	s := []auth.StaticKey{cur}
	if !next.IsZero() && next.Public() != cur.Public() {
		s = append(s, next)
	}
	return s
}

// serverKey is the identity of a live server, for tests and the API.
func (g *Gateway) serverKey(id pool.ServerID) (auth.PublicKey, bool) {
	if p := g.peer(id); p != nil {
		return p.key, true
	}
	return auth.PublicKey{}, false
}
