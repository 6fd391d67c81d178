package cargo

import (
	"testing"

	"github.com/kettle-build/kettle/buildcfg"
)

// TestConfigurePlan: [cargo] becomes --flag=value arguments of cargo
// build, recorded in BuildCommand; without it, today's command.
func TestConfigurePlan(t *testing.T) {
	d := &Driver{}
	if d.BuildCommand() != BuildCommand || d.selection != nil {
		t.Fatalf("unconfigured: %q %v", d.BuildCommand(), d.selection)
	}
	c, err := buildcfg.Parse([]byte("[cargo]\nbins = [\"tool\"]\npackages = [\"cli\"]\nfeatures = [\"loud\", \"serde/std\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Configure(c, buildcfg.Stamp{}); err != nil {
		t.Fatal(err)
	}
	if want := "cargo build --locked --release --package=cli --bin=tool --features=loud,serde/std"; d.BuildCommand() != want {
		t.Fatalf("BuildCommand %q, want %q", d.BuildCommand(), want)
	}
}
