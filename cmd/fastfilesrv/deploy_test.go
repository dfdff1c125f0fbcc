package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"regexp"
	"slices"
	"testing"

	"github.com/fastfile/fschunk/deploy"
)

// The shipped unit and environment file name only flags fastfilesrv has,
// with values it accepts: renaming a flag breaks this test, not a server.
func TestDeployUnitMatchesFlags(t *testing.T) {
	u, err := deploy.ReadUnit("fastfilesrv@.service")
	if err != nil {
		t.Fatal(err)
	}
	args, err := deploy.CommandLine(u.Value("Service", "ExecStart"), map[string]string{
		"%f": "/srv/files", "%i": "srv-files", "%C": "/var/cache",
		"CREDENTIALS_DIRECTORY": "/run/credentials/fastfilesrv@srv-files.service"})
	if err != nil {
		t.Fatal(err)
	}
	if args[0] != "/usr/bin/fastfilesrv" {
		t.Errorf("ExecStart runs %s, the package installs /usr/bin/fastfilesrv", args[0])
	}
	if got := u["Service"]["EnvironmentFile"]; !slices.Equal(got, []string{"/etc/fschunk/fastfilesrv.env", "-/etc/fschunk/fastfilesrv@%i.env"}) {
		t.Errorf("EnvironmentFile=%q", got)
	}

	var help bytes.Buffer
	if _, err := parse([]string{"-h"}, &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	names := map[string]bool{}
	for _, m := range regexp.MustCompile(`\[\$([A-Z0-9_]+)\]`).FindAllStringSubmatch(help.String(), -1) {
		names[m[1]] = true
	}
	vars, err := deploy.ReadEnv("fastfilesrv.env")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vars {
		if !names[v.Name] {
			t.Errorf("fastfilesrv.env sets %s, which is no flag's variable (-h lists %d)", v.Name, len(names))
		}
		t.Setenv(v.Name, v.Value) // examples too: each must be a valid value
	}
	o, err := parse(args[1:], io.Discard)
	if err != nil {
		t.Fatalf("ExecStart %q with fastfilesrv.env: %v", args, err)
	}
	if o.root != "/srv/files" || o.keyFile != "/run/credentials/fastfilesrv@srv-files.service/fschunk.key" || o.state != "/var/cache/fastfilesrv/srv-files.state" {
		t.Errorf("root %q, key %q, state %q", o.root, o.keyFile, o.state)
	}
	if !slices.Equal(o.gateways, []string{"gw.example.net:8888"}) {
		t.Errorf("gateways %q, want the example's", o.gateways)
	}
}
