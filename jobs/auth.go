package jobs

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// The job store holds every user's sources, nonces and results, and its
// state decides what a worker builds: nobody may reach it without
// credentials. The embedded server accepts only nkey users: one created
// afresh by each process for its in-process connection, and, with a
// listener, the member key stored in the data dir that workers and other
// front ends present.
const (
	authDirName    = "auth"
	memberSeedName = "member.nk"
	maxCredsFile   = 64 << 10
)

// ClientAuth is how Connect authenticates to NATS and checks the server.
// User, password or token may also come as the URL's user info
// (nats://user:pass@host, nats://token@host).
type ClientAuth struct {
	// CredsFile holds one of: a NATS .creds file (user JWT and seed), an
	// nkey user seed (SU…, the form kettle generates), a "user:password"
	// line, or a token line. Lines starting with '#' are comments.
	CredsFile string
	// CAFile is a PEM bundle of roots that verify the server's TLS
	// certificate; setting it requires TLS.
	CAFile string
	// CertFile and KeyFile are a client certificate for mutual TLS.
	CertFile, KeyFile string
}

// WithClientAuth sets the credentials and TLS settings of Connect.
func WithClientAuth(a ClientAuth) Option { return func(c *config) { c.clientAuth = a } }

// WithListenTLS makes the listener of OpenEmbedded (WithListen) speak TLS
// only, with this PEM certificate and key.
func WithListenTLS(certFile, keyFile string) Option {
	return func(c *config) { c.listenCert, c.listenKey = certFile, keyFile }
}

// natsOptions turns a into nats.go options; log receives warnings (a
// credentials file others can read).
func (a ClientAuth) natsOptions(log *slog.Logger) ([]nats.Option, error) {
	var opts []nats.Option
	if a.CredsFile != "" {
		data, loose, err := readSecretFile(a.CredsFile)
		if err != nil {
			return nil, fmt.Errorf("nats credentials: %w", err)
		}
		if loose {
			log.Warn("NATS credentials file is readable by other users; chmod 600 it", "file", a.CredsFile)
		}
		o, err := parseCreds(data)
		if err != nil {
			return nil, fmt.Errorf("nats credentials %s: %w", a.CredsFile, err)
		}
		opts = append(opts, o)
	}
	if (a.CertFile == "") != (a.KeyFile == "") {
		return nil, errors.New("nats TLS: a client certificate needs both a certificate and a key file")
	}
	if a.CAFile != "" {
		opts = append(opts, nats.RootCAs(a.CAFile))
	}
	if a.CertFile != "" {
		opts = append(opts, nats.ClientCert(a.CertFile, a.KeyFile))
	}
	return opts, nil
}

// parseCreds reads a credentials file's content (see ClientAuth.CredsFile).
func parseCreds(data []byte) (nats.Option, error) {
	if bytes.Contains(data, []byte("-----BEGIN NATS USER JWT-----")) {
		jwt, err := nkeys.ParseDecoratedJWT(data)
		if err != nil || jwt == "" {
			return nil, errors.New("no user JWT in the .creds file")
		}
		kp, err := nkeys.ParseDecoratedUserNKey(data)
		if err != nil {
			return nil, fmt.Errorf("no user seed in the .creds file: %w", err)
		}
		seed, err := kp.Seed()
		if err != nil {
			return nil, err
		}
		return nats.UserJWTAndSeed(jwt, string(seed)), nil
	}
	var line string
	for _, l := range strings.Split(string(data), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if line != "" {
			return nil, errors.New("more than one credentials line (want one of: nkey seed, user:password, token)")
		}
		line = l
	}
	switch {
	case line == "":
		return nil, errors.New("empty credentials file")
	case strings.HasPrefix(line, "SU"):
		kp, err := nkeys.FromSeed([]byte(line))
		if err != nil {
			return nil, errors.New("invalid nkey user seed")
		}
		pub, err := kp.PublicKey()
		if err != nil || !nkeys.IsValidPublicUserKey(pub) {
			return nil, errors.New("invalid nkey user seed")
		}
		return nats.Nkey(pub, kp.Sign), nil
	case strings.HasPrefix(line, "S") && len(line) == 58 && !strings.ContainsAny(line, ": "):
		return nil, errors.New("not an nkey user seed (want SU…)")
	case strings.Contains(line, ":"):
		user, pass, _ := strings.Cut(line, ":")
		if user == "" || pass == "" {
			return nil, errors.New("want user:password with both parts non-empty")
		}
		return nats.UserInfo(user, pass), nil
	case strings.ContainsAny(line, " \t"):
		return nil, errors.New("a token may not contain spaces")
	}
	return nats.Token(line), nil
}

// readSecretFile reads a small credentials file without following a final
// symlink; loose reports whether group or others may read it.
func readSecretFile(p string) (data []byte, loose bool, err error) {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, false, err
	}
	if !fi.Mode().IsRegular() {
		return nil, false, fmt.Errorf("%s is not a regular file", p)
	}
	data, err = io.ReadAll(io.LimitReader(f, maxCredsFile+1))
	if err != nil {
		return nil, false, err
	}
	if len(data) > maxCredsFile {
		return nil, false, fmt.Errorf("%s is larger than %d bytes", p, maxCredsFile)
	}
	return data, fi.Mode().Perm()&0o077 != 0, nil
}

// memberKey returns the public key of the data dir's member seed, creating
// the seed (mode 0600, in a 0700 directory) on first use. A seed that
// others could have read, or that another user owns, is refused rather than
// trusted: it may have leaked.
func memberKey(dataDir string) (pub, seedPath string, err error) {
	dir := filepath.Join(dataDir, authDirName)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", "", fmt.Errorf("jobs: credentials dir: %w", err)
	}
	if err := checkPrivate(dir, true); err != nil {
		return "", "", err
	}
	seedPath = filepath.Join(dir, memberSeedName)
	if _, err := os.Lstat(seedPath); errors.Is(err, os.ErrNotExist) {
		if err := writeMemberSeed(dir, seedPath); err != nil {
			return "", "", err
		}
	}
	if err := checkPrivate(seedPath, false); err != nil {
		return "", "", err
	}
	data, _, err := readSecretFile(seedPath)
	if err != nil {
		return "", "", fmt.Errorf("jobs: read NATS credentials: %w", err)
	}
	kp, err := nkeys.ParseDecoratedUserNKey(data)
	if err != nil {
		return "", "", fmt.Errorf("jobs: %s: not an nkey user seed (remove it to generate new credentials): %w", seedPath, err)
	}
	p, err := kp.PublicKey()
	if err != nil {
		return "", "", err
	}
	return p, seedPath, nil
}

func writeMemberSeed(dir, seedPath string) error {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return fmt.Errorf("jobs: create NATS credentials: %w", err)
	}
	seed, err := kp.Seed()
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".member-*") // mode 0600
	if err != nil {
		return fmt.Errorf("jobs: write NATS credentials: %w", err)
	}
	defer os.Remove(f.Name())
	content := "# kettle job store credentials (nkey user seed). Keep secret.\n" +
		"# kettle worker --nats URL --nats-creds THIS_FILE; kettle serve --nats URL --nats-creds THIS_FILE\n" +
		string(seed) + "\n"
	_, err = f.WriteString(content)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		// Link, not rename: never replace a seed that appeared meanwhile.
		err = os.Link(f.Name(), seedPath)
	}
	if err != nil {
		return fmt.Errorf("jobs: write NATS credentials: %w", err)
	}
	return nil
}

// checkPrivate refuses p unless it is this user's own directory (dir) or
// regular file, not a symlink, with no access for group or others.
func checkPrivate(p string, dir bool) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return fmt.Errorf("jobs: %w", err)
	}
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		return fmt.Errorf("jobs: %s is a symlink; refusing it for NATS credentials", p)
	case dir && !fi.IsDir(), !dir && !fi.Mode().IsRegular():
		return fmt.Errorf("jobs: %s has the wrong file type for NATS credentials", p)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("jobs: %s is owned by uid %d, not this user; refusing it for NATS credentials", p, st.Uid)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		what := "remove it to generate new credentials, and give the new file to every worker"
		if dir {
			what = "chmod 700 it"
		}
		return fmt.Errorf("jobs: %s is accessible to other users (mode %04o), so the NATS credentials may have leaked; %s",
			p, fi.Mode().Perm(), what)
	}
	return nil
}

// embeddedAuth configures sopts to accept only nkey users: a fresh key for
// this process's in-process connection and, with a listener, the member
// key. It returns the in-process connection's option and the member seed
// path ("" without a listener).
func embeddedAuth(sopts *server.Options, dataDir string, listen bool) (nats.Option, string, error) {
	self, err := nkeys.CreateUser()
	if err != nil {
		return nil, "", fmt.Errorf("jobs: create NATS credentials: %w", err)
	}
	selfPub, err := self.PublicKey()
	if err != nil {
		return nil, "", err
	}
	sopts.Nkeys = []*server.NkeyUser{{Nkey: selfPub}}
	seedPath := ""
	if listen {
		memberPub, p, err := memberKey(dataDir)
		if err != nil {
			return nil, "", err
		}
		seedPath = p
		sopts.Nkeys = append(sopts.Nkeys, &server.NkeyUser{Nkey: memberPub})
	}
	return nats.Nkey(selfPub, self.Sign), seedPath, nil
}

// inProcessTLS adds to the in-process connection's options the TLS the
// server then demands. The connection is a pipe to this very server, so the
// only check that means anything is that the peer shows our own
// certificate: it is pinned.
func inProcessTLS(auth nats.Option, server *tls.Config) nats.Option {
	var own [][]byte
	for _, c := range server.Certificates {
		if len(c.Certificate) > 0 {
			own = append(own, c.Certificate[0])
		}
	}
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // replaced by the pin below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			for _, o := range own {
				if len(raw) > 0 && bytes.Equal(raw[0], o) {
					return nil
				}
			}
			return errors.New("in-process NATS peer is not this server")
		},
	}
	return func(o *nats.Options) error {
		if err := auth(o); err != nil {
			return err
		}
		return nats.Secure(tc)(o)
	}
}

// RedactURL drops the password or token of a NATS URL (or a
// comma-separated list of them) for logs and error messages.
func RedactURL(raw string) string {
	parts := strings.Split(raw, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil {
			if strings.Contains(p, "@") {
				parts[i] = "(unparsable URL)"
			}
			continue
		}
		if u.User != nil {
			if _, hasPass := u.User.Password(); hasPass {
				u.User = url.UserPassword(u.User.Username(), "REDACTED")
			} else {
				u.User = url.User("REDACTED")
			}
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}
