package gomod

import (
	"archive/zip"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// ErrUnpinned and ErrMismatch report a module in the download cache that
// go.sum does not pin, or pins to another hash.
var (
	ErrUnpinned = errors.New("not pinned by go.sum")
	ErrMismatch = errors.New("checksum mismatch with go.sum")
)

// VerifyCache checks every module zip and go.mod file that `go mod download`
// left in modcache against go.sum, hashing them here (go's dirhash "h1"
// algorithm) rather than trusting the .ziphash files go wrote. go does the
// same check while downloading; this second one does not depend on the
// fetch having run go the way kettle meant it to. It returns how many zips
// were checked.
func VerifyCache(modcache string, sum *Sum) (int, error) {
	root := filepath.Join(modcache, "cache", "download")
	n := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == root {
				return fs.SkipAll // nothing was downloaded
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return fmt.Errorf("module cache: unexpected symlink %s", p)
		}
		ext := filepath.Ext(p)
		if ext != ".zip" && ext != ".mod" {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		escPath, file, ok := strings.Cut(filepath.ToSlash(rel), "/@v/")
		if !ok || strings.Contains(file, "/") {
			return nil // not a module download (e.g. sumdb data)
		}
		modPath, err1 := unescape(escPath)
		version, err2 := unescape(strings.TrimSuffix(file, ext))
		if err1 != nil || err2 != nil {
			return fmt.Errorf("module cache: bad file name %s", rel)
		}
		var got string
		if ext == ".zip" {
			got, err = HashZip(p)
		} else {
			got, err = HashGoMod(p)
		}
		if err != nil {
			return fmt.Errorf("hash %s@%s: %w", modPath, version, err)
		}
		want, pinned := sum.Lookup(modPath, version, ext == ".mod")
		switch {
		case !pinned && ext == ".zip":
			return fmt.Errorf("%s@%s: %w", modPath, version, ErrUnpinned)
		case !pinned:
			// go records a go.mod in go.sum before it uses it for the
			// build (-mod=readonly refuses one missing there); an extra
			// one in the cache is inert.
			return nil
		case got != want:
			what := ""
			if ext == ".mod" {
				what = "/go.mod"
			}
			return fmt.Errorf("%s@%s%s: %w (downloaded h1:%s, go.sum h1:%s)", modPath, version, what, ErrMismatch, got, want)
		}
		if ext == ".zip" {
			n++
		}
		return nil
	})
	return n, err
}

// HashZip is go's dirhash.HashZip without the "h1:" prefix: sha256 over the
// sorted lines "<hex sha256 of file>  <name>\n" of every file in the zip.
func HashZip(path string) (string, error) {
	z, err := zip.OpenReader(path)
	if err != nil {
		return "", err
	}
	defer z.Close()
	var names []string
	files := map[string]*zip.File{}
	for _, f := range z.File {
		if _, dup := files[f.Name]; dup {
			return "", fmt.Errorf("zip: duplicate entry %q", f.Name)
		}
		files[f.Name] = f
		names = append(names, f.Name)
	}
	return hash1(names, func(name string) (io.ReadCloser, error) { return files[name].Open() })
}

// HashGoMod is the h1 hash go.sum records for a go.mod file ("/go.mod"
// lines): dirhash of the single file named go.mod.
func HashGoMod(path string) (string, error) {
	return hash1([]string{"go.mod"}, func(string) (io.ReadCloser, error) { return os.Open(path) })
}

// hash1 is dirhash.Hash1.
func hash1(names []string, open func(string) (io.ReadCloser, error)) (string, error) {
	h := sha256.New()
	names = append([]string(nil), names...)
	sort.Strings(names)
	for _, name := range names {
		if strings.Contains(name, "\n") {
			return "", errors.New("file name contains a newline")
		}
		r, err := open(name)
		if err != nil {
			return "", err
		}
		fh := sha256.New()
		_, err = io.Copy(fh, r)
		r.Close()
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%x  %s\n", fh.Sum(nil), name)
	}
	return base64.StdEncoding.EncodeToString(h.Sum(nil)), nil
}

// unescape reverses go's module cache escaping ("!x" stands for "X").
func unescape(s string) (string, error) {
	var b strings.Builder
	bang := false
	for _, r := range s {
		switch {
		case bang:
			if r < 'a' || r > 'z' {
				return "", fmt.Errorf("bad escape in %q", s)
			}
			b.WriteRune(r - 'a' + 'A')
			bang = false
		case r == '!':
			bang = true
		case r >= 'A' && r <= 'Z':
			return "", fmt.Errorf("unescaped upper case in %q", s)
		default:
			b.WriteRune(r)
		}
	}
	if bang {
		return "", fmt.Errorf("trailing ! in %q", s)
	}
	return b.String(), nil
}
