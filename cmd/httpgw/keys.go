package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/fastfile/fschunk/internal/auth"
	"github.com/fastfile/fschunk/internal/gateway"
	"github.com/fastfile/fschunk/internal/keys"
)

// gwKeys is the gateway's key material, from -key-file, -private-key,
// -next-private-key and -allowed-servers (or, for -demo, generated).
type gwKeys struct {
	psk       *auth.Key
	cur, next auth.StaticKey
	watcher   *keys.Watcher    // nil: no -allowed-servers (demo)
	gw        *gateway.Gateway // set before the watcher runs
	log       *slog.Logger
	// demo are the key pairs of the demo's embedded servers, always
	// admitted beside the file's list.
	demo []auth.StaticKey
}

// loadKeys reads (or, for the demo, makes) every key the gateway needs.
// The keys come first at start-up: a missing or bad key is the commonest
// error, and it should be the only thing printed.
func loadKeys(o *options, log *slog.Logger) (*gwKeys, error) {
	k := &gwKeys{log: log}
	var err error
	if o.demo && o.keyFile == "" {
		b := make([]byte, 32)
		rand.Read(b)
		k.psk, err = auth.NewKey(b)
	} else {
		k.psk, err = auth.LoadKey(o.keyFile)
		if err == nil {
			if werr := auth.CheckKeyFileMode(o.keyFile); werr != nil {
				log.Warn("key file readable by others", "err", werr)
			}
		}
	}
	if err != nil {
		return nil, err
	}
	switch {
	case o.demo && o.privateKey == "":
		k.cur = auth.GenerateStaticKey()
	case o.privateKey == "":
		return nil, fmt.Errorf("no -private-key: the gateway's X25519 key pair identifies it to the servers; %s", keys.GenkeyHint)
	default:
		if k.cur, err = loadStatic(o.privateKey, "-private-key", log); err != nil {
			return nil, err
		}
	}
	if o.nextPrivateKey != "" {
		if k.next, err = loadNext(o.nextPrivateKey, log); err != nil {
			return nil, err
		}
	}
	if o.demo {
		for range o.demoServers {
			k.demo = append(k.demo, auth.GenerateStaticKey())
		}
	}
	switch {
	case o.allowedServers != "":
		k.watcher, err = keys.NewWatcher(o.allowedServers, keys.WatchConfig{Logger: log, OnChange: k.onChange})
		if err != nil {
			return nil, fmt.Errorf("-allowed-servers: %w", err)
		}
	case !o.demo:
		return nil, errors.New("no -allowed-servers: the gateway admits only the servers whose public keys a file lists (one `PUBKEY [NAME]` a line; a server's key: fastfilesrv pubkey < its private key file)")
	}
	log.Info("gateway keys", "public_key", k.cur.Public().String(), "next_public_key", pubText(k.next), "allowed_servers", k.listed())
	return k, nil
}

func pubText(s auth.StaticKey) string {
	if s.IsZero() {
		return ""
	}
	return s.Public().String()
}

// loadNext reads -next-private-key. A file that does not exist yet is no
// next key, not an error: an operator sets the flag once, for good, and a
// key roll is then "write the file, SIGHUP", with no restart.
func loadNext(path string, log *slog.Logger) (auth.StaticKey, error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		log.Info("-next-private-key: no such file yet; no next key until it is written and httpgw gets SIGHUP", "file", path)
		return auth.StaticKey{}, nil
	}
	return loadStatic(path, "-next-private-key", log)
}

// loadStatic reads a private key file into a key pair.
func loadStatic(path, flag string, log *slog.Logger) (auth.StaticKey, error) {
	p, warn, err := keys.LoadPrivate(path)
	if err != nil {
		return auth.StaticKey{}, fmt.Errorf("%s: %w", flag, err)
	}
	if warn != nil {
		log.Warn("private key file readable by others", "flag", flag, "err", warn)
	}
	return auth.StaticKeyOf(p)
}

// listed is how many servers are admitted now.
func (k *gwKeys) listed() int { return len(k.allowed(k.list())) }

func (k *gwKeys) list() *keys.AllowList {
	if k.watcher == nil {
		return nil
	}
	return k.watcher.List()
}

// allowed is the gateway's list: the file's, and the demo's servers.
func (k *gwKeys) allowed(l *keys.AllowList) gateway.Allowed {
	a := gateway.Allowed{}
	if l != nil {
		for pub, name := range l.All() {
			a[pub] = name
		}
	}
	for _, s := range k.demo {
		if _, ok := a[s.Public()]; !ok {
			a[s.Public()] = ""
		}
	}
	return a
}

// onChange hands a reloaded allow-list to the gateway: a key removed
// revokes its server at once.
func (k *gwKeys) onChange(l *keys.AllowList) {
	n := k.gw.SetAllowed(k.allowed(l))
	k.log.Info("allowed servers reloaded", "servers", l.Len(), "revoked", n)
}

// watch keeps the gateway's allowed servers and key pairs current until
// ctx is done: the allow-list is re-read when its file changes and on
// SIGHUP; on SIGHUP the private key files are read again too (a key
// rotation: -next-private-key added, or moved to -private-key). A file
// that does not load leaves the keys in force, with a log line saying why.
func (k *gwKeys) watch(ctx context.Context, o *options, gw *gateway.Gateway) {
	k.gw = gw
	hupKeys := make(chan os.Signal, 1)
	signal.Notify(hupKeys, syscall.SIGHUP)
	if k.watcher != nil {
		go k.watcher.Run(ctx)
	}
	go func() {
		defer signal.Stop(hupKeys)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hupKeys:
				k.hup(o, gw)
			}
		}
	}()
}

// hup re-reads the allow-list and the private key files, and says so in
// one line when nothing changed: an operator who sent SIGHUP sees that it
// was received, and what was read.
func (k *gwKeys) hup(o *options, gw *gateway.Gateway) {
	var listChanged bool
	var listErr error
	if k.watcher != nil {
		listChanged, listErr = k.watcher.Reload() // logs its own changes and errors
	}
	keysChanged, keysOK := k.reloadStatics(o, gw, k.log)
	if listChanged || listErr != nil || keysChanged || !keysOK {
		return
	}
	k.log.Info("SIGHUP: re-read the allowed-servers file and the private key files; nothing changed",
		"allowed_servers", o.allowedServers, "private_key", o.privateKey, "next_private_key", o.nextPrivateKey)
}

// reloadStatics reads -private-key and -next-private-key again. It
// reports whether the keys in force changed, and false ok if a file did
// not load (logged).
func (k *gwKeys) reloadStatics(o *options, gw *gateway.Gateway, log *slog.Logger) (changed, ok bool) {
	if o.privateKey == "" {
		return false, true // a demo's generated key
	}
	cur, err := loadStatic(o.privateKey, "-private-key", log)
	var next auth.StaticKey
	if err == nil && o.nextPrivateKey != "" {
		next, err = loadNext(o.nextPrivateKey, log)
	}
	if err == nil {
		err = gw.SetStatics(cur, next)
	}
	if err != nil {
		log.Error("SIGHUP: key pairs not reloaded; the ones in force stay", "err", err)
		return false, false
	}
	changed = cur.Public() != k.cur.Public() || next.Public() != k.next.Public()
	if changed {
		log.Info("SIGHUP: gateway key pairs reloaded", "public_key", cur.Public().String(), "next_public_key", pubText(next))
	}
	k.cur, k.next = cur, next
	return changed, true
}
