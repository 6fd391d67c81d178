package jobs

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kettle-build/kettle/events"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
)

func connectCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// rawConnect speaks the NATS protocol by hand: read INFO, send CONNECT
// (with the given JSON) and PING, and return the server's next line.
func rawConnect(t *testing.T, addr, connectJSON string) (info, reply string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	info, err = r.ReadString('\n')
	if err != nil {
		t.Fatalf("read INFO: %v", err)
	}
	if _, err := c.Write([]byte("CONNECT " + connectJSON + "\r\nPING\r\nSUB kettle.> 1\r\n")); err != nil {
		t.Fatal(err)
	}
	reply, _ = r.ReadString('\n')
	return info, strings.TrimSpace(reply)
}

// TestEmbeddedListenerRefusesAnonymous: on the wire, the embedded store's
// listener refuses every client without the member credentials — what the
// nats-job-store-forgery attacker (rtforge) did: connect anonymously, open
// the KV bucket and the object store.
func TestEmbeddedListenerRefusesAnonymous(t *testing.T) {
	s := openTest(t, t.TempDir(), WithListen("127.0.0.1:0"))
	ctx := connectCtx(t)
	u, err := url.Parse(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	addr := u.Host

	info, reply := rawConnect(t, addr, `{"verbose":false,"pedantic":false,"lang":"raw","version":"0"}`)
	if !strings.Contains(info, `"auth_required":true`) {
		t.Errorf("INFO does not require auth: %s", info)
	}
	if !strings.HasPrefix(reply, "-ERR") || !strings.Contains(reply, "Authorization Violation") {
		t.Fatalf("raw CONNECT without auth answered %q, want -ERR 'Authorization Violation'", reply)
	}
	for _, guess := range []string{`{"user":"kettle","pass":"kettle"}`, `{"auth_token":"kettle"}`, `{"nkey":"UAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","sig":"AAAA"}`} {
		if _, reply := rawConnect(t, addr, guess); !strings.HasPrefix(reply, "-ERR") {
			t.Errorf("raw CONNECT %s answered %q", guess, reply)
		}
	}

	// nats.go without credentials, as rtforge did.
	if nc, err := nats.Connect(s.URL(), nats.Timeout(3*time.Second), nats.MaxReconnects(0)); err == nil {
		js, _ := jetstream.New(nc)
		_, kerr := js.KeyValue(ctx, jobsBucket)
		nc.Close()
		t.Fatalf("anonymous client connected (KV open: %v)", kerr)
	} else if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("anonymous client: %v, want an authorization error", err)
	}
	// A different nkey (wrong credentials) is refused too.
	kp, _ := nkeys.CreateUser()
	seed, _ := kp.Seed()
	wrong := filepath.Join(t.TempDir(), "wrong.nk")
	os.WriteFile(wrong, append(seed, '\n'), 0o600)
	if _, err := Connect(ctx, s.URL(), WithClientAuth(ClientAuth{CredsFile: wrong})); err == nil || !strings.Contains(err.Error(), "Authorization Violation") {
		t.Fatalf("wrong nkey: %v", err)
	}
	// The member credentials work: the KV bucket and object store open.
	c, err := Connect(ctx, s.URL(), WithClientAuth(ClientAuth{CredsFile: s.CredsFile()}))
	if err != nil {
		t.Fatalf("with the generated credentials: %v", err)
	}
	defer c.Close()
	j := submitArchive(t, c, "src")
	if got, err := s.Get(ctx, j.ID); err != nil || got.ID != j.ID {
		t.Fatalf("job submitted by the member not seen in process: %v", err)
	}
}

// TestMemberCredsFile: the credentials are created 0600 in a 0700
// directory, stay the same across restarts, and are refused once others
// could read them or when they are a symlink.
func TestMemberCredsFile(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, WithListen("127.0.0.1:0"))
	p := s.CredsFile()
	if p != filepath.Join(dir, authDirName, memberSeedName) {
		t.Fatalf("CredsFile %q", p)
	}
	first, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{p: 0o600, filepath.Dir(p): 0o700} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %04o", path, fi.Mode().Perm(), want)
		}
	}
	s.Close()

	s2 := openTest(t, dir, WithListen("127.0.0.1:0"))
	again, _ := os.ReadFile(s2.CredsFile())
	if string(again) != string(first) {
		t.Fatal("credentials changed across a restart")
	}
	c, err := Connect(connectCtx(t), s2.URL(), WithClientAuth(ClientAuth{CredsFile: p}))
	if err != nil {
		t.Fatalf("credentials of the first start no longer work: %v", err)
	}
	c.Close()
	s2.Close()

	// Without a listener no credentials are needed or created.
	if s3 := openTest(t, t.TempDir()); s3.CredsFile() != "" {
		t.Errorf("CredsFile without a listener: %q", s3.CredsFile())
	}

	os.Chmod(p, 0o644)
	if _, err := OpenEmbedded(connectCtx(t), dir, WithListen("127.0.0.1:0")); err == nil || !strings.Contains(err.Error(), "accessible to other users") {
		t.Fatalf("world-readable seed: %v", err)
	}
	os.Chmod(p, 0o600)
	os.Chmod(filepath.Dir(p), 0o755)
	if _, err := OpenEmbedded(connectCtx(t), dir, WithListen("127.0.0.1:0")); err == nil || !strings.Contains(err.Error(), "accessible to other users") {
		t.Fatalf("open credentials dir: %v", err)
	}
	os.Chmod(filepath.Dir(p), 0o700)
	// A symlink planted in place of the seed (pointing at a seed the
	// planter knows) is refused.
	other := filepath.Join(t.TempDir(), "planted.nk")
	kp, _ := nkeys.CreateUser()
	seed, _ := kp.Seed()
	os.WriteFile(other, seed, 0o600)
	os.Remove(p)
	os.Symlink(other, p)
	if _, err := OpenEmbedded(connectCtx(t), dir, WithListen("127.0.0.1:0")); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Fatalf("symlinked seed: %v", err)
	}
	os.Remove(p)
	os.WriteFile(p, []byte("garbage\n"), 0o600)
	if _, err := OpenEmbedded(connectCtx(t), dir, WithListen("127.0.0.1:0")); err == nil || !strings.Contains(err.Error(), "not an nkey user seed") {
		t.Fatalf("garbage seed: %v", err)
	}
}

// TestParseCreds: every accepted form of a credentials file, and the
// refusals.
func TestParseCreds(t *testing.T) {
	kp, _ := nkeys.CreateUser()
	seed, _ := kp.Seed()
	acct, _ := nkeys.CreateAccount()
	aseed, _ := acct.Seed()
	for _, tc := range []struct {
		name, in, err string
	}{
		{"nkey seed", string(seed) + "\n", ""},
		{"generated form with comments", "# kettle\n# more\n" + string(seed) + "\n", ""},
		{"user:password", "worker:s3cret:with:colons\n", ""},
		{"token", "  tok3n  \n", ""},
		{"empty", "\n# only a comment\n", "empty"},
		{"two lines", "a:b\nc:d\n", "more than one"},
		{"no password", "user:\n", "both parts"},
		{"no user", ":pass\n", "both parts"},
		{"bad seed", "SUAAAA\n", "invalid nkey"},
		{"account seed", string(aseed) + "\n", "not an nkey user seed"},
		{"token with space", "a b\n", "spaces"},
		{"creds without seed", "-----BEGIN NATS USER JWT-----\neyJhbGciOi\n------END NATS USER JWT------\n", "seed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseCreds([]byte(tc.in))
			if tc.err == "" && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("err %v, want %q", err, tc.err)
			}
		})
	}
}

func FuzzParseCreds(f *testing.F) {
	kp, _ := nkeys.CreateUser()
	seed, _ := kp.Seed()
	for _, s := range []string{string(seed), "u:p", "tok", "# c\n" + string(seed), "-----BEGIN NATS USER JWT-----\nx\n------END NATS USER JWT------\n", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := parseCreds(b)
		if (o == nil) == (err == nil) {
			t.Fatalf("option %v with error %v", o != nil, err)
		}
	})
}

// TestConnectUserPasswordAndToken: Connect against a separately run NATS
// server with user/password users accepts a user:password file and URL
// user info, and refuses a wrong password; a token server accepts a token
// file.
func TestConnectUserPasswordAndToken(t *testing.T) {
	ctx := connectCtx(t)
	ns := runServer(t, &server.Options{Users: []*server.User{{Username: "kettle", Password: "pw-0123456789"}}})
	good := filepath.Join(t.TempDir(), "creds")
	os.WriteFile(good, []byte("kettle:pw-0123456789\n"), 0o600)
	s, err := Connect(ctx, ns.ClientURL(), WithClientAuth(ClientAuth{CredsFile: good}))
	if err != nil {
		t.Fatalf("user:password file: %v", err)
	}
	s.Close()
	u, _ := url.Parse(ns.ClientURL())
	u.User = url.UserPassword("kettle", "pw-0123456789")
	if s, err = Connect(ctx, u.String()); err != nil {
		t.Fatalf("URL user info: %v", err)
	}
	s.Close()
	u.User = url.UserPassword("kettle", "wrong")
	_, err = Connect(ctx, u.String())
	if err == nil || !strings.Contains(err.Error(), "Authorization Violation") || strings.Contains(err.Error(), "wrong") {
		t.Fatalf("wrong password: %v (the error must not show the password)", err)
	}
	if _, err = Connect(ctx, u.String(), WithClientAuth(ClientAuth{CredsFile: good})); err == nil || !strings.Contains(err.Error(), "both in the URL") {
		t.Fatalf("URL and file: %v", err)
	}
	if _, err := Connect(ctx, ns.ClientURL()); err == nil {
		t.Fatal("anonymous client accepted by a user/password server")
	}

	tns := runServer(t, &server.Options{Authorization: "tok-0123456789"})
	tok := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tok, []byte("tok-0123456789\n"), 0o644) // warned about, still used
	if s, err = Connect(ctx, tns.ClientURL(), WithClientAuth(ClientAuth{CredsFile: tok})); err != nil {
		t.Fatalf("token file: %v", err)
	}
	s.Close()
}

// TestConnectTLS: an embedded listener with TLS accepts a client that
// trusts its CA and presents the member credentials; a client without the
// CA fails the handshake, and one without credentials is still refused.
func TestConnectTLS(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key := testCerts(t, dir)
	s := openTest(t, t.TempDir(), WithListen("127.0.0.1:0"), WithListenTLS(cert, key))
	ctx := connectCtx(t)
	url := strings.Replace(s.URL(), "nats://", "tls://", 1)
	c, err := Connect(ctx, url, WithClientAuth(ClientAuth{CredsFile: s.CredsFile(), CAFile: ca, CertFile: cert, KeyFile: key}))
	if err != nil {
		t.Fatalf("TLS with CA and credentials: %v", err)
	}
	c.Close()
	if _, err := Connect(ctx, url, WithClientAuth(ClientAuth{CredsFile: s.CredsFile()})); err == nil {
		t.Fatal("a client that does not trust the CA connected")
	}
	if _, err := Connect(ctx, url, WithClientAuth(ClientAuth{CAFile: ca})); err == nil || !strings.Contains(err.Error(), "Authorization") {
		t.Fatalf("TLS without credentials: %v", err)
	}
	if _, err := Connect(ctx, url, WithClientAuth(ClientAuth{CAFile: ca, CertFile: cert})); err == nil || !strings.Contains(err.Error(), "both") {
		t.Fatalf("certificate without key: %v", err)
	}
	if _, err := OpenEmbedded(ctx, t.TempDir(), WithListenTLS(cert, key)); err == nil {
		t.Fatal("listener TLS without a listener accepted")
	}
}

// runServer runs a standalone JetStream NATS server (what a clustered
// deployment points --nats at) with the given auth options.
func runServer(t *testing.T, o *server.Options) *server.Server {
	t.Helper()
	o.Host, o.Port = "127.0.0.1", server.RANDOM_PORT
	o.JetStream, o.StoreDir, o.NoLog, o.NoSigs = true, t.TempDir(), true, true
	ns, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server did not start")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}

// testCerts writes a CA and a server/client certificate for 127.0.0.1.
func testCerts(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kettle test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	caFile, certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return caFile, certFile, keyFile
}

// TestIDsNeverReachSubjects: ids that are not canonical UUIDs — NATS
// wildcards, subject separators, another job's id in upper case — never
// reach a subject or key: every entry point answers ErrNotFound.
func TestIDsNeverReachSubjects(t *testing.T) {
	s := openTest(t, t.TempDir())
	startWorker(t, s, "w1", &fakeBuilder{dir: t.TempDir()})
	j := submitArchive(t, s, "src")
	collect(t, s, j.ID, 0)
	ctx := connectCtx(t)
	for _, id := range []string{">", "*", "kettle.events.>", j.ID + ".x", j.ID[:35] + "*", strings.ToUpper(j.ID), "../" + j.ID, ""} {
		if _, err := s.Get(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%q): %v", id, err)
		}
		if err := s.Watch(ctx, id, 0, func(int, events.Event) error { return nil }); !errors.Is(err, ErrNotFound) {
			t.Errorf("Watch(%q): %v", id, err)
		}
		if _, _, err := s.Result(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Result(%q): %v", id, err)
		}
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":               "nats://127.0.0.1:4222",
		"nats://user:s3cret@h:4222":           "nats://user:REDACTED@h:4222",
		"nats://t0ken@h:4222":                 "nats://REDACTED@h:4222",
		"tls://a:b@h1:4222,tls://c:d@h2:4222": "tls://a:REDACTED@h1:4222,tls://c:REDACTED@h2:4222",
		"nats://us%zzer:pw@h":                 "(unparsable URL)",
		"":                                    "",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestConnectWarnsAnonymousServer: joining a NATS server that accepts
// anonymous clients logs a warning.
func TestConnectWarnsAnonymousServer(t *testing.T) {
	buf := &lockedWriter{w: &strings.Builder{}}
	log := slog.New(slog.NewTextHandler(buf, nil))
	open := runServer(t, &server.Options{})
	s, err := Connect(connectCtx(t), open.ClientURL(), WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if !strings.Contains(buf.String(), "accepts clients without credentials") {
		t.Fatalf("no warning:\n%s", buf.String())
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  *strings.Builder
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.w.String() }
