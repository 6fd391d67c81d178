package pnpm

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/provenance"
	"github.com/kettle-build/kettle/toolchain"
)

// Local inputs are recorded as what they are: project code, not registry
// packages.
const (
	// LocalURIPrefix starts the uri of a local input: "file:<path>",
	// the path relative to the project root.
	LocalURIPrefix = toolchain.LocalURIPrefix
	// TreeDigestKey is the digest of a local directory: dirhash "h1" of
	// its tree (golang.org/x/mod/sumdb/dirhash.HashDir(dir, "", Hash1),
	// base64, without "h1:"): sha256 over the sorted lines
	// "<sha256 hex>  <relative path>\n" of every file under it.
	TreeDigestKey = "h1"
	// FileDigestKey is the digest of a local file (tarball, patch): hex
	// sha256 of its bytes.
	FileDigestKey = "sha256"
)

// PatchFiles reads the patch files that package.json names
// (pnpm.patchedDependencies): pnpm 10 lockfiles keep only the patch's
// hash, so the path comes from here. Paths leaving the project are an
// error. A missing or unparsable package.json names none (pnpm itself
// refuses it later).
func PatchFiles(pkgJSON []byte) ([]LocalRef, error) {
	var pj struct {
		Pnpm struct {
			PatchedDependencies map[string]string `json:"patchedDependencies"`
		} `json:"pnpm"`
	}
	if json.Unmarshal(pkgJSON, &pj) != nil {
		return nil, nil
	}
	var refs []LocalRef
	for key, p := range pj.Pnpm.PatchedDependencies {
		clean, err := insidePath(p)
		if err != nil {
			return nil, fmt.Errorf("package.json: patchedDependencies %q: patch %s: %v", clip(key), quotePath(p), err)
		}
		refs = append(refs, LocalRef{Kind: LocalPatch, Name: key, Path: clean})
	}
	return refs, nil
}

// localDependencies resolves each local input through root (no symlink
// may lead out of the project) and records it with its digest. A refusal
// names the lockfile's own path, never what is outside.
func localDependencies(root *os.Root, refs []LocalRef) ([]provenance.Dependency, error) {
	var deps []provenance.Dependency
	seen := map[string]bool{}
	for _, r := range refs {
		id := string(r.Kind) + "\x00" + r.Path + "\x00" + r.Name
		if seen[id] {
			continue
		}
		seen[id] = true
		d := provenance.Dependency{Name: r.Name, URI: LocalURIPrefix + r.Path}
		switch r.Kind {
		case LocalDir, LocalLink, LocalWorkspace:
			fi, err := root.Stat(r.Path)
			if err != nil || !fi.IsDir() {
				return nil, failure.New(failure.InvalidSource,
					"%s %s (%s) is not a directory inside the project", r.Kind, quotePath(r.Path), clip(r.Name))
			}
			h, err := HashTree(root, r.Path)
			if err != nil {
				return nil, failure.Wrap(failure.InvalidSource, err, fmt.Sprintf(
					"%s %s (%s): its files cannot be hashed (a symlink leaving the project, a directory symlink, or a special file)",
					r.Kind, quotePath(r.Path), clip(r.Name)))
			}
			d.Digest = provenance.Digest{TreeDigestKey: h}
		case LocalTarball, LocalPatch:
			sum, err := fileDigests(root, r.Path, r.Integrity)
			if err != nil {
				return nil, err
			}
			d.Digest = provenance.Digest{FileDigestKey: sum}
		default:
			return nil, fmt.Errorf("unknown local input kind %q", r.Kind)
		}
		deps = append(deps, d)
	}
	return deps, nil
}

// fileDigests hashes a local file of the project (regular, inside it) and
// checks it against the lockfile's integrity when there is one.
func fileDigests(root *os.Root, p, integrity string) (string, error) {
	f, err := root.Open(p)
	if err != nil {
		return "", failure.New(failure.InvalidSource, "%s is not a file inside the project", quotePath(p))
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return "", failure.New(failure.InvalidSource, "%s is not a regular file", quotePath(p))
	}
	h := sha256.New()
	algo, want, _ := strings.Cut(integrity, "-")
	sri := sriHash(algo)
	w := io.Writer(h)
	if sri != nil {
		w = io.MultiWriter(h, sri)
	}
	if _, err := io.Copy(w, f); err != nil {
		return "", failure.Wrap(failure.InvalidSource, err, "cannot read "+quotePath(p))
	}
	if sri != nil && base64.StdEncoding.EncodeToString(sri.Sum(nil)) != want {
		return "", failure.New(failure.InvalidSource, "%s does not match its integrity in pnpm-lock.yaml", quotePath(p))
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// HashTree is toolchain.HashTree of dir, following symlinks that stay
// inside root.
func HashTree(root *os.Root, dir string) (string, error) {
	return toolchain.HashTree(root, dir, "", true)
}

// copyLocal copies the local inputs into the fetch directory, read through
// root: pnpm fetch reads local packages' manifests and tarballs. Files at
// the top of the project are never copied (see copyFile). Only
// regular files are written (a symlink inside the project becomes a copy
// of the file it names there), so nothing in the fetch directory leads
// back into the project or out of it. Nothing of them runs: scripts and
// the pnpmfile are off in the fetch.
func copyLocal(root *os.Root, refs []LocalRef, dst string) error {
	out, err := os.OpenRoot(dst)
	if err != nil {
		return err
	}
	defer out.Close()
	copyFile := func(rel string) error {
		if !strings.Contains(rel, "/") {
			// The top of the fetch directory holds kettle's files only:
			// a local package at "." (link:.) must not bring the
			// project's .npmrc, package.json or lockfile along.
			return nil
		}
		in, err := root.Open(rel)
		if err != nil {
			return err
		}
		defer in.Close()
		fi, err := in.Stat()
		if err != nil || !fi.Mode().IsRegular() {
			return fmt.Errorf("%s: not a regular file", rel)
		}
		if err := out.MkdirAll(path.Dir(rel), 0o755); err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if fi.Mode()&0o111 != 0 {
			mode = 0o755
		}
		f, err := out.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, in); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}
	for _, r := range refs {
		switch r.Kind {
		case LocalTarball, LocalPatch:
			if err := copyFile(r.Path); err != nil {
				return err
			}
			continue
		}
		err := fs.WalkDir(root.FS(), r.Path, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				if d.Name() == "node_modules" && p != r.Path {
					return fs.SkipDir // installed by the build, not read by the fetch
				}
				return out.MkdirAll(p, 0o755)
			}
			return copyFile(p)
		})
		if err != nil {
			return err
		}
	}
	return nil
}
