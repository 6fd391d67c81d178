package nix

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// TestNARHashGreeting: the committed test flake's path input hashes to the
// narHash Nix wrote into its flake.lock.
func TestNARHashGreeting(t *testing.T) {
	root, err := os.OpenRoot("../../testdata/projects/nix-flake")
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	got, err := NARHash(root, "greeting")
	if err != nil {
		t.Fatal(err)
	}
	if got != goodNar {
		t.Errorf("NARHash %s, want %s", got, goodNar)
	}
	if again, _ := NARHash(root, "./greeting/"); again != got {
		t.Errorf("./greeting/ hashes to %s", again)
	}
}

// makeTree writes a tree with every node kind a NAR has.
func makeTree(t *testing.T, dir string) {
	t.Helper()
	for _, f := range []struct {
		name, data string
		mode       os.FileMode
	}{
		{"a/plain.txt", "hello\n", 0o644},
		{"a/exec.sh", "#!/bin/sh\necho hi\n", 0o755},
		{"a/empty", "", 0o644},
		{"b/c/d/deep", strings.Repeat("x", 1001), 0o600},
		{"Z-upper-sorts-first", "z", 0o644},
	} {
		p := filepath.Join(dir, f.name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(f.data), f.mode); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(filepath.Join(dir, "emptydir"), 0o755)
	os.Symlink("plain.txt", filepath.Join(dir, "a", "link"))
	os.Symlink("/etc/shadow", filepath.Join(dir, "a", "abs-link")) // serialised, never followed
}

// TestNARHashMatchesNix: for a tree with files, executables, empty files and
// directories and symlinks (one pointing out of the tree), NARHash equals
// `nix hash path` (nix is run on a temporary directory of the test only).
func TestNARHashMatchesNix(t *testing.T) {
	nix, err := exec.LookPath("nix")
	if err != nil {
		t.Skip("nix not installed: NARHash compared with the committed narHash only")
	}
	base := t.TempDir()
	dir := filepath.Join(base, "tree")
	makeTree(t, dir)
	root, err := os.OpenRoot(base)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	got, err := NARHash(root, "tree")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(nix, "--extra-experimental-features", "nix-command", "hash", "path", dir)
	cmd.Env = append(os.Environ(), "NIX_CONF_DIR="+base, "HOME="+base)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nix hash path: %v", err)
	}
	if want := strings.TrimSpace(string(out)); got != want {
		t.Errorf("NARHash %s, nix hash path %s", got, want)
	}
}

// TestNARHashRefuses: the input itself or a parent being a symlink, a path
// leaving the root, a hard link, a fifo.
func TestNARHashRefuses(t *testing.T) {
	base := t.TempDir()
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o644)
	os.MkdirAll(filepath.Join(base, "real", "sub"), 0o755)
	os.WriteFile(filepath.Join(base, "real", "sub", "f"), []byte("f"), 0o644)
	os.Symlink("real", filepath.Join(base, "linkdir"))
	os.Symlink(outside, filepath.Join(base, "out"))
	os.MkdirAll(filepath.Join(base, "hl"), 0o755)
	os.WriteFile(filepath.Join(base, "hl-src"), []byte("x"), 0o644)
	if err := os.Link(filepath.Join(base, "hl-src"), filepath.Join(base, "hl", "x")); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(base, "fifo"), 0o755)
	if err := mkfifo(filepath.Join(base, "fifo", "p")); err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(base)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	for _, rel := range []string{"linkdir", "linkdir/sub", "out", "../x", "/etc", "hl", "fifo", "missing"} {
		if _, err := NARHash(root, rel); !errors.Is(err, ErrNAR) {
			t.Errorf("%s: err %v", rel, err)
		}
	}
	if _, err := NARHash(root, "real/sub"); err != nil {
		t.Errorf("real/sub: %v", err)
	}
}

// narEntry is a decoded NAR node, by path.
type narEntry struct {
	kind, data string
	exec       bool
}

// decodeNAR is an independent NAR reader for the tests.
func decodeNAR(b []byte) (map[string]narEntry, error) {
	r := bytes.NewReader(b)
	str := func() (string, error) {
		var l [8]byte
		if _, err := r.Read(l[:]); err != nil {
			return "", err
		}
		n := binary.LittleEndian.Uint64(l[:])
		if n > uint64(r.Len()) {
			return "", errors.New("short")
		}
		s := make([]byte, n+uint64(pad(int64(n))))
		if _, err := r.Read(s); err != nil && n > 0 {
			return "", err
		}
		for _, c := range s[n:] {
			if c != 0 {
				return "", errors.New("padding")
			}
		}
		return string(s[:n]), nil
	}
	expect := func(want ...string) error {
		for _, w := range want {
			s, err := str()
			if err != nil || s != w {
				return fmt.Errorf("want %q, got %q (%v)", w, s, err)
			}
		}
		return nil
	}
	out := map[string]narEntry{}
	var node func(p string) error
	node = func(p string) error {
		if err := expect("(", "type"); err != nil {
			return err
		}
		kind, err := str()
		if err != nil {
			return err
		}
		switch kind {
		case "regular":
			e := narEntry{kind: kind}
			s, _ := str()
			if s == "executable" {
				if err := expect(""); err != nil {
					return err
				}
				e.exec = true
				s, _ = str()
			}
			if s != "contents" {
				return errors.New("no contents")
			}
			if e.data, err = str(); err != nil {
				return err
			}
			out[p] = e
		case "symlink":
			if err := expect("target"); err != nil {
				return err
			}
			target, err := str()
			if err != nil {
				return err
			}
			out[p] = narEntry{kind: kind, data: target}
		case "directory":
			out[p] = narEntry{kind: kind}
			prev := ""
			for {
				s, err := str()
				if err != nil {
					return err
				}
				if s == ")" {
					return nil
				}
				if s != "entry" {
					return fmt.Errorf("want entry, got %q", s)
				}
				if err := expect("(", "name"); err != nil {
					return err
				}
				name, err := str()
				if err != nil || name <= prev {
					return fmt.Errorf("entry %q out of order", name)
				}
				prev = name
				if err := expect("node"); err != nil {
					return err
				}
				if err := node(p + "/" + name); err != nil {
					return err
				}
				if err := expect(")"); err != nil {
					return err
				}
			}
		default:
			return fmt.Errorf("type %q", kind)
		}
		return expect(")")
	}
	if err := expect("nix-archive-1"); err != nil {
		return nil, err
	}
	if err := node(""); err != nil {
		return nil, err
	}
	if r.Len() != 0 {
		return nil, errors.New("trailing bytes")
	}
	return out, nil
}

// readTree describes a tree as decodeNAR does.
func readTree(t *testing.T, dir string) map[string]narEntry {
	out := map[string]narEntry{}
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel := strings.TrimPrefix(p, dir)
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			out[rel] = narEntry{kind: "symlink", data: target}
		case fi.IsDir():
			out[rel] = narEntry{kind: "directory"}
		default:
			b, _ := os.ReadFile(p)
			out[rel] = narEntry{kind: "regular", data: string(b), exec: fi.Mode()&0o100 != 0}
		}
		return nil
	})
	return out
}

func sameTree(a, b map[string]narEntry) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestNARRoundTrip(t *testing.T) {
	base := t.TempDir()
	makeTree(t, filepath.Join(base, "tree"))
	root, _ := os.OpenRoot(base)
	defer root.Close()
	var buf bytes.Buffer
	if err := writeNAR(&buf, root, "tree"); err != nil {
		t.Fatal(err)
	}
	got, err := decodeNAR(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if want := readTree(t, filepath.Join(base, "tree")); !sameTree(got, want) {
		t.Errorf("decoded %+v\nwant %+v", got, want)
	}
}

// FuzzNAR builds a tree from the input (names, contents, modes, symlinks),
// serialises it and checks that an independent reader gets the same tree
// back.
func FuzzNAR(f *testing.F) {
	f.Add([]byte("a\x00hello\x00b/c\x01x\x00l\x02target"))
	f.Add([]byte("exec\x03#!/bin/sh\x00dir/\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		base := t.TempDir()
		dir := filepath.Join(base, "t")
		os.Mkdir(dir, 0o755)
		recs := bytes.Split(data, []byte{0})
		if len(recs) > 40 {
			recs = recs[:40]
		}
		for _, rec := range recs {
			name, content, kind := string(rec), "", byte(0)
			if i := bytes.IndexAny(rec, "\x01\x02\x03"); i >= 0 {
				name, content, kind = string(rec[:i]), string(rec[i+1:]), rec[i]
			}
			name = filepath.Clean("/" + name)[1:]
			if name == "" || strings.ContainsAny(name, "\x00") || len(name) > 200 {
				continue
			}
			p := filepath.Join(dir, name)
			if os.MkdirAll(filepath.Dir(p), 0o755) != nil {
				continue
			}
			switch kind {
			case 2:
				os.Symlink(content, p)
			case 3:
				os.WriteFile(p, []byte(content), 0o755)
			default:
				if strings.HasSuffix(string(rec), "/") {
					os.MkdirAll(p, 0o755)
				} else {
					os.WriteFile(p, []byte(content), 0o644)
				}
			}
		}
		root, err := os.OpenRoot(base)
		if err != nil {
			t.Fatal(err)
		}
		defer root.Close()
		var buf bytes.Buffer
		if err := writeNAR(&buf, root, "t"); err != nil {
			return // e.g. a name the file system refused half-way
		}
		got, err := decodeNAR(buf.Bytes())
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if want := readTree(t, dir); !sameTree(got, want) {
			keys := func(m map[string]narEntry) []string {
				var k []string
				for x := range m {
					k = append(k, x)
				}
				sort.Strings(k)
				return k
			}
			t.Fatalf("round trip differs: %q vs %q", keys(got), keys(want))
		}
	})
}
