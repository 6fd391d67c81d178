package pipeline

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
)

// TreeHash returns the git tree id (SHA-1 object format) that `git add -A
// --force && git write-tree` would give for the content of dir, without git
// and without an index: regular files (mode 100644, or 100755 when the owner
// may execute), symlinks (120000, the link target as blob), and directories
// (040000) — empty directories are omitted, as git cannot record them. Every
// file counts (.gitignore is not applied: everything in the upload is an
// input). Entries named .git are refused rather than hashed.
func TreeHash(ctx context.Context, dir string) (string, error) {
	id, empty, err := treeHash(ctx, dir)
	if err != nil {
		return "", err
	}
	if empty {
		id = gitObject("tree", nil)
	}
	return hex.EncodeToString(id), nil
}

type treeEntry struct {
	name string // sort key: directories compare as name + "/"
	mode string
	id   []byte
}

func treeHash(ctx context.Context, dir string) (id []byte, empty bool, err error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, false, err
	}
	var entries []treeEntry
	for _, de := range des {
		name := de.Name()
		p := filepath.Join(dir, name)
		switch t := de.Type(); {
		case name == ".git":
			return nil, false, fmt.Errorf("%s: a .git entry in a non-git source", name)
		case t.IsDir():
			sub, empty, err := treeHash(ctx, p)
			if err != nil {
				return nil, false, err
			}
			if !empty {
				entries = append(entries, treeEntry{name + "/", "40000", sub})
			}
		case t&os.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return nil, false, err
			}
			entries = append(entries, treeEntry{name, "120000", gitObject("blob", []byte(target))})
		case t.IsRegular():
			fi, err := de.Info()
			if err != nil {
				return nil, false, err
			}
			blob, err := blobHash(p, fi.Size())
			if err != nil {
				return nil, false, err
			}
			mode := "100644"
			if fi.Mode()&0o100 != 0 {
				mode = "100755"
			}
			entries = append(entries, treeEntry{name, mode, blob})
		default:
			return nil, false, fmt.Errorf("%s: not a file, directory or symlink", name)
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
	return gitObject("tree", b.Bytes()), false, nil
}

func gitObject(kind string, content []byte) []byte {
	h := sha1.New()
	h.Write([]byte(kind + " " + strconv.Itoa(len(content)) + "\x00"))
	h.Write(content)
	return h.Sum(nil)
}

func blobHash(path string, size int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha1.New()
	h.Write([]byte("blob " + strconv.FormatInt(size, 10) + "\x00"))
	n, err := io.Copy(h, f)
	if err != nil {
		return nil, err
	}
	if n != size {
		return nil, fmt.Errorf("%s changed while hashing", filepath.Base(path))
	}
	return h.Sum(nil), nil
}

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
