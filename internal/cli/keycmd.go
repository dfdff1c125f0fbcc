package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/fastfile/fschunk/internal/keys"
)

// keyCommands are the subcommands both programs have, as `wg genkey` and
// `wg pubkey`. They are words before any flag, so they cannot be taken
// for a flag's value; fastfilesrv's positional GATEWAY_HOST cannot be
// "genkey" or "pubkey" (name it HOST:PORT or with -gateway).
var keyCommands = map[string]func(prog string, args []string, stdin io.Reader, stdout, stderr io.Writer) error{
	"genkey": genkey,
	"pubkey": pubkey,
}

// genkey writes a new private key: to stdout (as `wg genkey`, so that
// `genkey | pubkey` works), or with -out to a new file of mode 0600,
// printing the public key on stdout.
func genkey(prog string, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(prog+" genkey", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "write the private key to this new `file` (mode 0600, never overwritten) and print the public key; default: print the private key")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s genkey [-out FILE]\n\n", prog)
		fs.PrintDefaults()
		fmt.Fprintf(fs.Output(), "\nExamples:\n  %[1]s genkey -out /etc/fschunk/%[1]s.key      # prints the public key\n  (umask 077; %[1]s genkey > %[1]s.key) && %[1]s pubkey < %[1]s.key\n", prog)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("genkey: unexpected argument %q (see %s genkey -h)", fs.Arg(0), prog)
	}
	k, err := keys.Generate()
	if err != nil {
		return err
	}
	if *out != "" {
		if err := keys.WritePrivate(*out, k); err != nil {
			return fmt.Errorf("genkey: %w", err)
		}
		_, err = fmt.Fprintln(stdout, k.Public())
		return err
	}
	// As wg does: a key redirected into a file others can read is
	// written, with a warning (the shell made the file, not us).
	if f, ok := stdout.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
			if werr := keys.CheckMode("the output file", st.Mode()); werr != nil {
				fmt.Fprintf(stderr, "%s genkey: warning: %v\n", prog, werr)
			}
		}
	}
	_, err = fmt.Fprintln(stdout, k.Text())
	return err
}

// pubkey reads a private key on stdin and prints its public key.
func pubkey(prog string, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(prog+" pubkey", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %[1]s pubkey < PRIVATE_KEY_FILE\n\nReads a private key (as genkey or wg genkey writes it) on stdin and prints its public key.\n", prog)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("pubkey: unexpected argument %q: the private key comes on stdin (%s pubkey < FILE)", fs.Arg(0), prog)
	}
	b, err := io.ReadAll(io.LimitReader(stdin, keys.MaxSecretFile+1))
	if err != nil {
		return fmt.Errorf("pubkey: read stdin: %w", err)
	}
	if len(b) > keys.MaxSecretFile {
		return errors.New("pubkey: stdin is larger than a key file")
	}
	k, err := keys.ParsePrivate(string(b))
	if err != nil {
		return fmt.Errorf("pubkey: stdin: %w", err)
	}
	_, err = fmt.Fprintln(stdout, k.Public())
	return err
}
