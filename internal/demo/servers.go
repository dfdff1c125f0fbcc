package demo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"

	"github.com/fastfile/fschunk/internal/auth"
	"github.com/fastfile/fschunk/internal/catalog"
	"github.com/fastfile/fschunk/internal/fileserver"
	"github.com/fastfile/fschunk/internal/transport"
)

// ServerConfig describes one embedded FastFileSrv.
type ServerConfig struct {
	Gateways []string // the gateways' UDP addresses, host:port each
	Root     string
	StateDir string // hash cache directory ("" = none)
	Key      *auth.Key
	// Static is the server's key pair, GatewayKeys the public keys of
	// the gateways it accepts (see fileserver.Config).
	Static      auth.StaticKey
	GatewayKeys []auth.PublicKey
	Logger      *slog.Logger
	// Wrap, if set, wraps the server's socket (tests inject faults here).
	Wrap func(net.PacketConn) net.PacketConn
	// Catalog tunes the server's catalog (Logger and StateFile are set
	// from the fields above).
	Catalog catalog.Options
	// Conn, if set, is the server's socket instead of a fresh loopback
	// one (a simulated network's); Stop closes it.
	Conn net.PacketConn
	// NoWatch turns the catalog's fsnotify watch off (tests in virtual
	// time).
	NoWatch bool
}

// Server is a running embedded FastFileSrv.
type Server struct {
	Name    string         // sent in heartbeats: the pool's ServerInfo.Name
	Key     auth.PublicKey // the server's identity (ServerConfig.Static's public key)
	Catalog *catalog.Catalog
	Srv     *fileserver.Server
	Conn    net.PacketConn
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	errs    []error
	mu      sync.Mutex
}

// StartServer starts a FastFileSrv in this process: a catalog of Root and
// the protocol side on a fresh loopback UDP socket.
func StartServer(ctx context.Context, cfg ServerConfig, name string) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	opt := cfg.Catalog
	opt.Logger = cfg.Logger
	opt.NoWatch = opt.NoWatch || cfg.NoWatch
	if cfg.StateDir != "" {
		opt.StateFile = filepath.Join(cfg.StateDir, name+".state")
	}
	cat, err := catalog.Open(cfg.Root, opt)
	if err != nil {
		return nil, fmt.Errorf("server %s: %w", name, err)
	}
	conn := cfg.Conn
	if conn == nil {
		uc, err := transport.Listen(ctx, "127.0.0.1:0")
		if err != nil {
			cat.Close()
			return nil, fmt.Errorf("server %s: %w", name, err)
		}
		conn = uc
	}
	if cfg.Wrap != nil {
		conn = cfg.Wrap(conn)
	}
	srv, err := fileserver.New(fileserver.Config{Gateways: cfg.Gateways, Name: name, Conn: conn, Key: cfg.Key, Static: cfg.Static, GatewayKeys: cfg.GatewayKeys, Catalog: cat, Logger: cfg.Logger})
	if err != nil {
		conn.Close()
		cat.Close()
		return nil, fmt.Errorf("server %s: %w", name, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &Server{Name: name, Key: cfg.Static.Public(), Catalog: cat, Srv: srv, Conn: conn, cancel: cancel}
	s.wg.Go(func() { s.record(cat.Run(ctx)) })
	s.wg.Go(func() { s.record(srv.Run(ctx)) })
	return s, nil
}

func (s *Server) record(err error) {
	if err != nil && !errors.Is(err, context.Canceled) {
		s.mu.Lock()
		s.errs = append(s.errs, err)
		s.mu.Unlock()
	}
}

// Stop says goodbye to the gateways and stops the server.
func (s *Server) Stop() error {
	s.cancel()
	s.wg.Wait()
	s.Conn.Close()
	s.Catalog.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	return errors.Join(s.errs...)
}
