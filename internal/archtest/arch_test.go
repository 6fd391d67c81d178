// Package archtest holds the test of docs/architecture.md's import rule:
// a package imports only packages on lower floors.
package archtest

import (
	"bytes"
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/kettle-build/kettle/"

// floors is docs/architecture.md's table. A new package must be placed
// here: the test fails for a package it doesn't know.
var floors = map[string]int{
	"abi": 0, "failure": 0, "provenance": 0, "source/gitid": 0, "igvm": 0, "verity": 0,
	"verify/snp": 0, "verify/tdx": 0, "verify/tpm": 0, "verify/hcl": 0, "web": 0,
	"internal/bytesize": 0, "internal/dtar": 0, "internal/rmtree": 0, "internal/lazyre": 0, "internal/testenv": 0, "egress": 0,
	"events": 1, "depcache": 1, "buildcfg": 1, "bundle": 1, "attest": 1, "verify": 1, "source": 1,
	"jobs": 2, "client": 2,
	"api/request": 3, "sandbox": 3,
	"api": 4, "toolchain": 4,
	"toolchain/cargo": 5, "toolchain/nix": 5, "toolchain/pnpm": 5, "toolchain/gomod": 5,
	"pipeline":   6,
	"worker":     7,
	"cmd/kettle": 8,
}

// exempt are test doubles, generators, benchmarks and test suites: they
// may import anything (nothing in the product imports them, checked below).
func exempt(p string) bool {
	for _, pre := range []string{"bench/", "test/", "internal/archtest"} {
		if strings.HasPrefix(p, pre) {
			return true
		}
	}
	switch p {
	case "attest/attesttest", "igvm/igvmtest", "verity/veritytest", "web/internal/genwasm":
		return true
	}
	return strings.HasSuffix(p, "/e2e")
}

func TestImportsGoDown(t *testing.T) {
	out, err := exec.Command("go", "list", "-json=ImportPath,Imports", module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(p.ImportPath, module)
		if exempt(name) {
			continue
		}
		f, ok := floors[name]
		if !ok {
			t.Errorf("%s is not in docs/architecture.md's package table (nor in this test's floors)", name)
			continue
		}
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			dep := strings.TrimPrefix(imp, module)
			if exempt(dep) {
				t.Errorf("%s imports %s, which is test or benchmark code", name, dep)
				continue
			}
			if g, ok := floors[dep]; ok && g >= f {
				t.Errorf("%s (floor %d) imports %s (floor %d): imports must go down", name, f, dep, g)
			}
		}
	}
}
