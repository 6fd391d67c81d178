package pnpm

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/kettle-build/kettle/buildcfg"
	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/toolchain"
)

// PackDest is where `pnpm pack` writes its tarball in pack mode: a
// directory of the project (the sandbox writes only there), emptied first
// so nothing the source planted is collected.
const PackDest = ".kettle-pack"

// Configure applies kettle.toml's [pnpm] section: the package.json script
// to run instead of build (run in the build sandbox only; the fetch phase
// runs no script) and the output mode.
func (d *Driver) Configure(c *buildcfg.Config, _ buildcfg.Stamp) error {
	d.script = c.Pnpm.Script
	d.pack = c.Pnpm.Output == buildcfg.OutputPack
	return nil
}

// buildScript is the package.json script the build runs.
func (d *Driver) buildScript() string {
	if d.script != "" {
		return d.script
	}
	return "build"
}

// BuildCommand is recorded as externalParameters.buildCommand.
func (d *Driver) BuildCommand() string {
	if d.script == "" && !d.pack {
		return BuildCommand
	}
	cmd := "pnpm install --offline --frozen-lockfile && pnpm run " + d.buildScript()
	if d.pack {
		cmd += " && pnpm pack"
	}
	return cmd
}

// steps are the sandboxed commands after install.
func (d *Driver) steps(w *toolchain.Workspace) ([]buildStep, error) {
	run := buildStep{"pnpm build", []string{"build"}, nil}
	if d.script != "" {
		// buildcfg checked the name: it cannot start with "-" (an option).
		run = buildStep{"pnpm run " + d.script, []string{"run", d.script}, nil}
	}
	if !d.pack {
		return []buildStep{run}, nil
	}
	dir := filepath.Join(w.Dir, PackDest)
	if err := os.RemoveAll(dir); err != nil { // a planted symlink goes, not its target
		return nil, err
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	// The build's home (ScratchDir) is inside the project, and pnpm
	// pack packs every file a package without "files" holds: it is
	// emptied before the pack so none of the build's caches ship (only
	// the empty TMPDIR env names is recreated; pnpm pack writes nothing
	// there, tested by TestBuildConfigCargoPnpm/pnpm).
	home := filepath.Join(w.Dir, ScratchDir)
	empty := func() error {
		if err := os.RemoveAll(home); err != nil {
			return err
		}
		return os.MkdirAll(filepath.Join(home, ".tmp"), 0o755)
	}
	return []buildStep{run, {"pnpm pack", []string{"pack", "--pack-destination", dir}, empty}}, nil
}

type buildStep struct {
	what   string
	args   []string
	before func() error // run first, in kettle's process (nil: nothing)
}

// packArtifact collects the one tarball pnpm pack wrote to PackDest,
// through o (no symlink followed, regular files only).
func packArtifact(_ context.Context, o *toolchain.Outputs, dst string) ([]toolchain.Artifact, error) {
	ents, err := o.ReadDir(PackDest)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, failure.New(failure.NoArtifacts, "pnpm pack wrote no tarball")
		}
		return nil, failure.Wrap(failure.BuildFailed, err, PackDest+" cannot be read: the build must leave it to pnpm pack")
	}
	var tgz []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".tgz") && !strings.HasPrefix(e.Name(), ".") {
			tgz = append(tgz, e.Name())
		}
	}
	if len(tgz) != 1 {
		return nil, failure.New(failure.NoArtifacts, "pnpm pack wrote %d tarballs, want 1", len(tgz))
	}
	a, err := o.Copy(PackDest+"/"+tgz[0], dst, tgz[0])
	if err != nil {
		if errors.Is(err, toolchain.ErrUnsafeOutput) {
			return nil, failure.Wrap(failure.BuildFailed, err, clip(err.Error()))
		}
		return nil, failure.Wrap(failure.InternalError, err, "cannot copy the pnpm pack tarball")
	}
	return []toolchain.Artifact{a}, nil
}
