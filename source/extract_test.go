package source

import (
	"archive/tar"
	"bytes"
	"compress/zlib"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kettle-build/kettle/failure"
)

const evilGitConfig = `[core]
	repositoryformatversion = 0
	filemode = true
	bare = false
	fsmonitor = "touch /tmp/kettle-pwned"
	hooksPath = /tmp
	worktree = /
[include]
	path = /etc/shadow
[remote "origin"]
	url = https://example.com/p.git
	fetch = +refs/heads/*:refs/remotes/origin/*
	uploadpack = touch /tmp/x
[filter "lfs"]
	smudge = touch /tmp/kettle-pwned
[branch "main"]
	remote = origin
	merge = refs/heads/main
`

const saneGitConfig = `[core]
	repositoryformatversion = 0
	filemode = true
	bare = false
[remote "origin"]
	url = https://example.com/p.git
	fetch = +refs/heads/*:refs/remotes/origin/*
[branch "main"]
	remote = origin
	merge = refs/heads/main
`

// aCommit is a loose commit object (of the empty tree) for test .git
// directories: its path under .git and its zlib bytes.
func aCommit() (id, path, body string) {
	return aCommitOf("tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n")
}

func aCommitOf(treeLine string) (id, path, body string) {
	content := treeLine + "author a <a> 0 +0000\ncommitter a <a> 0 +0000\n\nm\n"
	raw := fmt.Sprintf("commit %d\x00%s", len(content), content)
	sum := sha1.Sum([]byte(raw))
	id = hex.EncodeToString(sum[:])
	var b bytes.Buffer
	zw := zlib.NewWriter(&b)
	zw.Write([]byte(raw))
	zw.Close()
	return id, "objects/" + id[:2] + "/" + id[2:], b.String()
}

func TestExtractGood(t *testing.T) {
	commit, objPath, objBody := aCommit()
	zipData := zipOf(t,
		zent{name: "proj/", mode: fs.ModeDir | 0o755},
		zent{name: "proj/run.sh", body: "#!/bin/sh\necho hi\n", mode: 0o755},
		zent{name: "proj/src/main.go", body: "package main\n"},
		zent{name: "proj/link", body: "src/main.go", mode: fs.ModeSymlink | 0o777},
		zent{name: "proj/dangling", body: "nowhere/inside", mode: fs.ModeSymlink | 0o777},
		zent{name: "proj/up", body: "../proj/src", mode: fs.ModeSymlink | 0o777},
		zent{name: "proj/.git/config", body: evilGitConfig},
		zent{name: "proj/.git/HEAD", body: "ref: refs/heads/main\n"},
		zent{name: "proj/.git/refs/heads/main", body: commit + "\n"},
		zent{name: "proj/.git/" + objPath, body: objBody},
		zent{name: "proj/.git/hooks/pre-commit", body: "#!/bin/sh\ntouch /tmp/kettle-pwned\n", mode: 0o755},
		zent{name: "proj/.git/objects/info/alternates", body: "/var/lib/other-job/.git/objects\n"},
		zent{name: "proj/sub/.git", body: "gitdir: /var/lib/other-job/.git\n"},
		zent{name: "proj/sub/x.txt", body: "x"},
	)
	tgzData := tgzOf(t,
		tent{name: "./proj/", typ: tar.TypeDir, mode: 0o755},
		tent{name: "./proj/run.sh", body: "#!/bin/sh\necho hi\n", mode: 0o755},
		tent{name: "./proj/src/main.go", body: "package main\n"},
		tent{name: "./proj/link", typ: tar.TypeSymlink, link: "src/main.go"},
		tent{name: "./proj/dangling", typ: tar.TypeSymlink, link: "nowhere/inside"},
		tent{name: "./proj/up", typ: tar.TypeSymlink, link: "../proj/src"},
		tent{name: "./proj/.git/config", body: evilGitConfig},
		tent{name: "./proj/.git/HEAD", body: "ref: refs/heads/main\n"},
		tent{name: "./proj/.git/refs/heads/main", body: commit + "\n"},
		tent{name: "./proj/.git/" + objPath, body: objBody},
		tent{name: "./proj/.git/hooks/", typ: tar.TypeDir, mode: 0o755},
		tent{name: "./proj/.git/hooks/pre-commit", body: "#!/bin/sh\ntouch /tmp/kettle-pwned\n", mode: 0o755},
		tent{name: "./proj/.git/objects/info/alternates", body: "/var/lib/other-job/.git/objects\n"},
		tent{name: "./proj/sub/.git", body: "gitdir: /var/lib/other-job/.git\n"},
		tent{name: "./proj/sub/x.txt", body: "x"},
	)
	for name, data := range map[string][]byte{"zip": zipData, "tgz": tgzData} {
		t.Run(name, func(t *testing.T) {
			work := t.TempDir()
			archive := filepath.Join(t.TempDir(), "a")
			os.WriteFile(archive, data, 0o600)
			old := syscallUmask(0o077) // exec bits must survive a strict umask
			tree, err := Extract(context.Background(), archive, work, Limits{})
			syscallUmask(old)
			if err != nil {
				t.Fatal(err)
			}
			if tree.Top != "proj" || filepath.Base(tree.Dir) != "proj" || filepath.Dir(filepath.Dir(tree.Dir)) != work {
				t.Errorf("tree = %+v", tree)
			}
			// run.sh, main.go, .git/config, .git/HEAD, the ref, the object, sub/x.txt
			if tree.Files != 7 {
				t.Errorf("Files = %d, want 7", tree.Files)
			}
			// The identity comes from Go code over the tree: HEAD's commit
			// names the empty tree, so the content is dirty.
			if id := tree.Identity; id == nil || !id.Dirty || id.HeadCommit != commit || id.Commit != "" || len(id.Tree) != 40 {
				t.Errorf("identity %+v", id)
			}
			mode := func(p string) fs.FileMode {
				st, err := os.Lstat(filepath.Join(tree.Dir, p))
				if err != nil {
					t.Fatal(err)
				}
				return st.Mode()
			}
			if m := mode("run.sh"); m != 0o755 {
				t.Errorf("run.sh mode %v", m)
			}
			if m := mode("src/main.go"); m != 0o644 {
				t.Errorf("main.go mode %v", m)
			}
			if m := mode("link"); m&fs.ModeSymlink == 0 {
				t.Errorf("link mode %v", m)
			}
			if b, err := os.ReadFile(filepath.Join(tree.Dir, "link")); err != nil || string(b) != "package main\n" {
				t.Errorf("link reads %q, %v", b, err)
			}
			cfg, _ := os.ReadFile(filepath.Join(tree.Dir, ".git", "config"))
			if string(cfg) != saneGitConfig {
				t.Errorf("sanitised config:\n%s", cfg)
			}
			for _, gone := range []string{".git/hooks", ".git/objects/info/alternates", "sub/.git"} {
				if _, err := os.Lstat(filepath.Join(tree.Dir, gone)); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s was materialised", gone)
				}
			}
		})
	}
}

func TestExtractNoTopDir(t *testing.T) {
	archive := filepath.Join(t.TempDir(), "a")
	os.WriteFile(archive, zipOf(t, zent{name: "a/x", body: "1"}, zent{name: "b", body: "2"}), 0o600)
	tree, err := Extract(context.Background(), archive, t.TempDir(), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if tree.Top != "" || tree.Files != 2 {
		t.Errorf("tree = %+v", tree)
	}
	// A single top-level symlink to a directory is not a top directory.
	archive2 := filepath.Join(t.TempDir(), "b")
	os.WriteFile(archive2, tgzOf(t, tent{name: "l", typ: tar.TypeSymlink, link: "."}), 0o600)
	tree, err = Extract(context.Background(), archive2, t.TempDir(), Limits{})
	if err != nil || tree.Top != "" {
		t.Errorf("tree = %+v, %v", tree, err)
	}
}

func TestExtractCanceled(t *testing.T) {
	archive := filepath.Join(t.TempDir(), "a")
	os.WriteFile(archive, tgzOf(t, tent{name: "a", body: "x"}), 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	work := t.TempDir()
	_, err := Extract(ctx, archive, work, Limits{})
	if !errors.Is(err, context.Canceled) || failure.KindOf(err) != failure.Canceled {
		t.Fatalf("err = %v", err)
	}
	if ents, _ := os.ReadDir(work); len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
}

func TestSanitizeGitConfig(t *testing.T) {
	cases := []struct{ in, want string }{
		{evilGitConfig, saneGitConfig},
		{"[core]\n\tbare = true\n", ""},
		{"[remote \"o\\\"x\"]\n\turl = https://a\n", ""},
		{"[remote.origin]\n\turl = https://a\n", "[remote \"origin\"]\n\turl = https://a\n"},
		{"[remote \"o\"]\n\turl = ext::sh -c touch\n\turl = -x\n", ""},
		{"[core]\n\trepositoryformatversion = 1\n[extensions]\n\tobjectformat = sha256\n\tworktreeconfig = true\n",
			"[core]\n\trepositoryformatversion = 1\n[extensions]\n\tobjectformat = sha256\n"},
		{"garbage\n[core\nfsmonitor=x\n", ""},
		{"[core] fsmonitor = evil\n", ""},
	}
	for _, c := range cases {
		if got := string(SanitizeGitConfig([]byte(c.in))); got != c.want {
			t.Errorf("SanitizeGitConfig(%q) =\n%q\nwant\n%q", c.in, got, c.want)
		}
	}
}

func TestCleanName(t *testing.T) {
	ok := map[string]string{"a": "a", "./a/b/": "a/b", "a//b": "a/b", "./": "", "a/./b": "a/b", "ü/ñ": "ü/ñ"}
	for in, want := range ok {
		if got, err := cleanName(in); err != nil || got != want {
			t.Errorf("cleanName(%q) = %q, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "/a", "../a", "a/../b", "a\\b", "a\x00b", "a\x7f", "\xff", strings.Repeat("a", 256), strings.Repeat("a/", 2049)} {
		if _, err := cleanName(bad); !errors.Is(err, ErrUnsafePath) {
			t.Errorf("cleanName(%q) = %v", bad, err)
		}
	}
}

// sanitizedLine is the only shape SanitizeGitConfig may emit.
var sanitizedLine = regexp.MustCompile(`^(\[(core|extensions)\]|\[(remote|branch) "[^"\\\x00-\x1f\x7f]+"\]|\t[a-z0-9-]+ = [^"\\#;\x00-\x1f\x7f]*)$`)

func checkSanitized(t *testing.T, in []byte) []byte {
	out := SanitizeGitConfig(in)
	for _, l := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
		if l != "" && !sanitizedLine.MatchString(l) {
			t.Fatalf("sanitised config has line %q", l)
		}
	}
	if again := SanitizeGitConfig(out); !bytes.Equal(again, out) {
		t.Fatalf("not idempotent:\n%q\n%q", out, again)
	}
	return out
}

func FuzzSanitizeGitConfig(f *testing.F) {
	f.Add([]byte(evilGitConfig))
	f.Add([]byte("[remote \"a b\"]\n\turl = x\\\n[core]\n\tfsmonitor = y\n"))
	f.Fuzz(func(t *testing.T, in []byte) { checkSanitized(t, in) })
}

// TestSanitizedConfigAsGitSeesIt asks git itself which keys survive.
func TestSanitizedConfigAsGitSeesIt(t *testing.T) {
	out := checkSanitized(t, []byte(evilGitConfig+"[remote \"x\"]\n\turl = a\\\n[core]\n\tfsmonitor = touch /tmp/p\n[include]path=/etc/passwd\n"))
	f := filepath.Join(t.TempDir(), "config")
	os.WriteFile(f, out, 0o644)
	cmd := exec.Command("git", "config", "--file", f, "--list")
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null")
	list, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	allowed := regexp.MustCompile(`^(core\.(repositoryformatversion|filemode|bare|logallrefupdates|ignorecase|precomposeunicode|symlinks)|extensions\.objectformat|remote\.[^.]+\.(url|fetch)|branch\.[^.]+\.(remote|merge))=`)
	for _, l := range strings.Split(strings.TrimSpace(string(list)), "\n") {
		if !allowed.MatchString(l) {
			t.Errorf("git reads %q from the sanitised config", l)
		}
	}
}
