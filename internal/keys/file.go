package keys

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
)

// MaxSecretFile bounds what ReadSecretFile reads, so that a wrong path (a
// log, a device) fails fast instead of being slurped.
const MaxSecretFile = 4096

// GenkeyHint tells an operator how to make a private key file; errors
// about a missing one carry it.
const GenkeyHint = "create one with: httpgw genkey -out FILE (or fastfilesrv genkey, or wg genkey)"

// ErrFileMode is returned by CheckFileMode for a secret file that users
// other than its owner may read.
var ErrFileMode = errors.New("key file readable by group or others")

// ReadSecretFile reads a small secret file: a private key here, the
// pre-shared key in package auth. Errors name the file and say what is
// wrong (missing, a directory, too large) without quoting its contents.
func ReadSecretFile(path string) ([]byte, error) {
	if path == "" {
		return nil, errors.New("no key file given")
	}
	f, err := os.Open(path)
	if err != nil {
		// An *os.PathError: "open X: no such file or directory".
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.IsDir() {
		return nil, fmt.Errorf("%s is a directory, not a key file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxSecretFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxSecretFile {
		return nil, fmt.Errorf("%s is larger than %d bytes, not a key file", path, MaxSecretFile)
	}
	return b, nil
}

// CheckFileMode reports (ErrFileMode) a secret file that users other than
// its owner may read: whoever reads it can impersonate its owner. It is a
// warning, not a refusal (a key handed out by configuration management
// may legitimately sit in a group-readable file). A file it cannot stat
// is left to the reader to report; on systems without Unix permissions it
// reports nothing.
func CheckFileMode(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return nil
	}
	return CheckMode(path, st.Mode())
}

// CheckMode is CheckFileMode for a file already stat'ed (an open file, a
// redirected stdout); name is for the message.
func CheckMode(name string, m os.FileMode) error {
	if p := m.Perm(); runtime.GOOS != "windows" && p&0o077 != 0 {
		return fmt.Errorf("%w: %s has mode %04o; restrict it with: chmod 600 %s", ErrFileMode, name, p, name)
	}
	return nil
}

// LoadPrivate reads a private key file: the text form, as `genkey -out`
// or `wg genkey > FILE` writes it. err is a clear reason when there is no
// key (missing file, a directory, wrong length, not base64); warn is
// non-nil (ErrFileMode) when the key loaded but group or others may read
// the file, for the caller to log.
func LoadPrivate(path string) (k Private, warn, err error) {
	b, err := ReadSecretFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || path == "" {
			return Private{}, nil, fmt.Errorf("%w: %w; %s", ErrKey, err, GenkeyHint)
		}
		return Private{}, nil, fmt.Errorf("%w: %w", ErrKey, err)
	}
	k, err = ParsePrivate(string(b))
	if err != nil {
		return Private{}, nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, CheckFileMode(path), nil
}

// WritePrivate writes k's text form and a newline to a new file at path,
// with mode 0600. It refuses to replace an existing file: a private key
// overwritten by mistake is an identity lost.
func WritePrivate(path string, k Private) (err error) {
	if k.IsZero() {
		return fmt.Errorf("%w: write %s: the zero private key", ErrKey, path)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s exists: not overwriting a key file (remove it first if you mean to)", path)
		}
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path) // a half-written key is worse than none
		}
	}()
	_, err = io.WriteString(f, k.Text()+"\n")
	return err
}
