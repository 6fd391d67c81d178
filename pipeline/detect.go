package pipeline

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/toolchain"
	"github.com/kettle-build/kettle/toolchain/cargo"
	"github.com/kettle-build/kettle/toolchain/gomod"
	"github.com/kettle-build/kettle/toolchain/nix"
	"github.com/kettle-build/kettle/toolchain/pnpm"
)

// Detector maps a marker file in the project root to the toolchain driver
// that builds such a project.
type Detector struct {
	Marker string // file whose presence selects the driver
	New    func() toolchain.Driver
}

// Detectors is the detection table, in docs/provenance.md order: the first marker
// present wins. To add a toolchain, add one line per marker in its place:
//
//	{"flake.nix", nix.New}, {"Cargo.lock", cargo.New},
//	{"pnpm-lock.yaml", pnpm.New}, {"go.sum", gomod.New}, {"go.mod", gomod.New}
var Detectors = []Detector{
	{"flake.nix", nix.New},
	{"Cargo.lock", cargo.New},
	{"pnpm-lock.yaml", pnpm.New},
	// go.sum is Go's lockfile; a module without one (no requirements) is
	// built with go.mod as its lockfile.
	{"go.sum", gomod.New},
	{"go.mod", gomod.NewModOnly},
}

// Detect picks the driver of the project in dir: the first Detectors entry
// whose marker is a regular file inside dir. The chosen driver's lockfile
// must exist too, unless the driver builds without one
// (toolchain.OptionalLockfile). Errors are failure.UnsupportedToolchain
// with a message naming the files looked for (no server paths).
func Detect(dir string) (toolchain.Driver, error) {
	for _, d := range Detectors {
		if !toolchain.ProjectFileExists(dir, d.Marker) {
			continue
		}
		drv := d.New()
		if lf := drv.Lockfile(); lf != d.Marker && !toolchain.LockfileOptional(drv) && !toolchain.ProjectFileExists(dir, lf) {
			return nil, failure.New(failure.UnsupportedToolchain,
				"%s project has %s but no %s: commit the lockfile", drv.Title(), d.Marker, lf)
		}
		return drv, nil
	}
	for _, h := range lockHints {
		if toolchain.ProjectFileExists(dir, h.manifest) {
			return nil, failure.New(failure.UnsupportedToolchain,
				"found %s but no %s in the project root: %s", h.manifest, h.lockfile, h.todo)
		}
	}
	return nil, failure.New(failure.UnsupportedToolchain,
		"could not determine toolchain: none of %s found in the project root (it has %s)", markers(), rootListing(dir))
}

// lockHints name what to do when a project has a manifest but not the
// lockfile kettle builds from.
var lockHints = []struct{ manifest, lockfile, todo string }{
	{"Cargo.toml", "Cargo.lock", "run `cargo generate-lockfile` and commit Cargo.lock"},
	{"package.json", "pnpm-lock.yaml", "run `pnpm install` and commit pnpm-lock.yaml (npm's package-lock.json and yarn.lock are not supported)"},
}

// rootListing names the first entries of the project root, so a refusal
// says what it found (the client's own file names, nothing of the server).
func rootListing(dir string) string {
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) == 0 {
		return "no files"
	}
	const most = 8
	var names []string
	for _, e := range ents {
		if len(names) == most {
			names = append(names, fmt.Sprintf("… %d more", len(ents)-most))
			break
		}
		n := e.Name()
		if e.IsDir() {
			n += "/"
		}
		names = append(names, strconv.Quote(n))
	}
	return strings.Join(names, ", ")
}

func markers() string {
	var m []string
	for _, d := range Detectors {
		m = append(m, d.Marker)
	}
	if len(m) == 0 {
		return "(no toolchains registered)"
	}
	return strings.Join(m, ", ")
}
