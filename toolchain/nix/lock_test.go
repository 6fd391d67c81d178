package nix

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

const (
	goodNar = "sha256-qPDvMBmNC/Ca3wuNsL3ZDvRufBInwqLO+JdH/Br8yJs="
	goodRev = "0123456789abcdef0123456789abcdef01234567"
)

// lockWith is a flake.lock whose root has one input "in" locked as given.
func lockWith(locked string) string {
	return `{"nodes":{"in":{"locked":` + locked + `,"original":{"type":"path","path":"x"}},"root":{"inputs":{"in":"in"}}},"root":"root","version":7}`
}

// TestParseLockRefuses: every input kind that would make kettle read this
// machine, bypass the address policy or use something unlocked is refused
// with a reason, before anything runs; no reason echoes the lock's hash.
func TestParseLockRefuses(t *testing.T) {
	for _, tc := range []struct{ name, lock, reason string }{
		{"absolute path", lockWith(`{"type":"path","path":"/etc/shadow","narHash":"` + goodNar + `"}`), "outside the project"},
		{"absolute host dir", lockWith(`{"type":"path","path":"/var/lib/kettle/secrets","narHash":"` + goodNar + `"}`), "outside the project"},
		{"dotdot", lockWith(`{"type":"path","path":"../other-job","narHash":"` + goodNar + `"}`), "leaves the project"},
		{"dotdot inside", lockWith(`{"type":"path","path":"./a/../../x","narHash":"` + goodNar + `"}`), "leaves the project"},
		{"project itself", lockWith(`{"type":"path","path":".","narHash":"` + goodNar + `"}`), "leaves the project"},
		{"empty path", lockWith(`{"type":"path","path":"","narHash":"` + goodNar + `"}`), "outside the project"},
		{"git file", lockWith(`{"type":"git","url":"file:///root/repo","rev":"` + goodRev + `","narHash":"` + goodNar + `"}`), "scheme"},
		{"git+file", lockWith(`{"type":"git","url":"git+file:///root/repo","rev":"` + goodRev + `","narHash":"` + goodNar + `"}`), "scheme"},
		{"git ssh", lockWith(`{"type":"git","url":"ssh://git@example.com/x","rev":"` + goodRev + `","narHash":"` + goodNar + `"}`), "scheme"},
		{"git no scheme", lockWith(`{"type":"git","url":"/root/repo","rev":"` + goodRev + `","narHash":"` + goodNar + `"}`), "no scheme"},
		{"git submodules", lockWith(`{"type":"git","url":"https://example.com/x","rev":"` + goodRev + `","submodules":true,"narHash":"` + goodNar + `"}`), "submodules"},
		{"git unlocked", lockWith(`{"type":"git","url":"https://example.com/x","narHash":"` + goodNar + `"}`), "rev"},
		{"tarball file", lockWith(`{"type":"tarball","url":"file:///etc/x.tar.gz","narHash":"` + goodNar + `"}`), "scheme"},
		{"tarball http", lockWith(`{"type":"tarball","url":"http://127.0.0.1:19300/internal.tar.gz","narHash":"` + goodNar + `"}`), "scheme"},
		{"file file", lockWith(`{"type":"file","url":"file:///etc/passwd","narHash":"` + goodNar + `"}`), "scheme"},
		{"url newline", lockWith(`{"type":"tarball","url":"https://example.com/x.tar.gz\nallowed-uris = http://","narHash":"` + goodNar + `"}`), "control character"},
		{"url hash", lockWith(`{"type":"tarball","url":"https://example.com/x.tar.gz#frag","narHash":"` + goodNar + `"}`), "'#'"},
		{"url space", lockWith(`{"type":"git","url":"https://example.com/x y","rev":"` + goodRev + `","narHash":"` + goodNar + `"}`), "space"},
		{"indirect", lockWith(`{"type":"indirect","id":"nixpkgs","narHash":"` + goodNar + `"}`), "indirect"},
		{"mercurial", lockWith(`{"type":"hg","url":"https://example.com/x","narHash":"` + goodNar + `"}`), "not supported"},
		{"no narHash", lockWith(`{"type":"tarball","url":"https://example.com/x.tar.gz"}`), "not locked"},
		{"not locked", `{"nodes":{"in":{"original":{"type":"tarball","url":"https://example.com/x.tar.gz"}},"root":{"inputs":{"in":"in"}}},"root":"root","version":7}`, "not locked"},
		{"md5 narHash", lockWith(`{"type":"tarball","url":"https://example.com/x.tar.gz","narHash":"md5-AAAAAAAAAAAAAAAAAAAAAA=="}`), "SRI"},
		{"github no rev", lockWith(`{"type":"github","owner":"o","repo":"r","narHash":"` + goodNar + `"}`), "rev"},
		{"github host path", lockWith(`{"type":"github","owner":"o","repo":"r","rev":"` + goodRev + `","host":"127.0.0.1/x","narHash":"` + goodNar + `"}`), "host"},
		{"github owner dotdot", lockWith(`{"type":"github","owner":"..","repo":"r","rev":"` + goodRev + `","narHash":"` + goodNar + `"}`), "owner"},
		{"dir escapes", lockWith(`{"type":"github","owner":"o","repo":"r","rev":"` + goodRev + `","dir":"../..","narHash":"` + goodNar + `"}`), "dir"},
		{"unknown attr", lockWith(`{"type":"tarball","url":"https://example.com/x.tar.gz","unpack":false,"narHash":"` + goodNar + `"}`), "attribute"},
		{"object attr", lockWith(`{"type":"tarball","url":{"a":1},"narHash":"` + goodNar + `"}`), "unsupported value"},
		{"follows nowhere", `{"nodes":{"root":{"inputs":{"a":["b","c"]}}},"root":"root","version":7}`, "follows"},
		{"follows cycle", `{"nodes":{"root":{"inputs":{"a":["a"]}}},"root":"root","version":7}`, "follows"},
		{"dangling", `{"nodes":{"root":{"inputs":{"a":"nope"}}},"root":"root","version":7}`, "does not have"},
		{"nested relative path", `{"nodes":{"dep":{"inputs":{"p":"p"},"locked":{"type":"tarball","url":"https://example.com/x.tar.gz","narHash":"` + goodNar + `"}},"p":{"locked":{"type":"path","path":"./p","narHash":"` + goodNar + `"}},"root":{"inputs":{"dep":"dep"}}},"root":"root","version":7}`, "root flake"},
		{"locked root", `{"nodes":{"root":{"locked":{"type":"path","path":"/"}}},"root":"root","version":7}`, "root node"},
		{"no root", `{"nodes":{},"root":"root","version":7}`, "root node"},
		{"version", `{"nodes":{"root":{}},"root":"root","version":99}`, "version"},
		{"not json", `{"nodes":`, "JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseLock([]byte(tc.lock))
			if !errors.Is(err, ErrLock) {
				t.Fatalf("accepted (err %v)", err)
			}
			if !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("reason %q does not say %q", err, tc.reason)
			}
			if strings.Contains(err.Error(), "sha256-") {
				t.Errorf("reason echoes a hash: %q", err)
			}
		})
	}
}

// TestParseLockAccepts: locked remote inputs over https and relative path
// inputs of the root flake; follows that resolve.
func TestParseLockAccepts(t *testing.T) {
	lock := `{"nodes":{
	  "greeting":{"locked":{"type":"path","path":"./greeting","narHash":"` + goodNar + `","lastModified":1}},
	  "gh":{"inputs":{"nixpkgs":["tb"]},"locked":{"type":"github","owner":"NixOS","repo":"nixpkgs","rev":"` + goodRev + `","narHash":"` + goodNar + `","lastModified":1700000000}},
	  "tb":{"flake":false,"locked":{"type":"tarball","url":"https://example.com/x.tar.gz","narHash":"` + goodNar + `"}},
	  "g":{"locked":{"type":"git","url":"https://example.com/r.git","rev":"` + goodRev + `","revCount":3,"narHash":"` + goodNar + `","lastModified":2}},
	  "root":{"inputs":{"greeting":"greeting","gh":"gh","tb":"tb","g":"g","alias":["gh","nixpkgs"]}}},
	  "root":"root","version":7}`
	l, err := ParseLock([]byte(lock))
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Paths) != 1 || l.Paths[0] != (PathInput{Node: "greeting", Path: "greeting", NarHash: goodNar}) {
		t.Errorf("paths %+v", l.Paths)
	}
	if len(l.Remote) != 3 || l.Remote["gh"]["rev"] != goodRev || l.Remote["g"]["revCount"] != int64(3) {
		t.Errorf("remote %+v", l.Remote)
	}
	if want := []string{"https://example.com/r.git", "https://example.com/x.tar.gz", "https://github.com/"}; strings.Join(l.URLs, " ") != strings.Join(want, " ") {
		t.Errorf("urls %q", l.URLs)
	}
	if len(l.Inputs) != 4 {
		t.Errorf("inputs %+v", l.Inputs)
	}
	// The remote attributes go to builtins.fetchTree as JSON, unchanged.
	if _, err := json.Marshal(l.Remote); err != nil {
		t.Error(err)
	}
	// The committed test flake's lock.
	b, err := os.ReadFile("../../testdata/projects/nix-flake/flake.lock")
	if err != nil {
		t.Fatal(err)
	}
	if l, err = ParseLock(b); err != nil || len(l.Paths) != 1 || len(l.Remote) != 0 {
		t.Errorf("nix-flake lock: %v %+v", err, l)
	}
}

// TestScrubLine: the hash Nix computed ("got …") never reaches the log.
func TestScrubLine(t *testing.T) {
	for _, l := range []string{
		"error: NAR hash mismatch in input 'path:/etc/shadow?narHash=sha256-AAAA' (/nix/store/x-source), expected 'sha256-AAAA', got 'sha256-YgxoEEW0GXDnkaDc8LZN5awtn9VsRjuwMgM7wh/XthA='",
		"            got:    sha256-YgxoEEW0GXDnkaDc8LZN5awtn9VsRjuwMgM7wh/XthA=",
		"  got: sha256:0c3071418e6356e614898c84ed064ca95e88551bc0811b534bdf1952ecdae534",
		"  got:    1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0",
	} {
		s := ScrubLine(l)
		if strings.Contains(s, "YgxoEEW0") || strings.Contains(s, "0c30714") || strings.Contains(s, "1b4sb93") || !strings.Contains(s, "<hash withheld>") {
			t.Errorf("scrubbed %q", s)
		}
	}
	if l := "building '/nix/store/abc-x.drv'..."; ScrubLine(l) != l {
		t.Errorf("changed %q", ScrubLine(l))
	}
}

func FuzzParseLock(f *testing.F) {
	f.Add([]byte(lockWith(`{"type":"path","path":"./greeting","narHash":"` + goodNar + `"}`)))
	f.Add([]byte(lockWith(`{"type":"github","owner":"o","repo":"r","rev":"` + goodRev + `","narHash":"` + goodNar + `"}`)))
	f.Add([]byte(`{"nodes":{"root":{"inputs":{"a":["a","b"]}}},"root":"root","version":7}`))
	if b, err := os.ReadFile("../../testdata/projects/nix-flake/flake.lock"); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := ParseLock(data)
		if err != nil {
			if !errors.Is(err, ErrLock) {
				t.Fatalf("error does not wrap ErrLock: %v", err)
			}
			return
		}
		for _, p := range l.Paths {
			if !cleanRelative(p.Path) || !validSRI(p.NarHash) {
				t.Fatalf("accepted path input %+v", p)
			}
		}
		for _, u := range l.URLs {
			if !strings.HasPrefix(strings.ToLower(u), "https://") {
				t.Fatalf("accepted URL %q", u)
			}
		}
		for name, a := range l.Remote {
			if a["type"] == "path" || a["type"] == "indirect" {
				t.Fatalf("remote input %s of type %v", name, a["type"])
			}
		}
	})
}

// TestNixString: a lock value with quotes, backslashes and "${" stays a
// literal in kettle's fetch expression (checked by nix itself, on a dummy
// store).
func TestNixString(t *testing.T) {
	s := `a"b\c${builtins.readFile /etc/passwd}$${x}'' \n` + "\n\ttab"
	q := nixString(s)
	nix, err := exec.LookPath("nix")
	if err != nil {
		t.Skipf("nix not installed; quoted %s", q)
	}
	dir := t.TempDir()
	cmd := exec.Command(nix, "--extra-experimental-features", "nix-command", "eval", "--store", "dummy://", "--raw", "--expr", q)
	cmd.Env = append(os.Environ(), "NIX_CONF_DIR="+dir, "HOME="+dir, "XDG_CACHE_HOME="+dir)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nix eval %s: %v", q, err)
	}
	if string(out) != s {
		t.Errorf("nix reads %q as %q", q, out)
	}
}
