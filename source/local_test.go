package source

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// usedLocalCopy reports whether a clone was made by copyLocal: git's
// clone leaves a pack and packed-refs, its fetch (of a commit) FETCH_HEAD;
// the copy none of them.
func usedLocalCopy(t *testing.T, dir string) bool {
	t.Helper()
	packs, _ := filepath.Glob(filepath.Join(dir, ".git", "objects", "pack", "*.pack"))
	for _, n := range []string{"packed-refs", "FETCH_HEAD"} {
		if _, err := os.Lstat(filepath.Join(dir, ".git", n)); err == nil {
			return false
		}
	}
	return len(packs) == 0
}

// gitClone is the bare `git clone --depth=1 --no-local` of url at ref that
// copyLocal stands in for, with the same hermetic config.
func gitClone(t *testing.T, url, ref string) string {
	t.Helper()
	root := t.TempDir()
	g := &gitCmd{root: root, home: t.TempDir(), local: true, maxEntries: DefaultMaxEntries}
	r, err := parseRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "c")
	if _, _, err := g.fetch(t.Context(), url, r, dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// snapshot is a checkout as a builder sees it: each path's type, mode and
// content (a symlink's target), .git left out.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == ".git" {
			return filepath.SkipDir
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			out[rel] = "link " + l
		case fi.IsDir():
			out[rel] = "dir"
		default:
			b, _ := os.ReadFile(p)
			out[rel] = fmt.Sprintf("file %v %q", fi.Mode().Perm(), b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestLocalCopyIsGitClone: for the refs a client sends, a file:// or path
// repository copied by copyLocal checks out exactly what `git clone
// --depth=1 --no-local` checks out — modes, symlinks, a submodule's empty
// directory, .gitattributes conversions (eol=crlf, ident), nested trees,
// a branch with a slash — from loose objects and from a delta-compressed
// pack, bare and non-bare; and git itself reads the copy's .git (HEAD,
// branch, shallow boundary, a clean index, origin).
func TestLocalCopyIsGitClone(t *testing.T) {
	r := makeRepo(t, "proj", func(work string) {
		os.WriteFile(filepath.Join(work, ".gitattributes"), []byte("*.txt text eol=crlf\nid.c ident\n"), 0o644)
		os.WriteFile(filepath.Join(work, "notes.txt"), []byte("a\nb\n"), 0o644)
		os.WriteFile(filepath.Join(work, "id.c"), []byte("/* $Id$ */\n"), 0o644)
		os.WriteFile(filepath.Join(work, "empty"), nil, 0o644)
		os.WriteFile(filepath.Join(work, "bin.dat"), []byte{0, 1, 2, '\r', '\n', 0xff}, 0o644)
		os.MkdirAll(filepath.Join(work, "a", "b", "c"), 0o755)
		os.WriteFile(filepath.Join(work, "a", "b", "c", "deep.sh"), []byte("#!/bin/sh\n"), 0o755)
		os.Symlink("a/b", filepath.Join(work, "dirlink"))
		// Enough similar text for the pack to hold deltas.
		os.WriteFile(filepath.Join(work, "big.txt"), bytes.Repeat([]byte("line of text that repeats\n"), 4000), 0o644)
	})
	bare := filepath.Join(r.base, r.name+".git")
	git(t, bare, "branch", "topic/x", r.c2)
	packed := filepath.Join(r.base, "packed.git")
	git(t, r.base, "clone", "-q", "--bare", "--no-local", bare, packed)
	git(t, packed, "repack", "-adf", "--depth=50")
	nonBare := filepath.Join(r.base, "nonbare")
	git(t, r.base, "clone", "-q", bare, nonBare)
	git(t, nonBare, "branch", "topic/x", "origin/topic/x")
	git(t, nonBare, "branch", "feature", "origin/feature")

	repos := map[string]string{
		"loose":   "file://" + bare,
		"packed":  "file://" + packed,
		"path":    packed,
		"nonbare": "file://" + nonBare,
	}
	for kind, url := range repos {
		for _, c := range []struct{ ref, want, branch string }{
			{"", r.head, "main"}, {"main", r.head, "main"}, {"topic/x", r.c2, "topic/x"},
			{"v1", r.c1, ""}, {"refs/tags/v1", r.c1, ""}, {"refs/heads/feature", r.c2, ""}, {r.c2, r.c2, ""},
		} {
			t.Run(kind+"/"+c.ref, func(t *testing.T) {
				tree, err := Clone(context.Background(), url, c.ref, jobDirs(t), localPolicy)
				if err != nil {
					t.Fatal(err)
				}
				if !usedLocalCopy(t, tree.Dir) {
					t.Fatal("git cloned it: the local copy declined")
				}
				if tree.Commit != c.want {
					t.Fatalf("commit %s, want %s", tree.Commit, c.want)
				}
				checkGitHead(t, tree)
				got, want := snapshot(t, tree.Dir), snapshot(t, gitClone(t, url, c.ref))
				if fmt.Sprint(got) != fmt.Sprint(want) {
					for p := range want {
						if got[p] != want[p] {
							t.Errorf("%s: local copy %s, git clone %s", p, got[p], want[p])
						}
					}
					for p := range got {
						if _, ok := want[p]; !ok {
							t.Errorf("%s: only in the local copy (%s)", p, got[p])
						}
					}
				}
				if c.want == r.head && !strings.Contains(got["notes.txt"], `\r\n`) {
					t.Errorf("notes.txt was not converted to CRLF: %s", got["notes.txt"])
				}
				if st := git(t, tree.Dir, "status", "--porcelain"); st != "" {
					t.Errorf("git status of the copy:\n%s", st)
				}
				if c.branch != "" {
					if b := git(t, tree.Dir, "symbolic-ref", "--short", "HEAD"); b != c.branch {
						t.Errorf("HEAD is %q, want branch %q", b, c.branch)
					}
				}
				if out := git(t, tree.Dir, "rev-parse", "--is-shallow-repository"); (out == "true") != (c.want != r.c1) {
					t.Errorf("shallow = %s for %s (c1 has no parent)", out, c.want)
				}
				git(t, tree.Dir, "log", "-1", "--format=%H") // the shallow boundary lets git walk it
				if u := git(t, tree.Dir, "config", "remote.origin.url"); u != url {
					t.Errorf("origin %q, want %q", u, url)
				}
			})
		}
	}
}

// TestLocalCopyDeclines: what the local copy does not read goes to git,
// whose answer stands — a repository borrowing objects through
// alternates still clones (by git), and a repository whose stored object
// does not hash to its id, or whose tree names .git, fails as git fails.
func TestLocalCopyDeclines(t *testing.T) {
	t.Run("alternates", func(t *testing.T) {
		r := makeRepo(t, "proj", nil)
		bare := filepath.Join(r.base, r.name+".git")
		borrower := filepath.Join(r.base, "borrower.git")
		git(t, r.base, "clone", "-q", "--bare", "--shared", bare, borrower)
		tree, err := Clone(context.Background(), "file://"+borrower, "", jobDirs(t), localPolicy)
		if err != nil {
			t.Fatal(err)
		}
		if usedLocalCopy(t, tree.Dir) || tree.Commit != r.head {
			t.Fatalf("commit %s (want %s), local copy %v: alternates must go to git", tree.Commit, r.head, usedLocalCopy(t, tree.Dir))
		}
	})
	t.Run("objects-symlink", func(t *testing.T) {
		// objects/ a symlink to a directory elsewhere (another job's
		// repository): the Go reader follows no link, so git decides.
		r := makeRepo(t, "proj", nil)
		bare := filepath.Join(r.base, r.name+".git")
		elsewhere := filepath.Join(r.base, "elsewhere")
		if err := os.Rename(filepath.Join(bare, "objects"), elsewhere); err != nil {
			t.Fatal(err)
		}
		os.Symlink(elsewhere, filepath.Join(bare, "objects"))
		tree, err := Clone(context.Background(), "file://"+bare, "", jobDirs(t), localPolicy)
		if err == nil && usedLocalCopy(t, tree.Dir) {
			t.Fatal("the local copy read objects through a symlink")
		}
	})
	t.Run("abbreviated", func(t *testing.T) {
		r := makeRepo(t, "proj", nil)
		tree, err := Clone(context.Background(), "file://"+filepath.Join(r.base, r.name+".git"), r.c2[:9], jobDirs(t), localPolicy)
		if err != nil || usedLocalCopy(t, tree.Dir) || tree.Commit != r.c2 {
			t.Fatalf("tree %+v, err %v", tree, err)
		}
	})
	t.Run("corrupt-object", func(t *testing.T) {
		r := makeRepo(t, "proj", nil)
		bare := filepath.Join(r.base, r.name+".git")
		// README's blob at HEAD ("two\n") swapped for another blob's bytes.
		id := git(t, bare, "rev-parse", "HEAD:README")
		var z bytes.Buffer
		w := zlib.NewWriter(&z)
		w.Write([]byte("blob 6\x00evil!\n"))
		w.Close()
		p := filepath.Join(bare, "objects", id[:2], id[2:])
		os.Chmod(p, 0o644)
		if err := os.WriteFile(p, z.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		tree, err := Clone(context.Background(), "file://"+bare, "", jobDirs(t), localPolicy)
		if !errors.Is(err, ErrClone) {
			t.Fatalf("tree %+v, err %v: want git's refusal", tree, err)
		}
	})
	t.Run("dot-git-entry", func(t *testing.T) {
		r := makeRepo(t, "proj", nil)
		bare := filepath.Join(r.base, r.name+".git")
		hook := hashObject(t, bare, "blob", []byte("#!/bin/sh\ntouch /tmp/kettle-pwned\n"))
		hooks := mktree(t, bare, "100755 blob "+hook+"\tpost-checkout\n")
		dotgit := mktree(t, bare, "040000 tree "+hooks+"\thooks\n")
		root := mktree(t, bare, "040000 tree "+dotgit+"\t.git\n")
		commit := git(t, bare, "commit-tree", "-m", "evil", root)
		git(t, bare, "update-ref", "refs/heads/main", commit)
		work := jobDirs(t)
		_, err := Clone(context.Background(), "file://"+bare, "", work, localPolicy)
		if !errors.Is(err, ErrClone) {
			t.Fatalf("err %v: want git's refusal of the path .git", err)
		}
		if _, err := os.Stat("/tmp/kettle-pwned"); err == nil {
			t.Fatal("a hook from the tree ran")
		}
	})
}

// TestLocalCopyDuplicateNames: a hostile tree names "a" twice, a symlink
// to a directory outside and a tree holding a file; checked out by the
// local copy or by git, nothing lands outside.
func TestLocalCopyDuplicateNames(t *testing.T) {
	r := makeRepo(t, "proj", nil)
	bare := filepath.Join(r.base, r.name+".git")
	outside := t.TempDir()
	link := hashObject(t, bare, "blob", []byte(outside))
	file := hashObject(t, bare, "blob", []byte("x\n"))
	sub := mktree(t, bare, "100644 blob "+file+"\tpwned\n")
	for _, order := range [][2]string{{"120000 blob " + link + "\ta", "040000 tree " + sub + "\ta"}, {"040000 tree " + sub + "\ta", "120000 blob " + link + "\ta"}} {
		root := mktree(t, bare, order[0]+"\n"+order[1]+"\n")
		commit := git(t, bare, "commit-tree", "-m", "evil", root)
		git(t, bare, "update-ref", "refs/heads/main", commit)
		tree, err := Clone(context.Background(), "file://"+bare, "", jobDirs(t), localPolicy)
		if ents, _ := os.ReadDir(outside); len(ents) != 0 {
			t.Fatalf("%v: wrote %v outside the checkout (tree %+v, err %v)", order, ents, tree, err)
		}
		if err == nil {
			if fi, lerr := os.Lstat(filepath.Join(tree.Dir, "a")); lerr == nil && fi.Mode()&fs.ModeSymlink != 0 {
				if _, serr := os.Stat(filepath.Join(tree.Dir, "a", "pwned")); serr == nil {
					t.Fatalf("%v: a/pwned reached through the symlink", order)
				}
			}
		}
	}
}

// TestCloneTreeBomb: trees that repeat one subtree 64 times over four
// levels name 16.7 million files in a few kilobytes of objects. Git would
// build that index in memory (gigabytes, minutes) before writing a file;
// every clone — the local copy, git:// and http, by branch or by commit —
// counts the entries from the trees first and refuses.
func TestCloneTreeBomb(t *testing.T) {
	r := makeRepo(t, "proj", nil)
	bare := filepath.Join(r.base, r.name+".git")
	level := func(mode, id string) string {
		var b strings.Builder
		for i := range 64 {
			fmt.Fprintf(&b, "%s x %s\t%02d\n", mode, id, i)
		}
		return mktree(t, bare, b.String())
	}
	srv := httptest.NewServer(httpBackend(r.base))
	defer srv.Close()
	// Subtrees under their mode, and under modes git reads as a tree too
	// (canon_mode: type bits only; zero-padded digits).
	for _, treeMode := range []string{"040000", "040755", "0040000"} {
		id := level("100644", hashObject(t, bare, "blob", bytes.Repeat([]byte("x"), 4096)))
		for range 3 {
			id = level(treeMode, id)
		}
		commit := git(t, bare, "commit-tree", "-m", "bomb", id)
		git(t, bare, "update-ref", "refs/heads/main", commit)
		for _, url := range []string{"file://" + bare, serveDaemon(t, r.base) + "/proj.git", srv.URL + "/proj.git"} {
			for _, ref := range []string{"", commit} {
				t.Run(treeMode+"/"+url+"@"+ref, func(t *testing.T) {
					start := time.Now()
					_, err := Clone(context.Background(), url, ref, jobDirs(t), localPolicy)
					if !errors.Is(err, ErrRepoTooLarge) || !strings.Contains(err.Error(), "more than 200000 entries") {
						t.Fatalf("err = %v, want ErrRepoTooLarge", err)
					}
					if d := time.Since(start); d > 10*time.Second {
						t.Errorf("took %v", d)
					}
				})
			}
		}
	}
}

func hashObject(t *testing.T, repo, kind string, content []byte) string {
	t.Helper()
	cmd := exec.Command("git", "hash-object", "-w", "--literally", "-t", kind, "--stdin")
	cmd.Dir, cmd.Stdin = repo, bytes.NewReader(content)
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// mktree writes a tree object from `git mktree` input lines, unchecked
// (git mktree would refuse a .git entry).
func mktree(t *testing.T, repo, lines string) string {
	t.Helper()
	var data []byte
	for _, l := range strings.Split(strings.TrimSuffix(lines, "\n"), "\n") {
		meta, name, _ := strings.Cut(l, "\t")
		f := strings.Fields(meta)
		mode := strings.TrimPrefix(f[0], "0")
		raw, err := hex.DecodeString(f[2])
		if err != nil {
			t.Fatal(err)
		}
		data = append(data, []byte(mode+" "+name+"\x00")...)
		data = append(data, raw...)
	}
	return hashObject(t, repo, "tree", data)
}
