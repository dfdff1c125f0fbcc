package deploy

import (
	"slices"
	"strings"
	"testing"
)

var units = []string{"httpgw.service", "fastfilesrv@.service"}

// Every unit runs as a dynamic user in a read-only, private view of the
// system, with no capabilities and only the system calls and address
// families a network service needs.
func TestUnitsHardened(t *testing.T) {
	want := map[string]string{
		"DynamicUser":             "yes",
		"ProtectSystem":           "strict",
		"PrivateTmp":              "yes",
		"PrivateDevices":          "yes",
		"NoNewPrivileges":         "yes",
		"PrivateMounts":           "yes",
		"CapabilityBoundingSet":   "",
		"AmbientCapabilities":     "",
		"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
		"RestrictNamespaces":      "yes",
		"RestrictSUIDSGID":        "yes",
		"MemoryDenyWriteExecute":  "yes",
		"ProtectKernelTunables":   "yes",
		"ProtectKernelModules":    "yes",
		"ProtectControlGroups":    "yes",
		"SystemCallArchitectures": "native",
		"UMask":                   "0077",
	}
	for _, name := range units {
		u, err := ReadUnit(name)
		if err != nil {
			t.Fatal(err)
		}
		s := u["Service"]
		for k, v := range want {
			if vs, ok := s[k]; !ok || vs[len(vs)-1] != v {
				t.Errorf("%s: %s=%q, want %q", name, k, vs, v)
			}
		}
		if ph := u.Value("Service", "ProtectHome"); ph != "yes" && ph != "tmpfs" && ph != "read-only" {
			t.Errorf("%s: ProtectHome=%q", name, ph)
		}
		if f := s["SystemCallFilter"]; !slices.Contains(f, "@system-service") {
			t.Errorf("%s: SystemCallFilter=%q lacks @system-service", name, f)
		}
		// The key reaches the service as a credential: the file stays
		// root-only, and the service is not started until it exists.
		priv := strings.TrimSuffix(strings.TrimSuffix(name, ".service"), "@") + ".key" // httpgw.key, fastfilesrv.key
		for _, key := range []string{"fschunk.key", priv} {
			if cred := key + ":/etc/fschunk/" + key; !slices.Contains(s["LoadCredential"], cred) {
				t.Errorf("%s: LoadCredential=%q lacks %s", name, s["LoadCredential"], cred)
			}
			if !slices.Contains(u["Unit"]["ConditionPathExists"], "/etc/fschunk/"+key) {
				t.Errorf("%s: starts without %s", name, key)
			}
		}
		exec := u.Value("Service", "ExecStart")
		if !strings.Contains(exec, "-key-file ${CREDENTIALS_DIRECTORY}/fschunk.key") || !strings.Contains(exec, "-private-key ${CREDENTIALS_DIRECTORY}/"+priv) {
			t.Errorf("%s: ExecStart does not read the keys from the credentials", name)
		}
		if u.Value("Install", "WantedBy") != "multi-user.target" {
			t.Errorf("%s: not wanted by multi-user.target", name)
		}
	}
}

// The file server sees its folder read-only and keeps its hash cache in a
// directory systemd makes for it.
func TestFileServerUnitPaths(t *testing.T) {
	u, err := ReadUnit("fastfilesrv@.service")
	if err != nil {
		t.Fatal(err)
	}
	if got := u.Value("Service", "BindReadOnlyPaths"); got != "%f" {
		t.Errorf("BindReadOnlyPaths=%q, want the instance's folder %%f", got)
	}
	if got := u.Value("Service", "CacheDirectory"); got != "fastfilesrv" {
		t.Errorf("CacheDirectory=%q", got)
	}
	args, err := CommandLine(u.Value("Service", "ExecStart"), map[string]string{
		"%f": "/srv/my files", "%i": "srv-my\\x20files", "%C": "/var/cache", "CREDENTIALS_DIRECTORY": "/run/credentials/x"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/usr/bin/fastfilesrv", "-root", "/srv/my files", "-key-file", "/run/credentials/x/fschunk.key", "-private-key", "/run/credentials/x/fastfilesrv.key", "-state", "/var/cache/fastfilesrv/srv-my\\x20files.state"}
	if !slices.Equal(args, want) {
		t.Errorf("ExecStart gives %q, want %q", args, want)
	}
}

func TestParseUnit(t *testing.T) {
	u, err := ParseUnit([]byte("# c\n[A]\nK=1\n; c\nK = 2\nL=x \\\n  y\n[B]\nK=\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(u["A"]["K"], []string{"1", "2"}) || u.Value("A", "L") != "x  y" || u.Value("B", "K") != "" || u.Value("B", "X") != "" {
		t.Errorf("%v", u)
	}
	for _, bad := range []string{"K=1\n", "[A]\nnot a setting\n"} {
		if _, err := ParseUnit([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestCommandLine(t *testing.T) {
	got, err := CommandLine(`/bin/x -a "%f" 100%% ${V}/k`, map[string]string{"%f": "a b", "V": "/v"})
	if err != nil || !slices.Equal(got, []string{"/bin/x", "-a", "a b", "100%", "/v/k"}) {
		t.Errorf("%q %v", got, err)
	}
	for _, bad := range []string{`x %q`, `x ${NOPE}`, `x ${V`, `x "a`} {
		if _, err := CommandLine(bad, map[string]string{"V": ""}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestReadEnv(t *testing.T) {
	for _, name := range []string{"httpgw.env", "fastfilesrv.env"} {
		vars, err := ReadEnv(name)
		if err != nil {
			t.Fatal(err)
		}
		prefix := strings.ToUpper(strings.TrimSuffix(name, ".env")) + "_"
		if len(vars) < 3 {
			t.Errorf("%s: %d settings", name, len(vars))
		}
		for _, v := range vars {
			if !strings.HasPrefix(v.Name, prefix) {
				t.Errorf("%s: %s is not %s*", name, v.Name, prefix)
			}
		}
	}
}
