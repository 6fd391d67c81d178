package pipeline

import (
	"errors"
	"os"
	"path/filepath"

	"github.com/kettle-build/kettle/buildcfg"
	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/source/gitid"
	"github.com/kettle-build/kettle/toolchain"
)

// loadConfig reads the project's kettle.toml (nil without one) and returns
// the directory to build: dir, or its checked subdirectory.
func loadConfig(dir string) (*buildcfg.Config, string, error) {
	cfg, err := buildcfg.Load(dir)
	if err != nil {
		return nil, "", configError(err)
	}
	if cfg == nil {
		return nil, dir, nil
	}
	proj, err := cfg.ProjectDir(dir)
	if err == nil {
		err = cfg.CheckPaths(proj)
	}
	if err != nil {
		return nil, "", configError(err)
	}
	return cfg, proj, nil
}

func configError(err error) error {
	var ce *buildcfg.Error
	if errors.As(err, &ce) {
		return failure.Wrap(failure.InvalidSource, err, ce.Error())
	}
	return failure.Wrap(failure.InternalError, err, "cannot read "+buildcfg.FileName)
}

// configure hands kettle.toml to the driver. A section for another
// toolchain is refused (the file was written for a different build), as
// is any section for a driver that takes none.
func (r *run) configure(drv toolchain.Driver, cfg *buildcfg.Config, src *gitid.Identity) error {
	if other := cfg.OtherSection(drv.Name()); other != "" {
		return failure.New(failure.InvalidSource, "%s: the project is built with %s, but the file has a [%s] section; remove it or fix dir",
			buildcfg.FileName, drv.Title(), other)
	}
	c, ok := drv.(toolchain.Configurable)
	if !ok {
		if cfg.OtherSection("") != "" {
			return failure.New(failure.InvalidSource, "%s: %s builds take no configuration section, only dir", buildcfg.FileName, drv.Title())
		}
		return nil
	}
	if err := c.Configure(cfg, r.stamp(src)); err != nil {
		return configError(err)
	}
	return nil
}

// stamp is the source's version for {version}: the tag naming the commit
// (the remote's, for a clone; else .git's own tags, like git describe
// --tags --exact-match), else the commit. A dirty tree has no commit.
func (r *run) stamp(src *gitid.Identity) buildcfg.Stamp {
	s := buildcfg.Stamp{Commit: src.Commit}
	if src.Commit == "" {
		return s
	}
	s.Version = src.Tag
	if s.Version == "" {
		if fi, err := os.Lstat(filepath.Join(r.opts.Dir, ".git")); err == nil && fi.IsDir() {
			s.Version = gitid.ExactTag(filepath.Join(r.opts.Dir, ".git"), src.Commit)
		}
	}
	if s.Version == "" {
		s.Version = src.Commit
	}
	return s
}
