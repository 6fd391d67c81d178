package gitid

import (
	"bytes"
	"compress/zlib"
	"context"
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/kettle-build/kettle/internal/testenv"
)

func gitCmd(t *testing.T, dir string, args ...string) string {
	t.Helper()
	testenv.NeedTool(t, "git")
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t",
		"GIT_COMMITTER_EMAIL=t@example.com", "GIT_AUTHOR_DATE=2026-01-01T00:00:00Z",
		"GIT_COMMITTER_DATE=2026-01-01T00:00:00Z")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// content is a tree with the cases git's tree format orders subtly.
func content(t *testing.T, dir string) {
	writeFiles(t, dir, map[string]string{"a": "x", "b/c": "y", "b-c": "z", "b/d/e": "", "empty/.keep": "k",
		"ünï cødé": "u", "sub/x.rs": strings.Repeat("line\n", 10000)})
	os.MkdirAll(filepath.Join(dir, "really-empty", "sub"), 0o755)
	os.Chmod(filepath.Join(dir, "a"), 0o700)
	os.Symlink("b/c", filepath.Join(dir, "link"))
	os.Symlink("../../../etc/passwd", filepath.Join(dir, "outside-link"))
	os.Symlink("missing", filepath.Join(dir, "dangling"))
}

func TestTreeHashMatchesGit(t *testing.T) {
	for _, f := range []struct {
		name   string
		format Format
	}{{"sha1", SHA1}, {"sha256", SHA256}} {
		t.Run(f.name, func(t *testing.T) {
			dir := t.TempDir()
			content(t, dir)
			got, err := TreeHash(t.Context(), dir, f.format)
			if err != nil {
				t.Fatal(err)
			}
			gitCmd(t, dir, "init", "-q", "--object-format="+f.name)
			gitCmd(t, dir, "add", "-A", "--force")
			if want := gitCmd(t, dir, "write-tree"); got != want {
				t.Fatalf("TreeHash %s, git write-tree %s", got, want)
			}
		})
	}
	if got, _ := TreeHash(t.Context(), t.TempDir(), SHA1); got != "4b825dc642cb6eb9a060e54bf8d69288fbee4904" {
		t.Fatalf("empty tree %s", got)
	}
}

func TestTreeHashRefuses(t *testing.T) {
	for name, setup := range map[string]func(dir string){
		"nested .git": func(dir string) { os.MkdirAll(filepath.Join(dir, "sub", ".git"), 0o755) },
		"case .GIT":   func(dir string) { os.WriteFile(filepath.Join(dir, ".GIT"), nil, 0o644) },
		"nested link": func(dir string) { os.Symlink(".", filepath.Join(dir, "x", ".git")) },
		"fifo":        func(dir string) { exec.Command("mkfifo", filepath.Join(dir, "x", "fifo")).Run() },
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			os.MkdirAll(filepath.Join(dir, "x"), 0o755)
			setup(dir)
			_, err := TreeHash(t.Context(), dir, SHA1)
			if !errors.Is(err, ErrTreeGit) && !errors.Is(err, ErrTreeSpecial) {
				t.Fatalf("got %v", err)
			}
			if strings.Contains(Reason(err), dir) {
				t.Errorf("reason names a server path: %q", Reason(err))
			}
		})
	}
	// The root itself must not be a link.
	dir := t.TempDir()
	os.Symlink(t.TempDir(), filepath.Join(dir, "l"))
	if _, err := TreeHash(t.Context(), filepath.Join(dir, "l"), SHA1); err == nil {
		t.Error("a symlinked root was followed")
	}
	// Excluded paths are skipped, the top-level .git always.
	dir = t.TempDir()
	writeFiles(t, dir, map[string]string{"a": "x", "kettle-build/p.json": "{}", ".git/HEAD": "x"})
	with, _ := TreeHash(t.Context(), dir, SHA1, "kettle-build")
	os.RemoveAll(filepath.Join(dir, "kettle-build"))
	os.RemoveAll(filepath.Join(dir, ".git"))
	without, _ := TreeHash(t.Context(), dir, SHA1)
	if with != without || with == "" {
		t.Errorf("exclude: %s vs %s", with, without)
	}
}

// repoWithHistory makes a checkout with many similar commits, so `git gc`
// stores commits as deltas.
func repoWithHistory(t *testing.T, format string, commits int) string {
	dir := t.TempDir()
	gitCmd(t, dir, "init", "-q", "-b", "main", "--object-format="+format)
	content(t, dir)
	for i := 0; i < commits; i++ {
		writeFiles(t, dir, map[string]string{"sub/x.rs": strings.Repeat("line\n", 10000) + fmt.Sprint(i)})
		gitCmd(t, dir, "add", "-A")
		gitCmd(t, dir, "commit", "-q", "-m", strings.Repeat("a long and very similar commit message\n", 20)+fmt.Sprint(i))
	}
	return dir
}

func checkHead(t *testing.T, dir string) *Identity {
	t.Helper()
	id, err := Identify(t.Context(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	commit := gitCmd(t, dir, "rev-parse", "HEAD^{commit}")
	tree := gitCmd(t, dir, "rev-parse", "HEAD^{tree}")
	if id.Commit != commit || id.Tree != tree || id.Dirty {
		t.Fatalf("identity %+v, git says commit %s tree %s", id, commit, tree)
	}
	return id
}

func TestReadHeadMatchesGit(t *testing.T) {
	for _, format := range []string{"sha1", "sha256"} {
		t.Run(format, func(t *testing.T) {
			dir := repoWithHistory(t, format, 12)
			checkHead(t, dir) // loose objects, loose ref
			gitCmd(t, dir, "gc", "-q", "--aggressive", "--prune=now")
			if m, _ := filepath.Glob(filepath.Join(dir, ".git", "objects", "pack", "*.idx")); len(m) != 1 {
				t.Fatalf("packs %v", m)
			}
			checkHead(t, dir) // packed objects (OFS deltas), packed-refs
			gitCmd(t, dir, "checkout", "-q", "--detach", "HEAD~3")
			checkHead(t, dir) // detached HEAD
			gitCmd(t, dir, "checkout", "-q", "main")
			gitCmd(t, dir, "-c", "repack.useDeltaBaseOffset=false", "-c", "pack.useDeltaBaseOffset=false", "repack", "-q", "-adf", "--depth=50", "--window=50")
			checkHead(t, dir) // REF deltas
			gitCmd(t, dir, "symbolic-ref", "refs/heads/alias", "refs/heads/main")
			os.WriteFile(filepath.Join(dir, ".git", "HEAD"), []byte("ref: refs/heads/alias\n"), 0o644)
			checkHead(t, dir) // symref chain
		})
	}
}

func TestIdentifyDirty(t *testing.T) {
	dir := repoWithHistory(t, "sha1", 1)
	head := gitCmd(t, dir, "rev-parse", "HEAD")
	for name, change := range map[string]func(){
		"modified":  func() { os.WriteFile(filepath.Join(dir, "a"), []byte("changed"), 0o644) },
		"untracked": func() { os.WriteFile(filepath.Join(dir, "build.rs"), []byte("fn main(){}"), 0o644) },
		"ignored counts": func() {
			writeFiles(t, dir, map[string]string{".gitignore": "/target/\n"})
			gitCmd(t, dir, "add", "-A")
			gitCmd(t, dir, "commit", "-qm", "i")
			head = gitCmd(t, dir, "rev-parse", "HEAD")
			writeFiles(t, dir, map[string]string{"target/x": "y"})
		},
		"mode":             func() { os.Chmod(filepath.Join(dir, "b", "c"), 0o755) },
		"symlink retarget": func() { os.Remove(filepath.Join(dir, "link")); os.Symlink("a", filepath.Join(dir, "link")) },
	} {
		t.Run(name, func(t *testing.T) {
			gitCmd(t, dir, "checkout", "-q", "-f", "HEAD")
			gitCmd(t, dir, "clean", "-qfdx")
			checkHead(t, dir)
			change()
			id, err := Identify(t.Context(), dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if !id.Dirty || id.Commit != "" || id.HeadCommit != head || id.Tree == gitCmd(t, dir, "rev-parse", "HEAD^{tree}") {
				t.Fatalf("identity %+v", id)
			}
		})
	}
	// The output directory is not content.
	gitCmd(t, dir, "checkout", "-q", "-f", "HEAD")
	gitCmd(t, dir, "clean", "-qfdx")
	writeFiles(t, dir, map[string]string{"kettle-build/provenance.json": "{}"})
	if id, err := Identify(t.Context(), dir, Options{Exclude: []string{"kettle-build"}}); err != nil || id.Dirty {
		t.Fatalf("%+v %v", id, err)
	}
}

// hostile builds a .git by hand.
type hostile struct {
	t   testing.TB
	dir string // project
}

func newHostile(t *testing.T) *hostile {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"a": "x"})
	os.MkdirAll(filepath.Join(dir, ".git", "objects", "pack"), 0o755)
	os.MkdirAll(filepath.Join(dir, ".git", "refs", "heads"), 0o755)
	return &hostile{t, dir}
}

func (h *hostile) write(rel, data string) {
	p := filepath.Join(h.dir, ".git", rel)
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

func zlibBytes(b []byte) []byte {
	var buf bytes.Buffer
	zw := zlib.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// loose stores raw (header included) under the name id.
func (h *hostile) loose(id string, raw []byte) {
	h.write("objects/"+id[:2]+"/"+id[2:], string(zlibBytes(raw)))
}

func object(kind string, content []byte) (string, []byte) {
	raw := append([]byte(fmt.Sprintf("%s %d\x00", kind, len(content))), content...)
	s := sha1.Sum(raw)
	return hex.EncodeToString(s[:]), raw
}

// commitFor returns a commit object naming the tree of the project's
// content.
func (h *hostile) commitFor() (string, []byte) {
	tree, err := TreeHash(context.Background(), h.dir, SHA1)
	if err != nil {
		h.t.Fatal(err)
	}
	return object("commit", []byte("tree "+tree+"\nauthor a <a> 0 +0000\ncommitter a <a> 0 +0000\n\nm\n"))
}

type packObj struct {
	id   string // name in the index
	typ  int
	base []byte // REF_DELTA base id, or OFS_DELTA distance as 8 bytes
	data []byte // uncompressed body
	ofs  int64  // OFS_DELTA: distance to the base
}

// pack writes pack-x.pack/.idx holding objs at sequential offsets.
func (h *hostile) pack(objs []packObj) {
	var pk bytes.Buffer
	pk.WriteString("PACK")
	binary.Write(&pk, binary.BigEndian, uint32(2))
	binary.Write(&pk, binary.BigEndian, uint32(len(objs)))
	type ent struct {
		id  []byte
		off uint32
	}
	var ents []ent
	for _, o := range objs {
		off := pk.Len()
		size := len(o.data)
		b := byte(o.typ<<4) | byte(size&15)
		size >>= 4
		for size > 0 {
			pk.WriteByte(b | 0x80)
			b = byte(size & 0x7f)
			size >>= 7
		}
		pk.WriteByte(b)
		switch o.typ {
		case objRefDelta:
			pk.Write(o.base)
		case objOfsDelta:
			v := o.ofs
			var enc []byte
			enc = append(enc, byte(v&0x7f))
			for v >>= 7; v > 0; v >>= 7 {
				v--
				enc = append([]byte{byte(0x80 | v&0x7f)}, enc...)
			}
			pk.Write(enc)
		}
		pk.Write(zlibBytes(o.data))
		id, _ := hex.DecodeString(o.id)
		ents = append(ents, ent{id, uint32(off)})
	}
	pk.Write(make([]byte, 20))
	sort.Slice(ents, func(i, j int) bool { return bytes.Compare(ents[i].id, ents[j].id) < 0 })
	var idx bytes.Buffer
	idx.WriteString("\xfftOc")
	binary.Write(&idx, binary.BigEndian, uint32(2))
	for b := 0; b < 256; b++ {
		n := 0
		for _, e := range ents {
			if int(e.id[0]) <= b {
				n++
			}
		}
		binary.Write(&idx, binary.BigEndian, uint32(n))
	}
	for _, e := range ents {
		idx.Write(e.id)
	}
	idx.Write(make([]byte, 4*len(ents)))
	for _, e := range ents {
		binary.Write(&idx, binary.BigEndian, e.off)
	}
	idx.Write(make([]byte, 40))
	h.write("objects/pack/pack-x.pack", pk.String())
	h.write("objects/pack/pack-x.idx", idx.String())
}

func (h *hostile) head(ref string) { h.write("HEAD", ref) }

// delta encodes a delta turning base into target by one insert per 127
// bytes.
func delta(base, target []byte) []byte {
	var d []byte
	v := func(n int) {
		for n >= 0x80 {
			d = append(d, byte(n)|0x80)
			n >>= 7
		}
		d = append(d, byte(n))
	}
	v(len(base))
	v(len(target))
	for i := 0; i < len(target); i += 127 {
		j := min(i+127, len(target))
		d = append(d, byte(j-i))
		d = append(d, target[i:j]...)
	}
	return d
}

func TestReadHeadHostile(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(h *hostile)
		want  error
	}{
		{"ok loose", func(h *hostile) {
			id, raw := h.commitFor()
			h.loose(id, raw)
			h.head("ref: refs/heads/main\n")
			h.write("refs/heads/main", id+"\n")
		}, nil},
		{"ok packed delta", func(h *hostile) {
			id, raw := h.commitFor()
			body := raw[bytes.IndexByte(raw, 0)+1:]
			bid, braw := object("commit", []byte("base"))
			h.pack([]packObj{{id: bid, typ: objCommit, data: braw[bytes.IndexByte(braw, 0)+1:]},
				{id: id, typ: objRefDelta, base: mustHex(bid), data: delta([]byte("base"), body)}})
			h.head(id)
		}, nil},
		{"no HEAD", func(h *hostile) {}, ErrNoHead},
		{"HEAD symlink", func(h *hostile) {
			os.Symlink("../a", filepath.Join(h.dir, ".git", "HEAD"))
		}, ErrLink},
		{"refs dir symlink", func(h *hostile) {
			os.RemoveAll(filepath.Join(h.dir, ".git", "refs"))
			os.Symlink("/", filepath.Join(h.dir, ".git", "refs"))
			h.head("ref: refs/heads/main")
		}, ErrLink},
		{"ref outside", func(h *hostile) { h.head("ref: ../../../etc/passwd") }, ErrBadRef},
		{"ref dotdot", func(h *hostile) { h.head("ref: refs/../../x") }, ErrBadRef},
		{"ref not under refs", func(h *hostile) { h.head("ref: config") }, ErrBadRef},
		{"symref loop", func(h *hostile) {
			h.head("ref: refs/heads/a")
			h.write("refs/heads/a", "ref: refs/heads/b")
			h.write("refs/heads/b", "ref: refs/heads/a")
		}, ErrRefLoop},
		{"reftable", func(h *hostile) { h.head("ref: refs/heads/.invalid\n") }, ErrUnsupported},
		{"HEAD garbage", func(h *hostile) { h.head("\x00\xff garbage") }, ErrBadRef},
		{"HEAD huge", func(h *hostile) { h.head(strings.Repeat("a", 1<<20)) }, ErrTooLarge},
		{"HEAD fifo", func(h *hostile) { exec.Command("mkfifo", filepath.Join(h.dir, ".git", "HEAD")).Run() }, ErrLink},
		{"packed-refs garbage", func(h *hostile) {
			h.head("ref: refs/heads/main")
			h.write("packed-refs", "# pack-refs\nnot a line\n")
		}, ErrBadRef},
		{"packed-refs missing ref", func(h *hostile) {
			h.head("ref: refs/heads/main")
			h.write("packed-refs", strings.Repeat("0", 40)+" refs/heads/other\n")
		}, ErrNoHead},
		{"object only in alternates", func(h *hostile) {
			other := t.TempDir()
			id, raw := h.commitFor()
			h.write("objects/info/alternates", other+"\n")
			os.MkdirAll(filepath.Join(other, id[:2]), 0o755)
			os.WriteFile(filepath.Join(other, id[:2], id[2:]), zlibBytes(raw), 0o644)
			h.head(id)
		}, ErrNoObject},
		{"commondir ignored", func(h *hostile) {
			id, _ := h.commitFor()
			h.write("commondir", "/etc\n")
			h.head(id)
		}, ErrNoObject},
		{"object hash mismatch", func(h *hostile) {
			id, _ := h.commitFor()
			_, other := object("commit", []byte("tree "+strings.Repeat("1", 40)+"\n"))
			h.loose(id, other)
			h.head(id)
		}, ErrCorrupt},
		{"object size lie", func(h *hostile) {
			id, raw := h.commitFor()
			h.loose(id, bytes.Replace(raw, []byte("commit "), []byte("commit 9"), 1))
			h.head(id)
		}, ErrCorrupt},
		{"object huge header", func(h *hostile) {
			id, _ := h.commitFor()
			h.loose(id, []byte("blob 99999999999\x00x"))
			h.head(id)
		}, ErrTooLarge},
		{"loose object symlink", func(h *hostile) {
			id, _ := h.commitFor()
			os.MkdirAll(filepath.Join(h.dir, ".git", "objects", id[:2]), 0o755)
			os.Symlink("/etc/passwd", filepath.Join(h.dir, ".git", "objects", id[:2], id[2:]))
			h.head(id)
		}, ErrLink},
		{"HEAD is a tree", func(h *hostile) {
			id, raw := object("tree", nil)
			h.loose(id, raw)
			h.head(id)
		}, ErrNotCommit},
		{"cyclic ref deltas", func(h *hostile) {
			a, b := strings.Repeat("a", 40), strings.Repeat("b", 40)
			h.pack([]packObj{{id: a, typ: objRefDelta, base: mustHex(b), data: delta([]byte("x"), []byte("x"))},
				{id: b, typ: objRefDelta, base: mustHex(a), data: delta([]byte("x"), []byte("x"))}})
			h.head(a)
		}, ErrDeltaDepth},
		{"ofs delta forward", func(h *hostile) {
			a := strings.Repeat("a", 40)
			h.pack([]packObj{{id: a, typ: objOfsDelta, ofs: -5, data: delta([]byte("x"), []byte("x"))}})
			h.head(a)
		}, ErrCorrupt},
		{"ofs delta to itself", func(h *hostile) {
			a := strings.Repeat("a", 40)
			h.pack([]packObj{{id: a, typ: objOfsDelta, ofs: 0, data: delta([]byte("x"), []byte("x"))}})
			h.head(a)
		}, ErrCorrupt},
		{"delta copy out of range", func(h *hostile) {
			bid, braw := object("commit", []byte("base"))
			a := strings.Repeat("a", 40)
			h.pack([]packObj{{id: bid, typ: objCommit, data: braw[bytes.IndexByte(braw, 0)+1:]},
				{id: a, typ: objRefDelta, base: mustHex(bid), data: []byte{4, 200, 0x91, 0xff, 0xff}}})
			h.head(a)
		}, ErrCorrupt},
		{"delta bomb", func(h *hostile) {
			bid, braw := object("blob", bytes.Repeat([]byte("x"), 0x10000))
			a := strings.Repeat("a", 40)
			d := []byte{0x80, 0x80, 0x04, 0x80, 0x80, 0x80, 0x40} // src 64 KiB, dst 1 GiB
			for i := 0; i < 100; i++ {
				d = append(d, 0x80) // copy 64 KiB from offset 0
			}
			h.pack([]packObj{{id: bid, typ: objBlob, data: braw[bytes.IndexByte(braw, 0)+1:]},
				{id: a, typ: objRefDelta, base: mustHex(bid), data: d}})
			h.head(a)
		}, ErrCorrupt},
		{"index without pack", func(h *hostile) {
			h.pack(nil)
			os.Remove(filepath.Join(h.dir, ".git", "objects", "pack", "pack-x.pack"))
			h.head(strings.Repeat("a", 40))
		}, ErrCorrupt},
		{"index truncated", func(h *hostile) {
			h.pack(nil)
			h.write("objects/pack/pack-x.idx", "\xfftOc\x00\x00\x00\x02")
			h.head(strings.Repeat("a", 40))
		}, ErrCorrupt},
		{"pack symlink", func(h *hostile) {
			h.pack(nil)
			os.Remove(filepath.Join(h.dir, ".git", "objects", "pack", "pack-x.pack"))
			os.Symlink("/dev/zero", filepath.Join(h.dir, ".git", "objects", "pack", "pack-x.pack"))
			h.head(strings.Repeat("a", 40))
		}, ErrLink},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHostile(t)
			tc.setup(h)
			_, err := ReadHead(filepath.Join(h.dir, ".git"))
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				id, err := Identify(t.Context(), h.dir, Options{})
				if err != nil || id.Dirty || id.Commit == "" {
					t.Fatalf("%+v %v", id, err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if r := Reason(err); r == "" || strings.Contains(r, h.dir) {
				t.Errorf("reason %q", r)
			}
		})
	}
}

func TestIdentifyGitFile(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, ".git"), []byte("gitdir: /etc\n"), 0o644)
	if _, err := Identify(t.Context(), dir, Options{}); !errors.Is(err, ErrGitFile) {
		t.Fatalf("gitdir file: %v", err)
	}
	dir = t.TempDir()
	other := repoWithHistory(t, "sha1", 1)
	os.Symlink(filepath.Join(other, ".git"), filepath.Join(dir, ".git"))
	if _, err := Identify(t.Context(), dir, Options{}); !errors.Is(err, ErrGitFile) {
		t.Fatalf(".git symlink: %v", err)
	}
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func TestOriginURL(t *testing.T) {
	dir := repoWithHistory(t, "sha1", 1)
	for _, u := range []string{"https://example.com/a.git", "git@example.com:x/y.git", "/srv/repo"} {
		exec.Command("git", "-C", dir, "remote", "remove", "origin").Run()
		gitCmd(t, dir, "remote", "add", "origin", u)
		if got := OriginURL(filepath.Join(dir, ".git")); got != u || got != gitCmd(t, dir, "remote", "get-url", "origin") {
			t.Errorf("OriginURL %q, want %q", got, u)
		}
	}
	for cfg, want := range map[string]string{
		"[remote \"origin\"]\n\turl = a # c\n":           "a",
		"[Remote \"origin\"]\n\tURL = a\n\turl = b\n":    "a",
		"[remote \"Origin\"]\n\turl = a\n":               "",
		"[remote.ORIGIN]\n\turl = a\n":                   "a",
		"[remote \"origin\"]\n\turl = \"a\\tb\"\n":       "",
		"[include]\n\tpath = /etc/gitconfig\n":           "",
		"[remote \"origin\"]\n\tpushurl = x\n":           "",
		"[remote \"origin\"] url = inline\n":             "inline",
		"[remote \"other\"]\n\turl = x\n[core]\nurl=y\n": "",
	} {
		if got := originURL([]byte(cfg)); got != want {
			t.Errorf("%q: got %q, want %q", cfg, got, want)
		}
	}
}
