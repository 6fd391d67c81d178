package gomod

import (
	"strings"
	"testing"

	"github.com/kettle-build/kettle/buildcfg"
)

// TestConfigurePlan: kettle.toml's [go] section changes what go build and
// go list get and what the provenance records; without it, the plan is
// today's (./..., no -ldflags, BuildCommand).
func TestConfigurePlan(t *testing.T) {
	d := &Driver{}
	if strings.Join(d.targets(), " ") != "./..." || strings.Join(d.buildFlags(), " ") != "build -trimpath -buildvcs=false" || d.BuildCommand() != BuildCommand {
		t.Fatalf("unconfigured plan: %v %v %q", d.targets(), d.buildFlags(), d.BuildCommand())
	}
	c, err := buildcfg.Parse([]byte("[go]\npackages = [\"./cmd/gh\"]\nldflags = [\"-s -w\", \"-X github.com/cli/cli/v2/internal/build.Version={version}\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Configure(c, buildcfg.Stamp{Version: "v2.83.1", Commit: strings.Repeat("a", 40)}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(d.targets(), " "); got != "./cmd/gh" {
		t.Fatalf("targets %q", got)
	}
	flags := d.buildFlags()
	// One argv element: go splits -ldflags itself, and the value has no
	// space or quote of the client's.
	if want := "-ldflags=-s -w -X github.com/cli/cli/v2/internal/build.Version=v2.83.1"; flags[len(flags)-1] != want {
		t.Fatalf("flags %q, want last %q", flags, want)
	}
	if want := "CGO_ENABLED=0 GOFLAGS=-mod=readonly GOPROXY=off go build -trimpath -buildvcs=false -ldflags='-s -w -X github.com/cli/cli/v2/internal/build.Version=v2.83.1' -o " + ScratchDir + "/bin/ ./cmd/gh"; d.BuildCommand() != want {
		t.Fatalf("BuildCommand\n %q\nwant\n %q", d.BuildCommand(), want)
	}

	// A tag the remote names with characters -X cannot hold is refused,
	// not passed on (it would split into another linker flag).
	for _, tag := range []string{"v1 -extldflags=-Wl,x", "v1'x", `v1"x`, "-toolexec=/bin/sh", "v1\t-s"} {
		if err := (&Driver{}).Configure(c, buildcfg.Stamp{Version: tag, Commit: strings.Repeat("a", 40)}); err == nil {
			t.Errorf("tag %q accepted", tag)
		}
	}
	// {version} without a commit (an upload without .git, a dirty tree).
	if err := (&Driver{}).Configure(c, buildcfg.Stamp{}); err == nil || !strings.Contains(err.Error(), "no git commit") {
		t.Errorf("no commit: %v", err)
	}
}
