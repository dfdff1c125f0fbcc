package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/fastfile/fschunk/internal/cli"
	"github.com/fastfile/fschunk/internal/keys"
)

// -version is cli's (tested there): here, that it is wired, and answered
// before the missing gateway arguments are.
func TestVersionFlag(t *testing.T) {
	if _, err := parse([]string{"-version"}, io.Discard); !errors.Is(err, cli.ErrVersion) {
		t.Fatalf("parse -version: %v", err)
	}
}

func TestGatewayArgs(t *testing.T) {
	cases := []struct {
		flag string
		args []string
		want []string
		err  string
	}{
		{"", []string{"10.1.1.1", "8888"}, []string{"10.1.1.1:8888"}, ""},
		{"", []string{"gw.example:8888"}, []string{"gw.example:8888"}, ""},
		{"", []string{"::1", "8888"}, []string{"[::1]:8888"}, ""},
		{"a:1,b:2", nil, []string{"a:1", "b:2"}, ""},
		{" a:1 , ,b:2,", nil, []string{"a:1", "b:2"}, ""},
		{"a:1", []string{"b:2"}, []string{"a:1", "b:2"}, ""},
		{"a:1,a:1", nil, nil, "given twice"},
		{"a:1", []string{"a:1"}, nil, "given twice"},
		{"", []string{"a:1", "b:2"}, []string{"a:1", "b:2"}, ""},
		{"", nil, nil, "no gateway given"},
		{"", []string{"nohostport"}, nil, "invalid gateway address"},
		{"", []string{"host", "port"}, nil, "invalid gateway"},
		// The port is wrong, not the host: blame the port.
		{"", []string{"127.0.0.1", "notaport"}, nil, `invalid gateway port "notaport"`},
	}
	for _, c := range cases {
		var fl gatewayList
		fl.Set(c.flag)
		got, err := gatewayArgs(fl, c.args)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q %v: err %v, want %q", c.flag, c.args, err, c.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%q %v = %v, %v; want %v", c.flag, c.args, got, err, c.want)
		}
	}
}

// TestGatewayFlagRepeatable: -gateway may be repeated, each a comma list,
// and the environment variable takes the same comma list.
func TestGatewayFlagRepeatable(t *testing.T) {
	o, err := parse([]string{"-gateway", "gw1:8888", "-gateway", "gw2:8888,gw3:9999", "gw4:1"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"gw1:8888", "gw2:8888", "gw3:9999", "gw4:1"}; !reflect.DeepEqual(o.gateways, want) {
		t.Fatalf("gateways %v, want %v", o.gateways, want)
	}
	t.Setenv("FASTFILESRV_GATEWAY", "e1:1,e2:2")
	o, err = parse(nil, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"e1:1", "e2:2"}; !reflect.DeepEqual(o.gateways, want) {
		t.Fatalf("from the environment: gateways %v, want %v", o.gateways, want)
	}
	if _, err := parse([]string{"-gateway", "a:1", "-gateway", "a:1"}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "given twice") {
		t.Fatalf("a gateway given twice: err %v", err)
	}
}

func TestFlagErrors(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "k")
	os.WriteFile(key, bytes.Repeat([]byte{1}, 32), 0o600)
	file := filepath.Join(dir, "f")
	os.WriteFile(file, nil, 0o600)
	priv, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	privFile := filepath.Join(dir, "srv.key")
	if err := keys.WritePrivate(privFile, priv); err != nil {
		t.Fatal(err)
	}
	gwPub := priv.Public().String() // any valid key will do here
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"127.0.0.1", "8888"}, "head -c 32 /dev/urandom"},
		{[]string{"-key-file", key, "-root", filepath.Join(dir, "missing"), "127.0.0.1", "8888"}, "root"},
		{[]string{"-key-file", key, "-root", file, "127.0.0.1", "8888"}, "not a directory"},
		{[]string{"-key-file", key, "-root", dir, "-state", filepath.Join(dir, "in-root.state"), "127.0.0.1", "8888"}, "state"},
		{[]string{"-key-file", key, "-root", dir, "-listen", "bad::addr", "127.0.0.1", "8888"}, "listen udp"},
		{[]string{"-key-file", key, "-max-reads", "0", "127.0.0.1", "8888"}, "invalid -max-reads"},
		{[]string{"-key-file", key, "-log-level", "loud", "127.0.0.1", "8888"}, "invalid -log-level"},
		{[]string{"-key-file", key}, "no gateway given"},
		// Said once, not "read X: read X: is a directory".
		{[]string{"-key-file", dir, "127.0.0.1", "8888"}, "bad pre-shared key: " + dir + " is a directory, not a key file"},
		{[]string{"-key-file", key, "-gateway-public-key", "", "127.0.0.1", "8888"}, "no -gateway-public-key"},
		{[]string{"-key-file", key, "-gateway-public-key", "nonsense", "127.0.0.1", "8888"}, "bad key"},
		{[]string{"-key-file", key, "-gateway-public-key", gwPub + "," + gwPub, "127.0.0.1", "8888"}, "given twice"},
		{[]string{"-key-file", key, "-private-key", "", "127.0.0.1", "8888"}, "no -private-key"},
		{[]string{"-key-file", key, "-private-key", filepath.Join(dir, "nope"), "127.0.0.1", "8888"}, "genkey"},
	}
	for _, c := range cases {
		args := c.args
		if args[0] == "-key-file" {
			// Valid keys first; a case's own flags come after and win.
			args = append([]string{"-key-file", args[1], "-private-key", privFile, "-gateway-public-key", gwPub}, args[2:]...)
		}
		if c.want == "no -gateway-public-key" {
			args = append([]string{"-key-file", key, "-private-key", privFile}, c.args[4:]...)
		}
		err := run(context.Background(), args, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: err %v, want it to mention %q", c.args, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: not one line: %q", c.args, err)
		}
	}
}

// TestListenHelpDefaultOnce: -h gives -listen's default once (the flag
// package prints it; the text must not repeat it).
func TestListenHelpDefaultOnce(t *testing.T) {
	var stderr bytes.Buffer
	parse([]string{"-h"}, &stderr)
	i := strings.Index(stderr.String(), "-listen")
	if i < 0 {
		t.Fatalf("no -listen in:\n%s", stderr.String())
	}
	line := stderr.String()[i:]
	line = line[:strings.Index(line, "[$")]
	if n := strings.Count(line, "default"); n != 1 {
		t.Fatalf("-listen help mentions its default %d times: %q", n, line)
	}
}
