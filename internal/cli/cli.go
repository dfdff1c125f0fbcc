// Package cli holds what both commands share on their command line:
// flags that may also come from the environment, logger set-up and the
// version string. Behaviour lives elsewhere.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
)

// EnvName is the environment variable for a flag: PREFIX_NAME with dashes
// as underscores, e.g. HTTPGW_KEY_FILE for -key-file.
func EnvName(prefix, flagName string) string {
	return prefix + "_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// ErrVersion is returned by Parse when -version (AddVersionFlag) is set:
// the run function returns it as is, and Main prints the version.
var ErrVersion = errors.New("version requested")

// versionFlag is -version's value, a type of its own so that Parse finds
// it and no other flag named so.
type versionFlag bool

func (v *versionFlag) String() string   { return fmt.Sprint(bool(*v)) }
func (v *versionFlag) IsBoolFlag() bool { return true }
func (v *versionFlag) Set(s string) error {
	b, err := strconv.ParseBool(s)
	*v = versionFlag(b)
	return err
}

// AddVersionFlag adds -version ("print the version and exit") to fs.
func AddVersionFlag(fs *flag.FlagSet) {
	fs.Var(new(versionFlag), "version", "print the version and exit")
}

// Parse parses args, then fills every flag not given on the command line
// from its environment variable. Errors are one line, naming the flag or
// variable. If -version is set it returns ErrVersion, before checking
// anything else.
func Parse(fs *flag.FlagSet, prefix string, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		name := EnvName(prefix, f.Name)
		if v, ok := os.LookupEnv(name); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("invalid value %q for %s: %v", v, name, err))
			}
		}
	})
	if f := fs.Lookup("version"); f != nil {
		if v, ok := f.Value.(*versionFlag); ok && bool(*v) {
			return ErrVersion
		}
	}
	return errors.Join(errs...)
}

// Logger makes the process logger from -log-format and -log-level.
func Logger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("invalid -log-level %q (want debug, info, warn or error)", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		// slog writes a time.Duration as integer nanoseconds in JSON, a
		// unit no reader guesses: write it as text ("1.5s"), as the text
		// format does.
		opts.ReplaceAttr = func(_ []string, a slog.Attr) slog.Attr {
			if a.Value.Kind() == slog.KindDuration {
				a.Value = slog.StringValue(a.Value.Duration().String())
			}
			return a
		}
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("invalid -log-format %q (want text or json)", format)
}

// Usage returns a flag.Usage that prints a synopsis, examples and every
// flag with its default and environment variable.
func Usage(fs *flag.FlagSet, prefix, synopsis string, examples ...string) func() {
	return func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: %s\n       %[2]s genkey [-out FILE]   # a new private key (as wg genkey)\n       %[2]s pubkey < FILE        # its public key (as wg pubkey)\n\nFlags (each also from the environment variable shown):\n", synopsis, fs.Name())
		fs.VisitAll(func(f *flag.Flag) {
			name, usage := flag.UnquoteUsage(f)
			fmt.Fprintf(w, "  -%s %s\n    \t%s", f.Name, name, strings.ReplaceAll(usage, "\n", "\n    \t"))
			if f.DefValue != "" && f.DefValue != "false" {
				fmt.Fprintf(w, " (default %q)", f.DefValue)
			}
			fmt.Fprintf(w, " [$%s]\n", EnvName(prefix, f.Name))
		})
		if len(examples) > 0 {
			fmt.Fprintf(w, "\nExamples:\n")
			for _, e := range examples {
				fmt.Fprintf(w, "  %s\n", e)
			}
		}
	}
}

// RunFunc is a command's body: it parses args (returning ErrVersion for
// -version) and runs until ctx is done.
type RunFunc func(ctx context.Context, args []string, stderr io.Writer) error

// Main runs a command with a context cancelled on SIGINT or SIGTERM, and
// exits: 0 on success, -h or -version, 2 with a one-line error. The first
// argument may be a key subcommand (genkey, pubkey); otherwise run runs.
func Main(prog string, run RunFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// The first signal starts a graceful stop (ctx); a second one
		// means "now", as users expect of Ctrl-C.
		<-ctx.Done()
		again := make(chan os.Signal, 1)
		signal.Notify(again, os.Interrupt, syscall.SIGTERM)
		stop()
		<-again
		fmt.Fprintf(os.Stderr, "%s: second signal: exiting without finishing the shutdown\n", prog)
		os.Exit(1)
	}()
	err := dispatch(ctx, prog, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, run)
	stop()
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "%s: %v\n", prog, err)
		os.Exit(2)
	}
}

// dispatch is Main without the process: a key subcommand, or run, whose
// ErrVersion it answers with the version on stdout.
func dispatch(ctx context.Context, prog string, args []string, stdin io.Reader, stdout, stderr io.Writer, run RunFunc) error {
	if len(args) > 0 {
		if cmd, ok := keyCommands[args[0]]; ok {
			return cmd(prog, args[1:], stdin, stdout, stderr)
		}
	}
	err := run(ctx, args, stderr)
	if errors.Is(err, ErrVersion) {
		_, err = fmt.Fprintln(stdout, VersionString(prog))
	}
	return err
}
