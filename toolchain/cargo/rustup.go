package cargo

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/kettle-build/kettle/provenance"
	"github.com/kettle-build/kettle/toolchain"
)

// resolveTool finds and hashes cargo or rustc. Under rustup the PATH entry
// is a shim, so `rustup which <name>` gives the toolchain's binary, which
// is what gets hashed and run; without rustup the tool comes from PATH.
func resolveTool(ctx context.Context, w *toolchain.Workspace, name string) (provenance.Tool, string, error) {
	path, ok := "", false
	if rustup, err := toolchain.LookPath(w.Env, "rustup"); err == nil {
		path, ok = rustupWhich(ctx, w.Env, rustup, name)
	}
	if !ok {
		var err error
		if path, err = toolchain.FindTool(ctx, w.Env, name); err != nil {
			return provenance.Tool{}, "", err
		}
	}
	t, err := toolchain.HashTool(ctx, w, name, path)
	return t, path, err
}

type whichEntry struct{ path, settings, bin string }

// whichCache remembers rustup's answers for the life of the process.
var whichCache = struct {
	sync.Mutex
	m map[string]whichEntry
}{m: map[string]whichEntry{}}

// rustupWhich asks rustup for the binary of name. Answers are cached per
// process while rustup's settings file and the binary are unchanged: a
// `rustup which` costs tens of milliseconds on every build otherwise.
func rustupWhich(ctx context.Context, env []string, rustup, name string) (string, bool) {
	home := toolchain.Getenv(env, "RUSTUP_HOME")
	if home == "" {
		home = filepath.Join(toolchain.Getenv(env, "HOME"), ".rustup")
	}
	settings := toolchain.FileID(filepath.Join(home, "settings.toml"))
	key := strings.Join([]string{name, rustup, home, toolchain.Getenv(env, "RUSTUP_TOOLCHAIN"), toolchain.Getenv(env, "PATH")}, "\x00")
	whichCache.Lock()
	c, ok := whichCache.m[key]
	whichCache.Unlock()
	if ok && c.settings == settings && c.bin == toolchain.FileID(c.path) {
		return c.path, true
	}
	cmd := exec.CommandContext(ctx, rustup, "which", name)
	cmd.Env = env
	out, err := cmd.Output()
	if err != nil {
		return "", false
	}
	p := strings.TrimSpace(string(out))
	if p == "" || !isExec(p) {
		return "", false
	}
	if p, err = filepath.EvalSymlinks(p); err != nil {
		return "", false
	}
	whichCache.Lock()
	whichCache.m[key] = whichEntry{path: p, settings: settings, bin: toolchain.FileID(p)}
	whichCache.Unlock()
	return p, true
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}
