package gitid

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/pjbgf/sha1cd"
	"golang.org/x/sys/unix"
)

// Format is a git object format.
type Format int

// Object formats.
const (
	SHA1 Format = iota
	SHA256
)

// new is the format's hash: for SHA-1, sha1cd, the Go port of git's
// sha1dc, which flags input crafted for a collision attack (SHAttered,
// SHAmbles) as git does.
func (f Format) new() hash.Hash {
	if f == SHA256 {
		return sha256.New()
	}
	return sha1cd.New()
}

// ErrCollision marks content crafted for a SHA-1 collision attack: git
// refuses it ("SHA-1 appears to be part of a collision attack"), and so
// does kettle rather than record an id that names two contents.
var ErrCollision = errors.New("a file or git object is part of a SHA-1 collision attack")

// sum is h's digest, or ErrCollision when h detected an attack.
func sum(h hash.Hash) ([]byte, error) {
	if cr, ok := h.(interface {
		CollisionResistantSum([]byte) ([]byte, bool)
	}); ok {
		s, col := cr.CollisionResistantSum(nil)
		if col {
			return nil, ErrCollision
		}
		return s, nil
	}
	return h.Sum(nil), nil
}

func (f Format) size() int {
	if f == SHA256 {
		return sha256.Size
	}
	return sha1.Size
}

// formatOf is the object format of a hex object id.
func formatOf(hexID string) (Format, bool) {
	switch len(hexID) {
	case 40:
		return SHA1, isHex(hexID)
	case 64:
		return SHA256, isHex(hexID)
	}
	return SHA1, false
}

// maxTreeDepth bounds directory nesting (an archive name is at most 4096
// bytes, so 2048 levels; each level holds one open descriptor).
const maxTreeDepth = 2100

// ErrTreeGit marks a .git entry (any case) where the tree hash cannot
// take one: git itself refuses to track such paths.
var ErrTreeGit = errors.New("a .git entry inside the source tree")

// ErrTreeSpecial marks a device, FIFO or socket in the tree.
var ErrTreeSpecial = errors.New("not a regular file, directory or symlink")

// TreeHash returns the git tree id that `git add -A --force && git
// write-tree` would give for the content of dir in format f, without git and
// without an index: regular files (100644, or 100755 when the owner may
// execute), symlinks (120000, the link target as blob: a link is hashed,
// never followed) and directories (40000); empty directories are omitted,
// as git cannot record them. .gitignore is not applied: everything in the
// tree is an input. The top-level ".git" and the slash-separated relative
// paths in exclude are skipped; any other entry named .git (in any case) is
// an ErrTreeGit error. Every path component is opened with O_NOFOLLOW from
// its parent's descriptor, so nothing outside dir is ever read.
func TreeHash(ctx context.Context, dirPath string, f Format, exclude ...string) (string, error) {
	d, err := openDir(dirPath)
	if err != nil {
		return "", err
	}
	defer d.Close()
	skip := map[string]bool{".git": true}
	for _, e := range exclude {
		if e = path.Clean(e); e != "." && e != "" && !strings.HasPrefix(e, "../") && e != ".." {
			skip[e] = true
		}
	}
	w := &treeWalker{ctx: ctx, f: f, skip: skip, buf: make([]byte, 64<<10)}
	id, empty, err := w.tree(d, "", 0)
	if err != nil {
		return "", err
	}
	if empty {
		id, _ = objectID(f, "tree", nil)
	}
	return hex.EncodeToString(id), nil
}

type treeWalker struct {
	ctx  context.Context
	f    Format
	skip map[string]bool
	buf  []byte
}

type treeEntry struct {
	name string // sort key: directories compare as name + "/"
	mode string
	id   []byte
}

func (w *treeWalker) tree(d *dir, rel string, depth int) (id []byte, empty bool, err error) {
	if err := w.ctx.Err(); err != nil {
		return nil, false, err
	}
	if depth > maxTreeDepth {
		return nil, false, fmt.Errorf("%s: directories nested more than %d deep", rel, maxTreeDepth)
	}
	names, err := d.f.Readdirnames(-1)
	if err != nil {
		return nil, false, fmt.Errorf("%s: read directory: %w", orDot(rel), err)
	}
	var entries []treeEntry
	for _, name := range names {
		p := name
		if rel != "" {
			p = rel + "/" + name
		}
		if w.skip[p] {
			continue
		}
		if strings.EqualFold(name, ".git") {
			return nil, false, fmt.Errorf("%s: %w", p, ErrTreeGit)
		}
		var st unix.Stat_t
		if err := unix.Fstatat(d.fd(), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return nil, false, fmt.Errorf("%s: %w", p, err)
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			sd, err := d.sub(name)
			if err != nil {
				return nil, false, fmt.Errorf("%s: %w", p, err)
			}
			sub, empty, err := w.tree(sd, p, depth+1)
			sd.Close()
			if err != nil {
				return nil, false, err
			}
			if !empty {
				entries = append(entries, treeEntry{name + "/", "40000", sub})
			}
		case unix.S_IFLNK:
			target, err := readlinkat(d.fd(), name)
			if err != nil {
				return nil, false, fmt.Errorf("%s: %w", p, err)
			}
			blob, err := objectID(w.f, "blob", []byte(target))
			if err != nil {
				return nil, false, fmt.Errorf("%s: %w", p, err)
			}
			entries = append(entries, treeEntry{name, "120000", blob})
		case unix.S_IFREG:
			blob, exec, err := w.blob(d, name, p)
			if err != nil {
				return nil, false, err
			}
			mode := "100644"
			if exec {
				mode = "100755"
			}
			entries = append(entries, treeEntry{name, mode, blob})
		default:
			return nil, false, fmt.Errorf("%s: %w", p, ErrTreeSpecial)
		}
	}
	if len(entries) == 0 {
		return nil, true, nil
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })
	var b bytes.Buffer
	for _, e := range entries {
		name := e.name
		if e.mode == "40000" {
			name = name[:len(name)-1]
		}
		b.WriteString(e.mode)
		b.WriteByte(' ')
		b.WriteString(name)
		b.WriteByte(0)
		b.Write(e.id)
	}
	tid, err := objectID(w.f, "tree", b.Bytes())
	return tid, false, err
}

// blob hashes a regular file; the mode and size come from the opened
// descriptor, so a file swapped for a link after the stat is not followed.
func (w *treeWalker) blob(d *dir, name, p string) ([]byte, bool, error) {
	f, size, err := d.openRegular(name)
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", p, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, false, err
	}
	h := w.f.new()
	h.Write([]byte("blob " + strconv.FormatInt(size, 10) + "\x00"))
	n, err := io.CopyBuffer(h, &ctxReader{w.ctx, f}, w.buf)
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", p, err)
	}
	if n != size {
		return nil, false, fmt.Errorf("%s changed while hashing", p)
	}
	id, err := sum(h)
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", p, err)
	}
	return id, fi.Mode()&0o100 != 0, nil
}

func readlinkat(fd int, name string) (string, error) {
	for n := 256; n <= 1<<16; n *= 4 {
		buf := make([]byte, n)
		l, err := unix.Readlinkat(fd, name, buf)
		if err != nil {
			return "", err
		}
		if l < n {
			return string(buf[:l]), nil
		}
	}
	return "", errors.New("symlink target too long")
}

// objectID is the id of a git object of kind with content.
func objectID(f Format, kind string, content []byte) ([]byte, error) {
	h := f.new()
	h.Write([]byte(kind + " " + strconv.Itoa(len(content)) + "\x00"))
	h.Write(content)
	return sum(h)
}

func orDot(rel string) string {
	if rel == "" {
		return "."
	}
	return rel
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return s != ""
}

// ctxReader stops a copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
