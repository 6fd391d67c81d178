package client

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// zipEpoch is every entry's time: the same files give the same archive
// (and the same archive sha256 in the provenance).
var zipEpoch = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)

// Dir is a local directory planned for upload by PackDir.
type Dir struct {
	Root     string   // absolute path
	Files    []string // slash-separated paths relative to Root, sorted; .git/… included
	Git      bool     // Files holds what git tracks plus .git
	Warnings []string // things the user should know before the upload
}

// PackDir plans the upload of dir. In a git checkout (dir is the top of
// its work tree) it takes what `git ls-files` lists plus the .git
// directory, so build outputs, ignored and untracked files stay home. A
// directory that is not a git checkout is taken whole, with a warning.
func PackDir(ctx context.Context, dir string) (*Dir, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", dir)
	}
	d := &Dir{Root: abs}
	top, gitErr := gitOut(ctx, abs, "rev-parse", "--show-toplevel")
	top = strings.TrimSpace(top)
	if real, err := filepath.EvalSymlinks(top); err == nil {
		top = real
	}
	switch {
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case gitErr != nil:
		d.Warnings = append(d.Warnings, fmt.Sprintf("%s is not a git checkout: uploading every file in it (build outputs and untracked files included); the provenance will have no git commit", dir))
		return d, d.walkAll()
	case top != abs:
		d.Warnings = append(d.Warnings, fmt.Sprintf("%s is inside the git checkout %s but not its top: uploading the files git tracks under it, without .git; the provenance will have no git commit", dir, top))
		return d, d.tracked(ctx)
	}
	if err := d.tracked(ctx); err != nil {
		return nil, err
	}
	if err := d.gitDir(); err != nil {
		return nil, err
	}
	if st, err := gitOut(ctx, abs, "status", "--porcelain=v1", "-z", "--untracked-files=no", "--ignore-submodules=all"); err == nil && st != "" {
		d.Warnings = append(d.Warnings, "the checkout has uncommitted changes: the working-tree files are built, while the provenance names the last commit")
	}
	return d, nil
}

// gitOut runs git in dir and returns its stdout.
func gitOut(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_OPTIONAL_LOCKS=0", "LC_ALL=C")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(errb.String())
		if msg == "" {
			msg = err.Error()
		}
		return "", fmt.Errorf("git %s: %s", strings.Join(args, " "), msg)
	}
	return out.String(), nil
}

// tracked lists what git tracks under Root, skipping submodules and files
// deleted from the work tree.
func (d *Dir) tracked(ctx context.Context) error {
	out, err := gitOut(ctx, d.Root, "ls-files", "-z", "--cached")
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	var missing, submodules int
	for _, p := range strings.Split(out, "\x00") {
		if p == "" || seen[p] {
			continue // conflicted paths are listed once per stage
		}
		seen[p] = true
		fi, err := os.Lstat(filepath.Join(d.Root, filepath.FromSlash(p)))
		switch {
		case err != nil:
			missing++
			continue
		case fi.IsDir():
			submodules++ // a gitlink
			continue
		case !fi.Mode().IsRegular() && fi.Mode()&fs.ModeSymlink == 0:
			continue
		}
		d.Files = append(d.Files, p)
	}
	d.Git = true
	if missing > 0 {
		d.Warnings = append(d.Warnings, fmt.Sprintf("%d tracked file(s) are missing from the work tree and are not uploaded", missing))
	}
	if submodules > 0 {
		d.Warnings = append(d.Warnings, fmt.Sprintf("%d submodule(s) are not uploaded (kettle builds without submodules)", submodules))
	}
	slices.Sort(d.Files)
	return nil
}

// gitDir adds .git (without hooks, which the server drops anyway).
func (d *Dir) gitDir() error {
	g := filepath.Join(d.Root, ".git")
	fi, err := os.Lstat(g)
	if err != nil {
		return fmt.Errorf("read .git: %w", err)
	}
	if !fi.IsDir() {
		d.Warnings = append(d.Warnings, ".git is not a directory (a worktree or submodule checkout): uploading without it; the provenance will have no git commit")
		return nil
	}
	if _, err := os.Stat(filepath.Join(g, "objects", "info", "alternates")); err == nil {
		d.Warnings = append(d.Warnings, ".git borrows objects from another repository (alternates), which are not uploaded: the server may not read the commit")
	}
	var files []string
	err = filepath.WalkDir(g, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(d.Root, p)
		rel = filepath.ToSlash(rel)
		switch {
		case e.IsDir() && rel == ".git/hooks":
			return filepath.SkipDir
		case e.IsDir():
			files = append(files, rel+"/")
		case e.Type().IsRegular():
			if !strings.HasSuffix(rel, ".lock") {
				files = append(files, rel)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read .git: %w", err)
	}
	d.Files = append(d.Files, files...)
	slices.Sort(d.Files)
	return nil
}

// walkAll takes every regular file, symlink and directory under Root.
func (d *Dir) walkAll() error {
	return filepath.WalkDir(d.Root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == d.Root {
			return nil
		}
		rel, _ := filepath.Rel(d.Root, p)
		rel = filepath.ToSlash(rel)
		switch {
		case e.IsDir():
			d.Files = append(d.Files, rel+"/")
		case e.Type().IsRegular(), e.Type()&fs.ModeSymlink != 0:
			d.Files = append(d.Files, rel)
		}
		return nil
	})
}

// WriteZip writes the planned files as a ZIP to w, streaming: nothing is
// held whole in memory. Exec bits and symbolic links are kept; .git
// objects (already compressed) are stored, the rest deflated.
func (d *Dir) WriteZip(ctx context.Context, w io.Writer) error {
	zw := zip.NewWriter(w)
	for _, name := range d.Files {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := d.addEntry(zw, name); err != nil {
			return err
		}
	}
	return zw.Close()
}

func (d *Dir) addEntry(zw *zip.Writer, name string) error {
	p := filepath.Join(d.Root, filepath.FromSlash(strings.TrimSuffix(name, "/")))
	if strings.HasSuffix(name, "/") {
		h := &zip.FileHeader{Name: name, Method: zip.Store, Modified: zipEpoch}
		h.SetMode(fs.ModeDir | 0o755)
		_, err := zw.CreateHeader(h)
		return err
	}
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) && strings.HasPrefix(name, ".git/") {
		return nil // git rewrote its files while we packed (gc, index refresh)
	}
	if err != nil {
		return fmt.Errorf("pack %s: %w", name, err)
	}
	h := &zip.FileHeader{Name: name, Method: zip.Deflate, Modified: zipEpoch}
	if fi.Mode()&fs.ModeSymlink != 0 {
		target, err := os.Readlink(p)
		if err != nil {
			return fmt.Errorf("pack %s: %w", name, err)
		}
		h.Method = zip.Store
		h.SetMode(fs.ModeSymlink | 0o777)
		zf, err := zw.CreateHeader(h)
		if err != nil {
			return err
		}
		_, err = io.WriteString(zf, target)
		return err
	}
	if !fi.Mode().IsRegular() {
		return nil
	}
	mode := fs.FileMode(0o644)
	if fi.Mode().Perm()&0o111 != 0 {
		mode = 0o755
	}
	h.SetMode(mode)
	if strings.HasPrefix(name, ".git/objects/") {
		h.Method = zip.Store
	}
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("pack %s: %w", name, err)
	}
	defer f.Close()
	zf, err := zw.CreateHeader(h)
	if err != nil {
		return err
	}
	if _, err := io.Copy(zf, f); err != nil {
		return fmt.Errorf("pack %s: %w", name, err)
	}
	return nil
}

// Archive returns an opener for Request.Archive: each call streams a fresh
// ZIP through a pipe.
func (d *Dir) Archive(ctx context.Context) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(d.WriteZip(ctx, pw)) }()
		return pr, nil
	}
}

// SourceName is the upload's file name: the directory's name plus .zip, so
// the result's top directory is named after it.
func (d *Dir) SourceName() string {
	base := path.Base(filepath.ToSlash(d.Root))
	if base == "/" || base == "." || base == "" {
		base = "source"
	}
	return base + ".zip"
}
