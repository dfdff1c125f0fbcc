package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"regexp"
	"testing"

	"github.com/fastfile/fschunk/deploy"
)

// envNames are the environment variables httpgw reads, as -h lists them.
func envNames(t *testing.T) map[string]bool {
	var help bytes.Buffer
	if _, err := parse([]string{"-h"}, &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	names := map[string]bool{}
	for _, m := range regexp.MustCompile(`\[\$([A-Z0-9_]+)\]`).FindAllStringSubmatch(help.String(), -1) {
		names[m[1]] = true
	}
	if len(names) < 10 {
		t.Fatalf("-h lists %d variables:\n%s", len(names), help.String())
	}
	return names
}

// The shipped unit and environment file name only flags httpgw has, with
// values it accepts: renaming a flag breaks this test, not a server.
func TestDeployUnitMatchesFlags(t *testing.T) {
	u, err := deploy.ReadUnit("httpgw.service")
	if err != nil {
		t.Fatal(err)
	}
	args, err := deploy.CommandLine(u.Value("Service", "ExecStart"), map[string]string{"CREDENTIALS_DIRECTORY": "/run/credentials/httpgw.service"})
	if err != nil {
		t.Fatal(err)
	}
	if args[0] != "/usr/bin/httpgw" {
		t.Errorf("ExecStart runs %s, the package installs /usr/bin/httpgw", args[0])
	}
	if got := u.Value("Service", "EnvironmentFile"); got != "/etc/fschunk/httpgw.env" {
		t.Errorf("EnvironmentFile=%s", got)
	}
	names := envNames(t)
	vars, err := deploy.ReadEnv("httpgw.env")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vars {
		if !names[v.Name] {
			t.Errorf("httpgw.env sets %s, which is no flag's variable", v.Name)
		}
		t.Setenv(v.Name, v.Value) // examples too: each must be a valid value
	}
	o, err := parse(args[1:], io.Discard)
	if err != nil {
		t.Fatalf("ExecStart %q with httpgw.env: %v", args, err)
	}
	if o.keyFile != "/run/credentials/httpgw.service/fschunk.key" {
		t.Errorf("key file %q, want the credential", o.keyFile)
	}
}
