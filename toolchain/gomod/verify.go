package gomod

import (
	"archive/zip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb/dirhash"
)

// ErrUnpinned and ErrMismatch report a module in the download cache that
// go.sum does not pin, or pins to another hash.
var (
	ErrUnpinned = errors.New("not pinned by go.sum")
	ErrMismatch = errors.New("checksum mismatch with go.sum")
)

// VerifyCache checks every module zip and go.mod file that `go mod download`
// left in modcache against go.sum, hashing them here (go's dirhash "h1"
// algorithm, golang.org/x/mod/sumdb/dirhash) rather than trusting the
// .ziphash files go wrote, and then the extracted directory of every zip,
// which is what the build compiles. go does the same checks while
// downloading; these do not depend on the fetch having run go the way
// kettle meant it to. It returns how many zips were checked.
//
// linked names the extracted directories that are links to shared-cache
// entries (checked against go.sum when they were filled, and by the
// caller for being still those links): they are not hashed again. go may
// still have downloaded their zip (`go mod download` fetches a module's
// zip even when the extracted directory is there), which is checked.
func VerifyCache(modcache string, sum *Sum, linked func(dir string) bool) (int, error) {
	root := filepath.Join(modcache, "cache", "download")
	var zips []module.Version
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
		modPath, err1 := module.UnescapePath(escPath)
		version, err2 := module.UnescapeVersion(strings.TrimSuffix(file, ext))
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
			zips = append(zips, module.Version{Path: modPath, Version: version})
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if err := verifyExtracted(modcache, sum, zips, linked); err != nil {
		return 0, err
	}
	return len(zips), nil
}

// verifyExtracted hashes the extracted directory of each module (named
// "<module>@<version>/<file>" as in its zip) against go.sum. No symlink is
// followed: go never extracts one.
func verifyExtracted(modcache string, sum *Sum, mods []module.Version, linked func(string) bool) error {
	if len(mods) == 0 {
		return nil
	}
	root, err := os.OpenRoot(modcache)
	if err != nil {
		return err
	}
	defer root.Close()
	for _, m := range mods {
		ep, err1 := module.EscapePath(m.Path)
		ev, err2 := module.EscapeVersion(m.Version)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("module cache: cannot escape %s", m)
		}
		dir := ep + "@" + ev
		if linked != nil && linked(dir) {
			continue
		}
		if _, err := root.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
			continue // not extracted: the build cannot use it either
		}
		got, err := HashTree(root, dir, m.Path+"@"+m.Version, false)
		if err != nil {
			return fmt.Errorf("hash extracted %s: %w", m, err)
		}
		if want, _ := sum.Lookup(m.Path, m.Version, false); got != want {
			return fmt.Errorf("%s (extracted): %w (h1:%s, go.sum h1:%s)", m, ErrMismatch, got, want)
		}
	}
	return nil
}

// HashZip is dirhash.HashZip without the "h1:" prefix, refusing a zip
// with two entries of one name (dirhash would hash one of them twice).
func HashZip(path string) (string, error) {
	z, err := zip.OpenReader(path)
	if err != nil {
		return "", err
	}
	seen := map[string]bool{}
	for _, f := range z.File {
		if seen[f.Name] {
			z.Close()
			return "", fmt.Errorf("zip: duplicate entry %q", f.Name)
		}
		seen[f.Name] = true
	}
	z.Close()
	h, err := dirhash.HashZip(path, dirhash.Hash1)
	return strings.TrimPrefix(h, "h1:"), err
}

// HashGoMod is the h1 hash go.sum records for a go.mod file ("/go.mod"
// lines): dirhash of the single file named go.mod.
func HashGoMod(path string) (string, error) {
	h, err := dirhash.Hash1([]string{"go.mod"}, func(string) (io.ReadCloser, error) { return os.Open(path) })
	return strings.TrimPrefix(h, "h1:"), err
}
