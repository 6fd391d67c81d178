package cargo

import (
	"strings"

	"github.com/kettle-build/kettle/buildcfg"
)

// Configure applies kettle.toml's [cargo] section: --bin, --package and
// the feature flags of cargo build (names checked by buildcfg; passed as
// --flag=value, so none can be read as another option). Fetching is
// unchanged: cargo fetch downloads all of Cargo.lock whatever the features.
func (d *Driver) Configure(c *buildcfg.Config, _ buildcfg.Stamp) error {
	d.selection = c.Cargo.Args()
	return nil
}

// BuildCommand is recorded as externalParameters.buildCommand, with
// kettle.toml's selection when there is one.
func (d *Driver) BuildCommand() string {
	if len(d.selection) == 0 {
		return BuildCommand
	}
	return BuildCommand + " " + strings.Join(d.selection, " ")
}
