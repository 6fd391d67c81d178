// Package nix is the Nix flake driver. Every Nix command runs in the
// sandbox against a Nix store of the job's own (a directory kettle creates
// under the job's cache, mounted at /nix): nothing of the host's /nix or
// /etc/nix is visible, and nothing a job writes reaches another job.
//
// The plan of one build:
//
//  1. trusted, in Go: flake.lock is parsed and checked (ParseLock); each
//     relative path input's NAR hash is computed through os.Root and
//     compared with the lock's narHash; remote inputs' hosts pass the
//     repo_url address policy.
//  2. sandbox, network, no project visible: kettle's own expression fetches
//     exactly the locked remote inputs (builtins.fetchTree, narHash checked
//     by Nix).
//  3. sandbox, offline: each relative path input is added to the store
//     (`nix store add-path --name source`), where Nix finds it by narHash.
//  4. sandbox, offline: evaluation (`nix show-derivation [--recursive]`, or
//     `nix derivation show` on Nix ≥ 2.15); its JSON is parsed here
//     (ParseGraph). Fixed-output derivations are the fetched dependencies.
//  5. sandbox, network, no project visible: the fixed-output derivations
//     are realised (Nix checks each against its hash).
//  6. sandbox, offline: `nix build`.
//  7. trusted: the executables in bin/ of the outputs evaluation predicted
//     are copied out of the job's store with toolchain.Outputs (no symlink
//     followed at any component).
//
// Nix runs single-user with a nix.conf kettle writes (storeConf); the
// flake's nixConfig is not trusted.
package nix

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/internal/lazyre"
	"github.com/kettle-build/kettle/provenance"
	"github.com/kettle-build/kettle/sandbox"
	"github.com/kettle-build/kettle/source"
	"github.com/kettle-build/kettle/toolchain"
)

// Fixed names of the driver.
const (
	LockfileName = "flake.lock"
	// BuildCommand is recorded in the provenance: the peer's command with
	// --json, which every Nix version has, instead of --print-out-paths.
	BuildCommand = "nix build --no-link --json --extra-experimental-features nix-command --extra-experimental-features flakes"
)

// commonFlags go on every nix command on top of kettle's nix.conf: flakes
// on; --no-update-lock-file makes Nix refuse a flake whose flake.nix needs
// inputs flake.lock does not lock (with --no-write-lock-file it would use
// them unlocked), and a flake without inputs needs no flake.lock; no
// import-from-derivation (that would build during evaluation); no binary
// cache (this builder builds everything it attests).
var commonFlags = []string{
	"--extra-experimental-features", "nix-command",
	"--extra-experimental-features", "flakes",
	"--no-update-lock-file",
	"--option", "allow-import-from-derivation", "false",
	"--option", "substituters", "",
}

// maxEvalJSON bounds the derivation JSON read back from the sandbox.
const maxEvalJSON = 256 << 20

// Driver builds Nix flakes. Use New; a Driver is for one build.
type Driver struct {
	nix      string   // resolved nix binary
	newCLI   bool     // `nix derivation show` (Nix ≥ 2.15)
	outPaths []string // outputs of the default package, from evaluation
	fetches  []Fetch
	lock     *Lock // nil without flake.lock
	job      *jobStore
	// checkURL applies the repo_url address policy to a remote input's
	// URL; tests replace it.
	checkURL func(ctx context.Context, url string) error
}

// New returns a Nix driver.
func New() toolchain.Driver { return &Driver{checkURL: policyCheck} }

func (d *Driver) Name() string         { return "nix" }
func (d *Driver) Title() string        { return "Nix" }
func (d *Driver) Lockfile() string     { return LockfileName }
func (d *Driver) BuildCommand() string { return BuildCommand }

// ArtifactRule names what Artifacts collects, for the NoArtifacts message.
func (d *Driver) ArtifactRule() string { return "no executable in bin/ of the outputs" }

// LockfileOptional: a flake without inputs has no flake.lock (Nix 2.8
// writes none); the provenance then records no lockfile hash.
func (d *Driver) LockfileOptional() bool { return true }

// policyCheck is source.CheckRepo's address policy (default: public
// addresses only) for a remote input's URL.
func policyCheck(ctx context.Context, u string) error {
	if err := source.CheckRepo(ctx, u, "", source.Policy{}); err != nil {
		msg := strings.ReplaceAll(failure.Message(err), "repo_url", "the URL")
		return errors.New(strings.ReplaceAll(msg, "repository host", "host"))
	}
	return nil
}

var versionRe = lazyre.New(`(\d+)\.(\d+)`)

// hasDerivationShow reports whether `nix derivation show` exists (Nix 2.15+).
func hasDerivationShow(version string) bool {
	m := versionRe.FindStringSubmatch(version)
	if m == nil {
		return true
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	return major > 2 || major == 2 && minor >= 15
}

// Inputs checks flake.lock, prepares the job's store (remote and path
// inputs) and evaluates the default package, all before any build step.
func (d *Driver) Inputs(ctx context.Context, w *toolchain.Workspace, lock *toolchain.Lock) (*toolchain.Inputs, error) {
	if !sandbox.Isolated(w.Runner) {
		// Only bubblewrap can mount the job's own store at /nix; elsewhere
		// Nix would use (and let builds write) the machine's store.
		return nil, failure.New(failure.UnsupportedToolchain, "Nix builds need the bwrap sandbox (each job gets its own Nix store at /nix)")
	}
	lockHash := lock.SHA256
	d.lock = &Lock{Remote: map[string]map[string]any{}}
	if lock.Data != nil {
		var err error
		if d.lock, err = ParseLock(lock.Data); err != nil {
			return nil, failure.Wrap(failure.InvalidSource, err, err.Error())
		}
	}
	if err := d.checkInputs(ctx, w); err != nil {
		return nil, err
	}
	tool, path, err := toolchain.ResolveTool(ctx, w, "nix")
	if err != nil {
		return nil, failure.Wrap(failure.InternalError, err, "nix is not usable on this builder")
	}
	if path == "/nix" || strings.HasPrefix(path, "/nix/") {
		// The job's store replaces /nix in the sandbox: a nix installed
		// into the machine's store would not be there.
		return nil, failure.New(failure.UnsupportedToolchain, "the builder's nix lives in /nix; kettle needs a nix installed outside /nix (e.g. Debian's nix-bin)")
	}
	d.nix, d.newCLI = path, hasDerivationShow(tool.Version)
	if d.job, err = newJobStore(w.CacheDir, d.lock.InputURLs); err != nil {
		return nil, failure.Wrap(failure.InternalError, err, "cannot create the job's Nix store")
	}
	if err := d.fetchInputs(ctx, w); err != nil {
		return nil, err
	}
	if err := d.addPathInputs(ctx, w); err != nil {
		return nil, err
	}
	top, all, err := d.evaluate(ctx, w)
	if err != nil {
		return nil, err
	}
	d.outPaths = nil
	for _, drv := range top.Derivations {
		for _, o := range drv.Outputs {
			if o.Path != "" {
				d.outPaths = append(d.outPaths, o.Path)
			}
		}
	}
	sort.Strings(d.outPaths)
	if len(d.outPaths) == 0 {
		return nil, failure.New(failure.BuildFailed, "the flake's default package has no output paths known before the build")
	}
	fetches, err := all.Fetches()
	if err != nil {
		return nil, failure.Wrap(failure.InvalidSource, err, err.Error())
	}
	d.fetches = fetches
	deps := make([]provenance.Dependency, 0, len(fetches))
	for _, f := range fetches {
		deps = append(deps, f.Dependency())
	}
	return &toolchain.Inputs{
		Lock:         lock,
		Toolchain:    provenance.Toolchain{tool},
		Dependencies: deps,
		Evaluation:   &provenance.Evaluation{DerivationCount: len(all.Derivations), FetchCount: len(fetches)},
		FlakeInputs:  d.lock.Inputs,
		MerkleLeaves: func(gitCommit, gitTree string) []string {
			return MerkleLeaves(gitCommit, gitTree, lockHash, fetches, tool)
		},
	}, nil
}

// checkInputs is the trusted part of step 1 beyond ParseLock: relative path
// inputs must hash (NAR, through os.Root) to the lock's narHash, and remote
// hosts must pass the address policy.
func (d *Driver) checkInputs(ctx context.Context, w *toolchain.Workspace) error {
	seen := map[string]bool{}
	for _, u := range d.lock.URLs {
		// One check per scheme and host: a lock of thousands of inputs on
		// one host costs one lookup.
		if pu, err := url.Parse(u); err == nil && pu.Host != "" {
			key := strings.ToLower(pu.Scheme + "://" + pu.Host)
			if seen[key] {
				continue
			}
			seen[key] = true
		}
		if err := d.checkURL(ctx, u); err != nil {
			if ctx.Err() != nil {
				return toolchain.CommandFailed(ctx, failure.InvalidSource, "flake.lock check", ctx.Err())
			}
			return failure.Wrap(failure.InvalidSource, err, "flake.lock refused: a remote input's "+err.Error())
		}
	}
	if len(d.lock.Paths) == 0 {
		return nil
	}
	root, err := os.OpenRoot(w.Dir)
	if err != nil {
		return failure.Wrap(failure.InternalError, err, "cannot open the project")
	}
	defer root.Close()
	for _, p := range d.lock.Paths {
		got, err := NARHash(root, p.Path)
		if err != nil {
			return failure.Wrap(failure.InvalidSource, err,
				fmt.Sprintf("flake.lock refused: path input %s cannot be read inside the project (missing, a symlink, a hard link or not a file tree)", quoteName(p.Node)))
		}
		if got != p.NarHash {
			// The computed hash is not printed: a refusal never tells the
			// client a hash of what the server read.
			return failure.New(failure.InvalidSource, "flake.lock refused: path input %s does not match its narHash", quoteName(p.Node))
		}
	}
	return nil
}

// fetchInputs is step 2: kettle's own expression, never the project's,
// fetches the locked remote inputs into the job's store. The project is
// not visible to this networked step.
func (d *Driver) fetchInputs(ctx context.Context, w *toolchain.Workspace) error {
	if len(d.lock.Remote) == 0 {
		return nil
	}
	js, err := json.Marshal(d.lock.Remote)
	if err != nil {
		return failure.Wrap(failure.InternalError, err, "cannot encode the flake inputs")
	}
	expr := "builtins.mapAttrs (n: a: (builtins.fetchTree a).outPath) (builtins.fromJSON " + nixString(string(js)) + ")"
	args := []string{d.nix, "eval", "--json", "--option", "restrict-eval", "false"}
	args = append(append(args, commonFlags...), "--expr", expr)
	if err := d.run(ctx, w, &sandbox.Cmd{Args: args, Dir: d.job.work, Network: true}); err != nil {
		return toolchain.CommandFailed(ctx, failure.DependencyFetchFailed, "nix fetch of the flake inputs", err)
	}
	return nil
}

// nixString quotes s as a Nix string literal.
func nixString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "${", `\${`, "\n", `\n`, "\r", `\r`, "\t", `\t`)
	return `"` + r.Replace(s) + `"`
}

// addPathInputs is step 3. The directory was hashed in step 1; if it were
// different now, its store path would not be the one the lock names and
// evaluation would fail, so nothing unchecked can be used.
func (d *Driver) addPathInputs(ctx context.Context, w *toolchain.Workspace) error {
	for _, p := range d.lock.Paths {
		args := []string{d.nix, "store", "add-path", "--name", "source"}
		args = append(append(args, commonFlags[:4]...), "./"+p.Path)
		if err := d.run(ctx, w, &sandbox.Cmd{Args: args}); err != nil {
			return toolchain.CommandFailed(ctx, failure.BuildFailed, "adding path input "+quoteName(p.Node)+" to the store", err)
		}
	}
	return nil
}

// evaluate is step 4: both evaluations in one offline sandbox step, their
// JSON written to files of the job (not the project) and read back here.
func (d *Driver) evaluate(ctx context.Context, w *toolchain.Workspace) (top, all *Graph, err error) {
	show := []string{"show-derivation"}
	if d.newCLI {
		show = []string{"derivation", "show"}
	}
	eval := d.job.eval
	for _, f := range []string{"top.json", "all.json"} {
		if err := os.Remove(filepath.Join(eval, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, nil, failure.Wrap(failure.InternalError, err, "cannot prepare the evaluation")
		}
	}
	// sh runs each nix with its stdout in a file; stderr goes to the log.
	script := `set -e; n=$1; shift; "$n" "$@" . >"$KETTLE_EVAL/top.json"; "$n" "$@" --recursive . >"$KETTLE_EVAL/all.json"`
	args := append([]string{"/bin/sh", "-c", script, "sh", d.nix}, show...)
	args = append(args, commonFlags...)
	var log strings.Builder
	c := &sandbox.Cmd{Args: args, Writable: []string{eval}, Env: []string{"KETTLE_EVAL=" + eval}}
	if err := d.runLogged(ctx, w, c, &log); err != nil {
		if ctx.Err() != nil {
			return nil, nil, toolchain.CommandFailed(ctx, failure.BuildFailed, "nix evaluation", err)
		}
		if strings.Contains(log.String(), "requires lock file changes") {
			return nil, nil, failure.Wrap(failure.InvalidSource, err, "flake.nix has inputs that flake.lock does not lock (commit an up-to-date flake.lock)")
		}
		return nil, nil, failure.Wrap(failure.BuildFailed, err, "nix evaluation of the flake failed (see the build log)")
	}
	graphs := make([]*Graph, 2)
	for i, f := range []string{"top.json", "all.json"} {
		b, err := readJobFile(eval, f, maxEvalJSON)
		if err == nil {
			graphs[i], err = ParseGraph(b)
		}
		if err != nil {
			return nil, nil, failure.Wrap(failure.InternalError, err, "cannot read nix's derivation output")
		}
	}
	return graphs[0], graphs[1], nil
}

// readJobFile reads dir/name (written in the sandbox) without following a
// symlink, only a regular file, at most max bytes.
func readJobFile(dir, name string, max int64) ([]byte, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", name)
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err == nil && int64(len(b)) > max {
		err = fmt.Errorf("%s: larger than %d bytes", name, max)
	}
	return b, err
}

func (d *Driver) ready() error {
	if d.nix == "" || d.job == nil {
		return errors.New("nix driver: Inputs must run first")
	}
	return nil
}

// Fetch is step 5: the fixed-output derivations are realised with network
// (their builders are project code: they run in the sandbox, under the
// fetch phase's network rules, with the job's store and not the project
// as their view). Nix checks every output against the hash recorded in
// the provenance.
func (d *Driver) Fetch(ctx context.Context, w *toolchain.Workspace) error {
	if err := d.ready(); err != nil {
		return err
	}
	if len(d.fetches) == 0 {
		return nil
	}
	args := []string{d.nix, "build", "--no-link", "--print-build-logs"}
	args = append(args, commonFlags...)
	for _, f := range d.fetches {
		// Paths come from Nix's JSON; never let one read as an option.
		if !storePathRe.MatchString(f.DrvPath) || !strings.HasSuffix(f.DrvPath, ".drv") {
			return failure.New(failure.InvalidSource, "fixed-output derivation %s has no valid .drv path", quoteName(f.Name))
		}
		args = append(args, d.installable(f.DrvPath))
	}
	if err := d.run(ctx, w, &sandbox.Cmd{Args: args, Dir: d.job.work, Network: true}); err != nil {
		return toolchain.CommandFailed(ctx, failure.DependencyFetchFailed, "nix fetch of fixed-output derivations", err)
	}
	return nil
}

// installable names a .drv's outputs on the command line.
func (d *Driver) installable(drvPath string) string {
	if d.newCLI {
		return drvPath + "^*"
	}
	return drvPath
}

// Build is step 6: `nix build` offline, in the job's store.
func (d *Driver) Build(ctx context.Context, w *toolchain.Workspace) error {
	if err := d.ready(); err != nil {
		return err
	}
	args := []string{d.nix, "build", "--no-link", "--json", "--offline", "--print-build-logs"}
	args = append(append(args, commonFlags...), ".")
	if err := d.run(ctx, w, &sandbox.Cmd{Args: args}); err != nil {
		return toolchain.CommandFailed(ctx, failure.BuildFailed, "nix build", err)
	}
	return nil
}

// storePathRe is one store path as evaluation prints it.
var storePathRe = lazyre.New(`^/nix/store/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+._?=-]+$`)

// Artifacts is step 7: the executables in bin/ of the default package's
// outputs (the paths evaluation predicted, not anything the build printed),
// read from the job's store through toolchain.Outputs: no symlink is
// followed at any component (a bin/ entry that is a symlink is not an
// artifact), only regular files, no hard link to a file outside the output.
func (d *Driver) Artifacts(ctx context.Context, w *toolchain.Workspace, dst string) ([]toolchain.Artifact, error) {
	if err := d.ready(); err != nil {
		return nil, err
	}
	outs, err := toolchain.OpenOutputs(d.job.store, 0)
	if err != nil {
		return nil, err
	}
	defer outs.Close()
	byName := map[string]toolchain.Artifact{}
	for _, out := range d.outPaths {
		if !storePathRe.MatchString(out) {
			return nil, fmt.Errorf("%w: output path %q is not a store path", toolchain.ErrUnsafeOutput, filepath.Base(out))
		}
		rel := strings.TrimPrefix(out, "/nix/")
		fi, err := outs.Lstat(rel)
		if err != nil {
			return nil, fmt.Errorf("output %s missing after the build: %w", filepath.Base(out), err)
		}
		if !fi.IsDir() {
			continue // a file or symlink output has no bin/
		}
		bin := rel + "/bin"
		entries, err := outs.ReadDir(bin)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if err := outs.ScanLinks(rel); err != nil {
			return nil, err
		}
		for _, e := range entries {
			fi, err := outs.Lstat(bin + "/" + e.Name())
			if err != nil {
				return nil, err
			}
			if !fi.Mode().IsRegular() {
				if fi.Mode()&fs.ModeSymlink != 0 {
					w.Log(fmt.Sprintf("kettle: bin/%s is a symlink: not collected", e.Name()))
				}
				continue
			}
			if fi.Mode()&0o111 == 0 {
				continue
			}
			a, err := outs.Copy(bin+"/"+e.Name(), dst, e.Name())
			if err != nil {
				return nil, fmt.Errorf("copy artifact: %w", err)
			}
			byName[a.Name] = a
		}
	}
	out := make([]toolchain.Artifact, 0, len(byName))
	for _, a := range byName {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Cleanup removes the job's Nix store and state (toolchain.Cleaner). Store
// paths are read-only and belong to the sandbox's user; when this process
// cannot make them writable itself (it is not root), the sandbox user does
// it, in one more sandbox step.
func (d *Driver) Cleanup(w *toolchain.Workspace) error {
	if d.job == nil {
		return nil
	}
	err := d.job.remove()
	if err == nil || w.Runner == nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := &sandbox.Cmd{Args: []string{"/bin/chmod", "-R", "u+w", "/nix"}, Dir: d.job.work, Env: []string{"PATH=/usr/bin:/bin"},
		Mounts: []sandbox.Mount{{Source: d.job.store, Target: "/nix", Writable: true}}, Output: io.Discard}
	if rerr := w.Runner.Run(ctx, c); rerr != nil {
		return fmt.Errorf("%w (making it writable in the sandbox: %v)", err, rerr)
	}
	return d.job.remove()
}

// run runs one Nix step in the sandbox: the job's store at /nix
// (writable), kettle's nix.conf read-only, HOME and state in the job.
func (d *Driver) run(ctx context.Context, w *toolchain.Workspace, c *sandbox.Cmd) error {
	return d.runLogged(ctx, w, c, nil)
}

// runLogged is run, also copying the (scrubbed) output to also.
func (d *Driver) runLogged(ctx context.Context, w *toolchain.Workspace, c *sandbox.Cmd, also *strings.Builder) error {
	extra := c.Env
	c.Env = toolchain.SetEnv(d.job.env(w.Env), extra...)
	c.Mounts = append(c.Mounts, sandbox.Mount{Source: d.job.store, Target: "/nix", Writable: true})
	c.ReadOnly = append(c.ReadOnly, d.job.conf)
	// The store is also listed as writable (bound a second time at its own
	// path): the sandbox counts the disk use of Dir and Writable, and a job
	// must not fill the disk through /nix.
	c.Writable = append(c.Writable, d.job.home, d.job.store)
	c.Limits = w.Limits
	log := w.Log
	sw := *w
	// Whole lines through ScrubLine, never pieces that could split a path
	// it must remove: Log, not LogPiece.
	sw.LogPiece = nil
	sw.Log = func(l string) {
		l = ScrubLine(l)
		if also != nil && also.Len() < 1<<20 {
			also.WriteString(l + "\n")
		}
		log(l)
	}
	return toolchain.Run(ctx, &sw, c)
}

// gotHashRe finds the hash Nix prints after "got" ("NAR hash mismatch in
// input … got 'sha256-…'", a fixed-output mismatch's "got: sha256:…").
var gotHashRe = lazyre.New(`(got:?\s*'?)(sha(1|256|512)[-:][A-Za-z0-9+/=]+|[0-9a-z]{32,128})`)

// ScrubLine removes from a line of Nix output the hash Nix computed over
// something it read: a client must not learn the digest of a file it could
// not otherwise see, nor pin it in a second submission.
func ScrubLine(l string) string {
	if !strings.Contains(l, "got") {
		return l
	}
	return gotHashRe.ReplaceAllString(l, "${1}<hash withheld>")
}

func sha256hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
