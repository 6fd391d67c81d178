package gomod

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/kettle-build/kettle/toolchain"
)

// Every build gets a fresh GOCACHE: a cache shared between builds would let
// one build's outputs stand in for another's. Compiling the standard
// library into each fresh cache would cost most of a small build's time, so
// kettle compiles it once per go binary, in this trusted process and
// outside any build (no project input is involved: `go build -trimpath
// std` with the builds' settings, from the hashed GOROOT), and seeds each
// build's GOCACHE with symlinks to those entries. The seed directory is
// bound read-only into the build's sandbox, so nothing a build runs can
// change an entry another build reads: writing through a link fails
// (EROFS) whatever the file's owner and mode, and removing or replacing a
// link only changes the build's own GOCACHE. (Hard links, used before,
// share the inode: a build that could chmod a file it owns inside the
// sandbox could rewrite the seed for every later build.)
//
// go never rewrites a valid cache entry in place (it only adds entries and
// touches modification times, which fails harmlessly on the read-only
// seed); trim.txt, which go does rewrite, is not shared.

// StdCacheRoot is where the standard library caches are kept, one directory
// per go binary; empty means <user cache dir>/kettle/go-std.
var StdCacheRoot = ""

var stdMu sync.Mutex // one seed build at a time per process

// PrepareStdCache builds the standard library cache for the go binary in
// env's PATH, if it is not there yet, and returns its directory. The
// service may call it at start-up so that no build waits for it.
func PrepareStdCache(ctx context.Context, env []string) (string, error) {
	p, err := toolchain.FindTool(ctx, env, "go")
	if err != nil {
		return "", err
	}
	digest, err := toolchain.SHA256File(p)
	if err != nil {
		return "", err
	}
	return prepareStdCache(ctx, env, p, digest)
}

func prepareStdCache(ctx context.Context, env []string, goBin, goDigest string) (string, error) {
	root := StdCacheRoot
	if root == "" {
		ucd, err := os.UserCacheDir()
		if err != nil {
			return "", err
		}
		root = filepath.Join(ucd, "kettle", "go-std")
	}
	root, err := filepath.Abs(root) // the builds' GOCACHE links name it
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, goDigest[:32])
	if fi, err := os.Stat(filepath.Join(dir, "README")); err == nil && fi.Mode().IsRegular() {
		return dir, nil
	}
	stdMu.Lock()
	defer stdMu.Unlock()
	if _, err := os.Stat(filepath.Join(dir, "README")); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", err
	}
	removeStale(root)
	tmp, err := os.MkdirTemp(root, ".tmp-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	cache := filepath.Join(tmp, "cache")
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "std")
	cmd.Env = toolchain.SetEnv(stripGoEnv(env),
		"GOCACHE="+cache, "GOFLAGS=", "GOTOOLCHAIN=local", "GOENV=off", "GOWORK=off",
		"CGO_ENABLED=0", "GOPROXY=off", "TMPDIR="+tmp)
	cmd.Env = toolchain.SetEnv(cmd.Env, privateHome(filepath.Join(tmp, "home"))...)
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build std: %w: %s", err, strings.TrimSpace(string(out)))
	}
	// go rewrites trim.txt in place now and then: keep it out of the seed.
	os.Remove(filepath.Join(cache, "trim.txt"))
	err = filepath.WalkDir(cache, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		return os.Chmod(p, 0o444)
	})
	if err != nil {
		return "", err
	}
	if err := os.Rename(cache, dir); err != nil {
		if _, serr := os.Stat(filepath.Join(dir, "README")); serr == nil {
			return dir, nil // another process won the race
		}
		return "", err
	}
	return dir, nil
}

// removeStale deletes what a killed process left of an earlier seed build.
func removeStale(root string) {
	ents, err := os.ReadDir(root)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".tmp-") {
			continue
		}
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > time.Hour {
			os.RemoveAll(filepath.Join(root, e.Name()))
		}
	}
}

// seedCache fills dst (an empty GOCACHE) with symlinks to the files of
// the seed cache src (an absolute path), which the build must see
// read-only at the same path.
func seedCache(src, dst string) error {
	if !filepath.IsAbs(src) {
		return fmt.Errorf("seed cache %s: not absolute", src)
	}
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case !d.Type().IsRegular() || rel == "trim.txt":
			return nil
		}
		return os.Symlink(p, target)
	})
}
