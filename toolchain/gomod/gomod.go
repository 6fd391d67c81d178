// Package gomod is the Go modules toolchain driver. go.sum is the lockfile:
// `go mod download` fetches the modules with network (go checks each against
// go.sum, and kettle checks the cache again, hashing every module itself),
// then `go build -trimpath ./...` runs offline in the sandbox with
// GOPROXY=off and -mod=readonly, and every main package is an artifact named
// after its directory. docs/toolchains.md has the provenance details.
package gomod

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"go/version"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/mod/module"

	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/provenance"
	"github.com/kettle-build/kettle/sandbox"
	"github.com/kettle-build/kettle/toolchain"
)

// File names and the recorded build command.
const (
	SumFile = "go.sum"
	ModFile = "go.mod"
	// ScratchDir holds the build's GOCACHE, temporary files and binaries
	// inside the project (so the disk limit covers them); go's ./...
	// pattern skips directories starting with a dot.
	ScratchDir = ".kettle-go"
	// BuildCommand is recorded as externalParameters.buildCommand: the
	// environment kettle sets that changes the output, and the command.
	BuildCommand = "CGO_ENABLED=0 GOFLAGS=-mod=readonly GOPROXY=off go build -trimpath -buildvcs=false -o " + ScratchDir + "/bin/ ./..."
	// DefaultProxy is used for the fetch unless the server's environment
	// sets GOPROXY.
	DefaultProxy = "https://proxy.golang.org,direct"
)

// Driver builds Go module projects. A Driver is for one build.
type Driver struct {
	modOnly  bool   // no go.sum: go.mod is the lockfile and nothing is required
	goBin    string // the hashed go binary (set by Inputs)
	goDigest string
	goRoot   string
	module   string            // module path of the project
	sum      *Sum              // parsed go.sum (nil when modOnly)
	lockData []byte            // the lockfile as planned (toolchain.Lock)
	names    map[string]string // artifact name → import path of its main package
	local    bool              // go.mod replaces a module by a project directory
	patterns []string          // kettle.toml [go] packages (nil: ./...)
	ldflags  string            // kettle.toml [go] ldflags, placeholders filled in
}

// New returns the driver for a module with a go.sum (the lockfile).
func New() toolchain.Driver { return &Driver{} }

// NewModOnly returns the driver for a module without go.sum: go.mod stands
// in as the lockfile, and the module must require no other module (with
// requirements but no go.sum nothing would pin what gets downloaded).
func NewModOnly() toolchain.Driver { return &Driver{modOnly: true} }

func (d *Driver) Name() string  { return "go" }
func (d *Driver) Title() string { return "Go" }

// Lockfile is go.sum, or go.mod for NewModOnly.
func (d *Driver) Lockfile() string {
	if d.modOnly {
		return ModFile
	}
	return SumFile
}

// Inputs parses go.mod and go.sum (golang.org/x/mod, in this process,
// through the project root) and hashes the go binary. A replacement of a
// module by a directory outside the project, or a go.work naming one, is
// refused before anything runs; one inside the project is recorded as
// local code with the dirhash of its tree.
func (d *Driver) Inputs(ctx context.Context, w *toolchain.Workspace, lock *toolchain.Lock) (*toolchain.Inputs, error) {
	tool, err := d.resolve(ctx, w)
	if err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(w.Dir)
	if err != nil {
		return nil, failure.Wrap(failure.InternalError, err, "cannot open the project")
	}
	defer root.Close()
	modData := lock.Data // go.mod is the lockfile of a module without go.sum
	if !d.modOnly {
		if modData, err = toolchain.ReadProjectFile(w.Dir, ModFile); err != nil {
			return nil, failure.Wrap(failure.InvalidSource, err, "cannot read go.mod (it must be a regular file in the project root)")
		}
	}
	mi, err := ParseMod(modData)
	if err != nil {
		return nil, failure.Wrap(failure.InvalidSource, err, err.Error())
	}
	if err := mi.CheckToolchain(goVersion(tool.Version)); err != nil {
		return nil, err
	}
	if _, err := root.Lstat(WorkFile); err == nil {
		work, err := toolchain.ReadProjectFile(w.Dir, WorkFile)
		if err != nil {
			return nil, failure.Wrap(failure.InvalidSource, err, "cannot read go.work (it must be a regular file in the project root)")
		}
		if err := CheckWork(work); err != nil {
			return nil, failure.Wrap(failure.InvalidSource, err, err.Error())
		}
		logf(w, "kettle: go.work is ignored (GOWORK=off): only go.mod and go.sum decide what is built")
	}
	local, err := hashLocal(root, mi)
	if err != nil {
		return nil, err
	}
	d.module = mi.Module

	if d.modOnly {
		if n := len(unreplaced(mi)); n > 0 {
			return nil, failure.New(failure.UnsupportedToolchain,
				"go.mod requires %d module(s) but the project has no go.sum: run `go mod tidy` and commit go.sum", n)
		}
	} else {
		d.sum, err = ParseSum(lock.Data)
		if err != nil {
			return nil, failure.Wrap(failure.InvalidSource, err, err.Error())
		}
	}
	deps := mi.Dependencies(d.sum, local)
	for _, l := range mi.Local {
		logf(w, "kettle: %s is replaced by the project directory %s: recorded as local code (h1:%s)", l.Old, l.Dir, local[l.Dir])
	}
	d.local = len(mi.Local) > 0
	d.lockData = lock.Data
	lockHash := lock.SHA256
	return &toolchain.Inputs{
		Lock:         lock,
		Toolchain:    provenance.Toolchain{tool},
		Dependencies: deps,
		MerkleLeaves: func(gitCommit, gitTree string) []string {
			return MerkleLeaves(gitCommit, gitTree, tool, lockHash, deps)
		},
	}, nil
}

// unreplaced are the requirements that no local directory replaces.
func unreplaced(m *Mod) []module.Version {
	var out []module.Version
	for _, r := range m.Require {
		local := false
		for _, l := range m.Local {
			if l.Old.Path == r.Path && (l.Old.Version == "" || l.Old.Version == r.Version) {
				local = true
			}
		}
		if !local {
			out = append(out, r)
		}
	}
	return out
}

// MerkleLeaves are the input Merkle root's leaves of a Go build, in the
// order of the peer's Cargo and pnpm leaves: gitCommit, gitTree, go's
// sha256 and version, the lockfile's sha256, then every dependency uri in
// order.
func MerkleLeaves(gitCommit, gitTree string, goTool provenance.Tool, lockfileSHA256 string, deps []provenance.Dependency) []string {
	l := []string{gitCommit, gitTree, goTool.SHA256, goTool.Version, lockfileSHA256}
	for _, d := range deps {
		l = append(l, d.URI)
	}
	return l
}

// resolve finds and hashes the go binary. Its version comes from
// `go version` (go has no --version), run with GOTOOLCHAIN=local outside
// the project so no go.mod can make it switch toolchains.
func (d *Driver) resolve(ctx context.Context, w *toolchain.Workspace) (provenance.Tool, error) {
	p, err := toolchain.FindTool(ctx, w.Env, "go")
	if err != nil {
		return provenance.Tool{}, failure.Wrap(failure.UnsupportedToolchain, err, "go is not installed on this builder")
	}
	digest, err := toolchain.SHA256File(p)
	if err != nil {
		return provenance.Tool{}, failure.Wrap(failure.InternalError, err, "cannot hash the go binary")
	}
	home, err := os.MkdirTemp("", "kettle-go-")
	if err != nil {
		return provenance.Tool{}, err
	}
	defer os.RemoveAll(home)
	cmd := exec.CommandContext(ctx, p, "version")
	cmd.Env = toolchain.SetEnv(stripGoEnv(w.Env), append(privateHome(home), "GOTOOLCHAIN=local", "GOENV=off")...)
	cmd.Dir = home
	out, err := cmd.Output()
	if err != nil {
		return provenance.Tool{}, failure.Wrap(failure.InternalError, fmt.Errorf("go version: %w", err), "go is not usable on this builder")
	}
	d.goBin, d.goDigest = p, digest
	d.goRoot = filepath.Dir(filepath.Dir(p)) // <GOROOT>/bin/go
	return provenance.Tool{Name: "go", Version: strings.TrimSpace(string(out)), SHA256: digest}, nil
}

func (d *Driver) modCache(w *toolchain.Workspace) string  { return filepath.Join(w.CacheDir, "gomod") }
func (d *Driver) goPath(w *toolchain.Workspace) string    { return filepath.Join(w.CacheDir, "gopath") }
func (d *Driver) fetchHome(w *toolchain.Workspace) string { return filepath.Join(w.CacheDir, "gohome") }

// privateHome makes dir the home and config directory of a go command and
// turns go's telemetry off there: otherwise go writes counters into the
// server's home (GOTELEMETRY cannot be set from the environment), sometimes
// from a child process that outlives the command.
func privateHome(dir string) []string {
	t := filepath.Join(dir, "go", "telemetry")
	if os.MkdirAll(t, 0o755) == nil {
		_ = os.WriteFile(filepath.Join(t, "mode"), []byte("off"), 0o644)
	}
	return []string{"HOME=" + dir, "XDG_CONFIG_HOME=" + dir}
}

// env is the environment of every go command. The server's own GO*
// settings are dropped (GOFLAGS, GOINSECURE, GONOSUMDB, GOEXPERIMENT… would
// change what is fetched or built); then:
//   - GOTOOLCHAIN=local: a go.mod `toolchain` line must not download and run
//     another Go (Inputs refuses one newer than the builder's);
//   - GOWORK=off: go.work is ignored, only go.mod/go.sum decide;
//   - GOENV=off: no go.env of any user is read (the project cannot name
//     one: it is not an environment of kettle's);
//   - GOFLAGS=-mod=readonly: go.sum and go.mod are never rewritten, and a
//     vendor/ directory is ignored: modules come from the verified cache
//     (vendored code is not hash-checked by go, so it is never built);
//   - GOSUMDB=off: go.sum is the trust anchor. The checksum database is
//     only consulted for modules go.sum does not pin, and kettle refuses
//     those anyway (it is also unreachable from many build machines);
//   - GONOSUMDB, GONOPROXY, GOPRIVATE, GOINSECURE empty, GOAUTH=off (no
//     .netrc or credential helper), GOVCS=*:git (the direct fallback may
//     only run git, in the fetch sandbox, for what go.sum pins anyway);
//   - CGO_ENABLED=0: builds do not depend on the machine's C toolchain and
//     are reproducible; cgo projects fail.
func (d *Driver) env(w *toolchain.Workspace, proxy string, extra ...string) []string {
	return toolchain.SetEnv(stripGoEnv(w.Env), append([]string{
		"GOMODCACHE=" + d.modCache(w),
		"GOPATH=" + d.goPath(w),
		"GOPROXY=" + proxy,
		"GOFLAGS=-mod=readonly -modcacherw",
		"GOTOOLCHAIN=local",
		"GOWORK=off",
		"GOENV=off",
		"GOSUMDB=off",
		"GONOSUMDB=",
		"GONOPROXY=",
		"GOPRIVATE=",
		"GOINSECURE=",
		"GOAUTH=off",
		"GOVCS=*:git",
		"CGO_ENABLED=0",
	}, extra...)...)
}

// stripGoEnv drops the go command's configuration variables from env.
func stripGoEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "GO") || strings.HasPrefix(k, "CGO_") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

func (d *Driver) ready(ctx context.Context, w *toolchain.Workspace) error {
	if d.goBin != "" && d.module != "" {
		return nil
	}
	_, err := toolchain.Plan(ctx, d, w)
	return err
}

// Fetch runs `go mod download -x` with network into the job's module cache.
// go verifies each download against go.sum; afterwards kettle requires
// go.sum to be unchanged (go adds lines for modules it had to download
// without a pin, and -mod=readonly does not stop `go mod download` from
// doing so) and hashes every downloaded module against it once more.
func (d *Driver) Fetch(ctx context.Context, w *toolchain.Workspace) error {
	if err := d.ready(ctx, w); err != nil {
		return err
	}
	for _, dir := range []string{d.modCache(w), d.goPath(w), d.fetchHome(w)} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	if d.modOnly {
		return nil // nothing is required: nothing to download
	}
	before := d.lockData // the go.sum the plan checked
	proxy := toolchain.Getenv(w.Env, "GOPROXY")
	if proxy == "" || proxy == "off" {
		proxy = DefaultProxy
	}
	// The server's TMPDIR need not exist in the sandbox.
	fetchTmp := filepath.Join(d.fetchHome(w), "tmp")
	if err := os.MkdirAll(fetchTmp, 0o755); err != nil {
		return err
	}
	var cached *cacheUse
	ro := []string{d.goRoot}
	if w.DepCache != nil {
		var err error
		if cached, err = d.fromCache(w); err != nil {
			return failure.Wrap(failure.InternalError, err, "cannot use the shared dependency cache")
		}
		if cached.complete {
			logf(w, "kettle: Fetch: %d module(s) and %d go.mod file(s) from the shared dependency cache, 0 downloaded", cached.modules, cached.goMods)
			return nil
		}
		ro = append(ro, w.DepCache.EntriesDir()) // what the links name
	}
	det := &detail{}
	err := toolchain.Run(ctx, det.wrap(w), &sandbox.Cmd{
		Args:     []string{d.goBin, "mod", "download", "-x"},
		Env:      d.env(w, proxy, append(privateHome(d.fetchHome(w)), "GOCACHE=off", "TMPDIR="+fetchTmp)...),
		Network:  true,
		Writable: []string{w.CacheDir},
		ReadOnly: ro,
		Limits:   w.Limits,
	})
	after, rerr := toolchain.ReadProjectFile(w.Dir, SumFile)
	if rerr != nil || !bytes.Equal(before, after) {
		restore(w.Dir, SumFile, before)
		if err == nil {
			return failure.New(failure.DependencyFetchFailed,
				"go.sum does not pin every module the build needs: run `go mod tidy` and commit go.sum")
		}
	}
	if err != nil {
		return withDetail(toolchain.CommandFailed(ctx, failure.DependencyFetchFailed, "go mod download", err), scrubPaths(det.text(), w))
	}
	var linked func(string) bool
	if cached != nil {
		linked = cached.has
	}
	n, err := VerifyCache(d.modCache(w), d.sum, linked)
	if err == nil && cached != nil {
		err = checkLinks(d.modCache(w), cached)
	}
	if err != nil {
		msg := "module cache does not match go.sum"
		if errors.Is(err, ErrMismatch) || errors.Is(err, ErrUnpinned) {
			msg = clip(scrubPaths(err.Error(), w))
		}
		return failure.Wrap(failure.DependencyFetchFailed, err, msg)
	}
	logf(w, "kettle: %d module(s) verified against go.sum", n)
	if cached != nil {
		added := d.fill(ctx, w, cached)
		logf(w, "kettle: Fetch: %d module(s) from the shared dependency cache, %d downloaded; %d entries added to the cache", cached.modules, n, added)
	}
	return nil
}

// restore puts back a project file the fetch changed, through the project
// root so a swapped-in symlink cannot redirect the write.
func restore(dir, name string, data []byte) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return
	}
	defer root.Close()
	_ = root.Remove(name)
	_ = root.WriteFile(name, data, 0o644)
}

// Build runs, offline in the sandbox, `go list` to find the main packages
// and `go build -trimpath -buildvcs=false -o .kettle-go/bin/ ./...`. When two
// main packages would get the same binary name (say the module root and
// cmd/<name>), each of them is built again on its own with -o: the module
// root keeps the name, the others are named after their directory with "/"
// replaced by "-" (cmd-<name>); see ArtifactNames.
func (d *Driver) Build(ctx context.Context, w *toolchain.Workspace) (err error) {
	if err := d.ready(ctx, w); err != nil {
		return err
	}
	scratch := filepath.Join(w.Dir, ScratchDir)
	// RemoveAll removes a symlink planted by the source, not its target.
	if err := os.RemoveAll(scratch); err != nil {
		return err
	}
	if err := os.Mkdir(scratch, 0o755); err != nil {
		return err
	}
	for _, sub := range []string{"cache", "tmp", "home", "bin"} {
		if err := os.Mkdir(filepath.Join(scratch, sub), 0o755); err != nil {
			return err
		}
	}
	ro := []string{d.goRoot, d.modCache(w)}
	if w.DepCache != nil {
		ro = append(ro, w.DepCache.EntriesDir()) // the module links of fromCache name entries there
	}
	if seed, err := prepareStdCache(ctx, w.Env, d.goBin, d.goDigest); err == nil {
		if err := seedCache(seed, filepath.Join(scratch, "cache")); err != nil {
			return fmt.Errorf("seed GOCACHE: %w", err)
		}
		ro = append(ro, seed) // read-only: see stdcache.go
	} else if ctx.Err() != nil {
		return toolchain.CommandFailed(ctx, failure.BuildFailed, "go build std", ctx.Err())
	} else {
		logf(w, "kettle: no prebuilt standard library (%s); go compiles it in this build", clip(scrubPaths(err.Error(), w)))
	}
	defer func() {
		if err != nil { // no Artifacts call will clean up
			os.RemoveAll(scratch)
			return
		}
		for _, sub := range []string{"cache", "tmp", "home"} {
			os.RemoveAll(filepath.Join(scratch, sub))
		}
	}()
	env := d.env(w, "off",
		"GOCACHE="+filepath.Join(scratch, "cache"),
		"GOTMPDIR="+filepath.Join(scratch, "tmp"),
		"TMPDIR="+filepath.Join(scratch, "tmp"),
	)
	env = toolchain.SetEnv(env, privateHome(filepath.Join(scratch, "home"))...)

	mains, err := d.listMains(ctx, w, env, ro)
	if err != nil {
		return err
	}
	switch {
	case len(mains) == 0 && len(d.patterns) > 0:
		return failure.New(failure.NoArtifacts,
			"no main package in %s: kettle.toml [go] packages must name commands (package main)",
			strings.Join(d.targets(), " "))
	case len(mains) == 0:
		// A library: nothing to ship (docs/toolchains.md).
		return failure.New(failure.NoArtifacts,
			"no main package in module %s: kettle builds commands; add a package main, or name one in kettle.toml [go] packages", d.module)
	}
	names, err := ArtifactNames(d.module, mains)
	if err != nil {
		return failure.Wrap(failure.BuildFailed, err, err.Error())
	}
	run := func(what string, args ...string) error {
		err := toolchain.Run(ctx, w, &sandbox.Cmd{
			Args:     append([]string{d.goBin}, args...),
			Env:      env,
			ReadOnly: ro,
			Limits:   w.Limits,
		})
		if err != nil {
			return toolchain.CommandFailed(ctx, failure.BuildFailed, what, err)
		}
		return nil
	}
	flags := append(d.buildFlags(), "-o")
	if err := run("go build", append(append(flags, ScratchDir+"/bin/"), d.targets()...)...); err != nil {
		return err
	}
	d.names = names
	// Packages sharing a name were written over each other by ./...:
	// build each of them again under its own name.
	shared := map[string]bool{}
	for name, pkg := range names {
		if name != DefaultExecName(pkg) {
			shared[DefaultExecName(pkg)] = true
		}
	}
	var rebuild []string
	for name, pkg := range names {
		if shared[DefaultExecName(pkg)] {
			rebuild = append(rebuild, name)
		}
	}
	sort.Strings(rebuild)
	for n := range shared {
		os.Remove(filepath.Join(scratch, "bin", n))
	}
	for _, name := range rebuild {
		pkg := names[name]
		logf(w, "kettle: several main packages are named %s; building %s as %s", DefaultExecName(pkg), pkg, name)
		if err := run("go build "+pkg, append(flags, ScratchDir+"/bin/"+name, pkg)...); err != nil {
			return err
		}
	}
	return nil
}

// listMains returns the import paths of the main packages of ./...
func (d *Driver) listMains(ctx context.Context, w *toolchain.Workspace, env, ro []string) ([]string, error) {
	var out bytes.Buffer
	err := w.Runner.Run(ctx, &sandbox.Cmd{
		Args:     append([]string{d.goBin, "list", "-f", `{{if eq .Name "main"}}{{.ImportPath}}{{end}}`, "--"}, d.targets()...),
		Dir:      w.Dir,
		Env:      env,
		Output:   &limitedBuffer{b: &out, max: 4 << 20},
		ReadOnly: ro,
		Limits:   w.Limits,
	})
	if err != nil {
		lw := toolchain.NewLineWriter(w.Log)
		lw.Write(out.Bytes())
		lw.Flush()
		return nil, toolchain.CommandFailed(ctx, failure.BuildFailed, "go list "+strings.Join(d.targets(), " "), err)
	}
	var mains []string
	for _, l := range strings.Split(out.String(), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.ContainsAny(l, " \t") {
			mains = append(mains, l)
		}
	}
	sort.Strings(mains)
	return mains, nil
}

// DefaultExecName is the file name go build gives the binary of the main
// package with this import path: its last element, or the one before it
// when that is a major version suffix (example.com/tool/v2 → tool).
func DefaultExecName(importPath string) string {
	dir, elem := path.Split(importPath)
	if dir != "" && isVersionElement(elem) {
		_, elem = path.Split(path.Dir(importPath))
	}
	return elem
}

func isVersionElement(s string) bool {
	if len(s) < 2 || s[0] != 'v' || s[1] == '0' || s[1] == '1' && len(s) == 2 {
		return false
	}
	for i := 1; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// ArtifactNames names the binary of each main package: go's default name,
// unless several packages share it; then the module root keeps it and the
// others are named after their directory in the module ("cmd/tool" →
// "cmd-tool"). Names that still clash are an error.
func ArtifactNames(module string, mains []string) (map[string]string, error) {
	byName := map[string][]string{}
	for _, pkg := range mains {
		n := DefaultExecName(pkg)
		byName[n] = append(byName[n], pkg)
	}
	out := map[string]string{}
	for n, pkgs := range byName {
		for _, pkg := range pkgs {
			name := n
			if len(pkgs) > 1 && pkg != module {
				rel, ok := strings.CutPrefix(pkg, module+"/")
				if !ok {
					rel = pkg
				}
				name = strings.ReplaceAll(rel, "/", "-")
			}
			if other, dup := out[name]; dup {
				return nil, fmt.Errorf("main packages %s and %s would both be named %s", other, pkg, name)
			}
			out[name] = pkg
		}
	}
	return out, nil
}

// Artifacts copies the binaries of the main packages into dst, through
// toolchain.Outputs: the build owned .kettle-go/, so a symlink at any
// component of .kettle-go/bin/<name>, a non-regular file or a hard link to
// a file elsewhere is refused (BuildFailed), never followed or copied.
func (d *Driver) Artifacts(ctx context.Context, w *toolchain.Workspace, dst string) ([]toolchain.Artifact, error) {
	defer os.RemoveAll(filepath.Join(w.Dir, ScratchDir))
	o, err := toolchain.OpenOutputs(w.Dir, 0)
	if err != nil {
		return nil, failure.Wrap(failure.InternalError, err, "cannot open the project")
	}
	defer o.Close()
	bin := ScratchDir + "/bin"
	unsafe := func(err error) error {
		return failure.Wrap(failure.BuildFailed, err, clip(err.Error()))
	}
	fi, err := o.Lstat(bin)
	switch {
	case errors.Is(err, toolchain.ErrUnsafeOutput):
		return nil, unsafe(err)
	case err != nil:
		return nil, failure.New(failure.NoArtifacts, "go build left no binaries")
	case !fi.IsDir():
		return nil, unsafe(fmt.Errorf("%w: %s is not a directory", toolchain.ErrUnsafeOutput, bin))
	}
	if err := o.ScanLinks(bin); err != nil {
		return nil, unsafe(err)
	}
	names := make([]string, 0, len(d.names))
	for n := range d.names {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []toolchain.Artifact
	for _, n := range names {
		a, err := o.Copy(bin+"/"+n, dst, n)
		if errors.Is(err, fs.ErrNotExist) {
			continue // a main package that is excluded by build constraints
		}
		if errors.Is(err, toolchain.ErrUnsafeOutput) {
			return nil, unsafe(err)
		}
		if err != nil {
			return nil, failure.Wrap(failure.NoArtifacts, err, "cannot copy the binary "+n)
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil, failure.New(failure.NoArtifacts, "no main package: go build produced no binaries")
	}
	return out, nil
}

// logf writes one line of kettle's own to the build log.
func logf(w *toolchain.Workspace, format string, args ...any) {
	if w.Log != nil {
		w.Log(fmt.Sprintf(format, args...))
	}
}

// detail keeps the lines of a go command's output that explain a failure.
type detail struct{ lines []string }

func (det *detail) wrap(w *toolchain.Workspace) *toolchain.Workspace {
	c := *w
	log, piece := w.Log, w.LogPiece
	see := func(line string) {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "verifying ") || strings.HasPrefix(t, "go: ") {
			if len(det.lines) < 3 {
				det.lines = append(det.lines, t)
			}
		}
	}
	c.Log = func(line string) {
		if log != nil {
			log(line)
		}
		see(line)
	}
	if piece != nil {
		// toolchain.Run sends output to LogPiece when it is set: watch
		// it there too (a line's first piece is where go's text is).
		c.LogPiece = func(p string, cont bool) {
			piece(p, cont)
			if !cont {
				see(p)
			}
		}
	}
	return &c
}

func (det *detail) text() string { return strings.Join(det.lines, "; ") }

// withDetail appends detail to the client message of a classified error.
func withDetail(err error, detail string) error {
	var fe *failure.Error
	if detail == "" || !errors.As(err, &fe) || fe.Kind != failure.DependencyFetchFailed {
		return err
	}
	return &failure.Error{Kind: fe.Kind, Msg: fe.Msg + ": " + clip(detail), Err: fe.Err}
}

// scrubPaths hides server paths in a message meant for a client: the job's
// directories become "." and "$CACHE", any other absolute path "<path>".
func scrubPaths(s string, w *toolchain.Workspace) string {
	if w.CacheDir != "" {
		s = strings.ReplaceAll(s, w.CacheDir, "$CACHE")
	}
	if w.Dir != "" {
		s = strings.ReplaceAll(s, w.Dir, ".")
	}
	f := strings.Fields(s)
	for i, tok := range f {
		t := strings.TrimLeft(tok, `"'([`)
		if strings.HasPrefix(t, "/") && !strings.Contains(tok, "://") {
			f[i] = tok[:len(tok)-len(t)] + "<path>"
		}
	}
	return strings.Join(f, " ")
}

// goVersion extracts "go1.26.8" from "go version go1.26.8 linux/amd64".
func goVersion(s string) string {
	for _, f := range strings.Fields(s) {
		if strings.HasPrefix(f, "go1") && version.IsValid(f) {
			return f
		}
	}
	return ""
}

// limitedBuffer keeps at most max bytes of a command's output.
type limitedBuffer struct {
	b   *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.b.Len(); room > 0 {
		if len(p) > room {
			l.b.Write(p[:room])
		} else {
			l.b.Write(p)
		}
	}
	return len(p), nil
}
