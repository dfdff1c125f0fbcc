// Command fastfilesrv is FastFileSrv: it holds a folder, registers with
// one or more HttpGw over the FS Chunk Protocol and serves chunk reads.
// This file only parses flags and wires packages together.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/fastfile/fschunk/internal/auth"
	"github.com/fastfile/fschunk/internal/catalog"
	"github.com/fastfile/fschunk/internal/cli"
	"github.com/fastfile/fschunk/internal/fileserver"
	"github.com/fastfile/fschunk/internal/fschunk"
	"github.com/fastfile/fschunk/internal/keys"
	"github.com/fastfile/fschunk/internal/transport"
)

const envPrefix = "FASTFILESRV"

type options struct {
	root, keyFile, listen, state string
	privateKey                   string
	gatewayKeys                  []auth.PublicKey
	name                         string
	gateways                     []string
	maxReads                     int
	logFormat, logLevel          string
}

func main() { cli.Main("fastfilesrv", run) }

func parse(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("fastfilesrv", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var gw gatewayList
	fs.StringVar(&o.root, "root", ".", "`folder` to serve")
	host, _ := os.Hostname()
	fs.StringVar(&o.name, "name", host, "this server's stable `name` in the gateway's logs, metrics and status page (no spaces, at most 64 bytes)")
	fs.StringVar(&o.keyFile, "key-file", "", "pre-shared key `file`, the gateway's (create one with: (umask 077; head -c 32 /dev/urandom > fschunk.key))")
	fs.StringVar(&o.privateKey, "private-key", "", "this server's X25519 private key `file`: its identity (make one with: fastfilesrv genkey -out FILE; the gateway lists its public key: fastfilesrv pubkey < FILE)")
	var gwKeys publicKeyList
	fs.Var(&gwKeys, "gateway-public-key", "the gateway's public `key` (httpgw pubkey < its private key); comma-separated or repeated: during a gateway key rotation, its current and next keys")
	fs.StringVar(&o.listen, "listen", ":0", "local UDP `address`; port 0: any free port")
	fs.StringVar(&o.state, "state", "", "hash cache `file` (default: in the user cache directory, named after the root)")
	fs.Var(&gw, "gateway", "gateway `list`, comma-separated host:port; repeatable (alternative to the positional arguments)")
	fs.IntVar(&o.maxReads, "max-reads", fileserver.DefaultMaxReads, "reads served at once; more are answered BUSY")
	fs.StringVar(&o.logFormat, "log-format", "text", "log `format`: text or json")
	fs.StringVar(&o.logLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	cli.AddVersionFlag(fs)
	fs.Usage = cli.Usage(fs, envPrefix, "fastfilesrv [flags] GATEWAY_HOST GATEWAY_PORT  (or GATEWAY_HOST:PORT ...)",
		"fastfilesrv -key-file fschunk.key -private-key srv.key -gateway-public-key GWPUB -root /srv/files 10.1.1.1 8888",
		"fastfilesrv -key-file fschunk.key -private-key srv.key -gateway-public-key GW1PUB,GW2PUB -gateway gw1.example:8888,gw2.example:8888")
	if err := cli.Parse(fs, envPrefix, args); err != nil {
		return nil, err
	}
	gws, err := gatewayArgs(gw, fs.Args())
	if err != nil {
		return nil, err
	}
	o.gateways = gws
	if len(gwKeys) > auth.MaxGatewayKeys {
		return nil, fmt.Errorf("%d -gateway-public-key values: at most %d (a gateway's current and next keys, for each gateway)", len(gwKeys), auth.MaxGatewayKeys)
	}
	o.gatewayKeys = gwKeys
	if err := fschunk.ValidServerName(o.name); err != nil {
		return nil, fmt.Errorf("invalid -name %q: %w", o.name, err)
	}
	if o.maxReads < 1 {
		return nil, fmt.Errorf("invalid -max-reads %d: want at least 1", o.maxReads)
	}
	return o, nil
}

// publicKeyList is -gateway-public-key: each use adds its comma-separated
// keys, in their text form.
type publicKeyList []auth.PublicKey

func (l publicKeyList) String() string {
	var s []string
	for _, k := range l {
		s = append(s, k.String())
	}
	return strings.Join(s, ",")
}

func (l *publicKeyList) Set(v string) error {
	for _, t := range strings.Split(v, ",") {
		if t = strings.TrimSpace(t); t == "" {
			continue
		}
		k, err := keys.ParsePublic(t)
		if err != nil {
			return err
		}
		if slices.Contains(*l, k) {
			return fmt.Errorf("key %s given twice", k.Short())
		}
		*l = append(*l, k)
	}
	return nil
}

// gatewayList is the -gateway flag: each use adds its comma-separated
// entries, so "-gateway a,b" and "-gateway a -gateway b" mean the same.
type gatewayList []string

func (l *gatewayList) String() string { return strings.Join(*l, ",") }

func (l *gatewayList) Set(v string) error {
	for _, g := range strings.Split(v, ",") {
		if g = strings.TrimSpace(g); g != "" {
			*l = append(*l, g)
		}
	}
	return nil
}

// gatewayArgs accepts "HOST PORT" (the assignment's form), "HOST:PORT ...",
// or -gateway a,b (repeatable), after the flag's gateways.
func gatewayArgs(fromFlag []string, args []string) ([]string, error) {
	out := append([]string(nil), fromFlag...)
	if len(args) == 2 {
		_, _, err0 := net.SplitHostPort(args[0])
		_, _, err1 := net.SplitHostPort(args[1])
		if err0 != nil && err1 != nil {
			// The assignment's form: FastFileSrv 10.1.1.1 8888. Neither
			// argument has a port of its own, so the second is the port
			// (checked below, and blamed if it is not one).
			args = []string{net.JoinHostPort(strings.Trim(args[0], "[]"), args[1])}
		}
	}
	out = append(out, args...)
	if len(out) == 0 {
		return nil, errors.New("no gateway given: usage fastfilesrv [flags] GATEWAY_HOST GATEWAY_PORT (see -h)")
	}
	seen := map[string]bool{}
	for _, g := range out {
		// Two sessions with one gateway would be two servers to it, each
		// re-registering over the other.
		if seen[g] {
			return nil, fmt.Errorf("gateway %s given twice", g)
		}
		seen[g] = true
		host, port, err := net.SplitHostPort(g)
		if err != nil || host == "" {
			return nil, fmt.Errorf("invalid gateway address %q: want HOST PORT or HOST:PORT", g)
		}
		if _, err := net.LookupPort("udp", port); err != nil {
			return nil, fmt.Errorf("invalid gateway port %q", port)
		}
	}
	return out, nil
}

func defaultState(root string) (string, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return "", err
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", nil // no cache dir: run without a hash cache
	}
	sum := sha256.Sum256([]byte(abs))
	dir = filepath.Join(dir, "fastfilesrv")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", nil
	}
	return filepath.Join(dir, hex.EncodeToString(sum[:8])+".state"), nil
}

// run serves until ctx is done (SIGINT/SIGTERM in main), then says goodbye.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	o, err := parse(args, stderr)
	if err != nil {
		return err
	}
	log, err := cli.Logger(stderr, o.logFormat, o.logLevel)
	if err != nil {
		return err
	}
	key, err := auth.LoadKey(o.keyFile)
	if err != nil {
		return err
	}
	if werr := auth.CheckKeyFileMode(o.keyFile); werr != nil {
		log.Warn("key file readable by others", "err", werr)
	}
	if len(o.gatewayKeys) == 0 {
		return errors.New("no -gateway-public-key: the server must know the gateway's public key (on the gateway: httpgw pubkey < its private key file)")
	}
	if o.privateKey == "" {
		return fmt.Errorf("no -private-key: the server's X25519 key pair is its identity to the gateway; %s", keys.GenkeyHint)
	}
	priv, warn, err := keys.LoadPrivate(o.privateKey)
	if err != nil {
		return fmt.Errorf("-private-key: %w", err)
	}
	if warn != nil {
		log.Warn("private key file readable by others", "err", warn)
	}
	static, err := auth.StaticKeyOf(priv)
	if err != nil {
		return err
	}
	if st, err := os.Stat(o.root); err != nil {
		return fmt.Errorf("root: %w", err)
	} else if !st.IsDir() {
		return fmt.Errorf("root %s: not a directory", o.root)
	}
	state := o.state
	if state == "" {
		if state, err = defaultState(o.root); err != nil {
			return err
		}
	}
	cat, err := catalog.Open(o.root, catalog.Options{StateFile: state, Logger: log})
	if err != nil {
		return err
	}
	defer cat.Close()

	ctx, stop := context.WithCancel(ctx)
	defer stop()
	uc, err := transport.Listen(ctx, o.listen)
	if err != nil {
		return err
	}
	defer uc.Close()
	srv, err := fileserver.New(fileserver.Config{Gateways: o.gateways, Name: o.name, Conn: uc, Key: key, Static: static, GatewayKeys: o.gatewayKeys, Catalog: cat, Logger: log, MaxReads: o.maxReads})
	if err != nil {
		return err
	}
	log.Info("fastfilesrv starting", "name", o.name, "public_key", static.Public().String(), "gateway_public_keys", publicKeyList(o.gatewayKeys).String(), "root", o.root, "gateways", strings.Join(o.gateways, ","), "udp", uc.LocalAddr().String(), "state", state, "version", cli.VersionString("fastfilesrv"))
	catDone := make(chan error, 1)
	go func() { catDone <- cat.Run(ctx) }()
	err = srv.Run(ctx)
	stop()
	if cerr := <-catDone; err == nil && cerr != nil && !errors.Is(cerr, context.Canceled) {
		err = cerr
	}
	log.Info("bye")
	return err
}
