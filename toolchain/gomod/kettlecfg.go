package gomod

import (
	"strings"

	"github.com/kettle-build/kettle/buildcfg"
	"github.com/kettle-build/kettle/failure"
)

// Configure applies kettle.toml's [go] section: the package patterns to
// build instead of ./... and the -ldflags (only -X, -s and -w, checked by
// buildcfg) with {version} and {commit} filled in.
func (d *Driver) Configure(c *buildcfg.Config, stamp buildcfg.Stamp) error {
	if c.Go == nil {
		return nil
	}
	d.patterns = append([]string(nil), c.Go.Packages...)
	ld, err := c.Go.LdflagsArg(stamp)
	if err != nil {
		return failure.Wrap(failure.InvalidSource, err, err.Error())
	}
	d.ldflags = ld
	return nil
}

// targets are the package patterns built: kettle.toml's, else ./...
func (d *Driver) targets() []string {
	if len(d.patterns) > 0 {
		return d.patterns
	}
	return []string{"./..."}
}

// buildFlags are the go build flags before -o.
func (d *Driver) buildFlags() []string {
	f := []string{"build", "-trimpath", "-buildvcs=false"}
	if d.ldflags != "" {
		f = append(f, "-ldflags="+d.ldflags)
	}
	return f
}

// BuildCommand is recorded as externalParameters.buildCommand: the
// environment kettle sets that changes the output, and the command with
// kettle.toml's ldflags and packages.
func (d *Driver) BuildCommand() string {
	if d.ldflags == "" && len(d.patterns) == 0 {
		return BuildCommand
	}
	cmd := "CGO_ENABLED=0 GOFLAGS=-mod=readonly GOPROXY=off go build -trimpath -buildvcs=false"
	if d.ldflags != "" {
		cmd += " -ldflags='" + d.ldflags + "'"
	}
	return cmd + " -o " + ScratchDir + "/bin/ " + strings.Join(d.targets(), " ")
}
