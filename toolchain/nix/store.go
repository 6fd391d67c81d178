package nix

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/kettle-build/kettle/internal/rmtree"
	"github.com/kettle-build/kettle/toolchain"
)

// jobStore is the per-job Nix state, all under the job's cache directory
// (which no other job can name):
//
//	nix/store  mounted at /nix in every Nix step: the store, its database,
//	           gcroots; created empty, written only inside the sandbox
//	nix/conf   nix.conf and an empty flake registry, read-only
//	nix/home   HOME and the XDG dirs (fetcher and evaluation caches)
//	nix/eval   evaluation's JSON output
//	nix/work   the working directory of steps that must not see the project
type jobStore struct {
	base, store, conf, home, eval, work string
}

// storeConf is the whole Nix configuration of a job (NIX_CONF_DIR; no
// user or system nix.conf is read). Single-user Nix in kettle's sandbox:
// builders run in that sandbox (sandbox = false: Nix's own sandbox cannot
// nest in bubblewrap without user namespaces), no build users, no binary
// caches or remote builders, no hooks or plugins. Evaluation is pure and
// restricted: no import-from-derivation, no builtins.fetch* of URLs but
// the lock's own (allowed-uris: flake.lock's tarball, file and git inputs
// pass Nix's URI check with their exact URL; evaluation is offline anyway),
// no registry lookups, no evaluation cache (a builder of the fetch phase
// could write one for the build's evaluation); nixConfig of the flake is not
// accepted (Nix then only warns, and honours just bash-prompt* and
// flake-registry, which use-registries = false makes moot).
const storeConf = `# written by kettle for one job
experimental-features = nix-command flakes
sandbox = false
sandbox-fallback = false
build-users-group =
substituters =
trusted-substituters =
trusted-public-keys =
require-sigs = true
builders =
accept-flake-config = false
allow-import-from-derivation = false
pure-eval = true
restrict-eval = true
allowed-uris = %s
allow-unsafe-native-code-during-evaluation = false
use-registries = false
flake-registry = %s
auto-optimise-store = false
eval-cache = false
keep-failed = false
fallback = false
warn-dirty = false
post-build-hook =
pre-build-hook =
diff-hook =
netrc-file = /dev/null
plugin-files =
secret-key-files =
trusted-users =
min-free = 0
max-jobs = auto
`

const emptyRegistry = `{"flakes":[],"version":2}` + "\n"

// newJobStore creates the job's Nix directories under cacheDir. A leftover
// of an earlier attempt is removed first: nothing of it may be reused.
// allowedURIs are the lock's input URLs (checked by ParseLock: https, no
// space, control character or '#', so none can break a nix.conf line).
func newJobStore(cacheDir string, allowedURIs []string) (*jobStore, error) {
	for _, u := range allowedURIs {
		if strings.ContainsAny(u, " \t\r\n#\x00") {
			return nil, fmt.Errorf("URL %q cannot go into nix.conf", u)
		}
	}
	base := filepath.Join(cacheDir, "nix")
	j := &jobStore{base: base, store: filepath.Join(base, "store"), conf: filepath.Join(base, "conf"),
		home: filepath.Join(base, "home"), eval: filepath.Join(base, "eval"), work: filepath.Join(base, "work")}
	if err := j.remove(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, err
	}
	for _, d := range []string{base, j.store, j.conf, j.home, j.eval, j.work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return nil, err
		}
	}
	reg := filepath.Join(j.conf, "registry.json")
	if err := os.WriteFile(reg, []byte(emptyRegistry), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(j.conf, "nix.conf"), []byte(fmt.Sprintf(storeConf, strings.Join(allowedURIs, " "), reg)), 0o644); err != nil {
		return nil, err
	}
	return j, nil
}

// env is the environment of every Nix step: the base environment without
// anything that would point Nix at another store, daemon or configuration.
func (j *jobStore) env(base []string) []string {
	env := toolchain.UnsetEnv(base, "NIX_PATH", "NIX_REMOTE", "NIX_STORE_DIR", "NIX_STORE", "NIX_STATE_DIR",
		"NIX_LOG_DIR", "NIX_DATA_DIR", "NIX_CONF_DIR", "NIX_USER_CONF_FILES", "NIX_DAEMON_SOCKET_PATH",
		"NIX_SSL_CERT_FILE", "NIX_SHOW_STATS", "XDG_CONFIG_DIRS", "XDG_DATA_DIRS", "XDG_RUNTIME_DIR",
		"GIT_CONFIG_SYSTEM", "GIT_CONFIG_GLOBAL", "GIT_DIR", "GIT_WORK_TREE", "GIT_CONFIG_PARAMETERS", "TMPDIR")
	h := j.home
	return toolchain.SetEnv(env, "HOME="+h, "XDG_CACHE_HOME="+h+"/cache", "XDG_STATE_HOME="+h+"/state",
		"XDG_DATA_HOME="+h+"/data", "XDG_CONFIG_HOME="+h+"/config",
		"NIX_CONF_DIR="+j.conf, "NIX_USER_CONF_FILES="+filepath.Join(j.conf, "nix.conf"),
		// The sandbox's /tmp: the host's TMPDIR is not mounted.
		"TMPDIR=/tmp",
		"GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_TERMINAL_PROMPT=0",
		// Nix runs git on the project (a git flake): settings that run a
		// program are overridden above any repository config (kettle's
		// extraction already keeps only inert keys).
		"GIT_CONFIG_COUNT=4",
		"GIT_CONFIG_KEY_0=core.fsmonitor", "GIT_CONFIG_VALUE_0=false",
		"GIT_CONFIG_KEY_1=core.hooksPath", "GIT_CONFIG_VALUE_1=/dev/null",
		"GIT_CONFIG_KEY_2=core.untrackedCache", "GIT_CONFIG_VALUE_2=false",
		"GIT_CONFIG_KEY_3=core.sshCommand", "GIT_CONFIG_VALUE_3=false")
}

// remove deletes the job's Nix state; store paths are read-only
// directories (rmtree restores write permission without following the
// symlinks the build wrote).
func (j *jobStore) remove() error {
	if err := rmtree.RemoveAll(j.base); err != nil {
		return fmt.Errorf("remove the job's Nix store: %w", err)
	}
	return nil
}
