package pnpm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kettle-build/kettle/buildcfg"
	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/toolchain"
)

// TestConfigurePlan: [pnpm] script and output change the sandboxed build
// steps and BuildCommand; without it, `pnpm build` and dist/.
func TestConfigurePlan(t *testing.T) {
	w := &toolchain.Workspace{Dir: t.TempDir()}
	d := &Driver{}
	steps, err := d.steps(w)
	if err != nil || len(steps) != 1 || strings.Join(steps[0].args, " ") != "build" || d.BuildCommand() != BuildCommand {
		t.Fatalf("unconfigured: %v %v %q", steps, err, d.BuildCommand())
	}
	c, err := buildcfg.Parse([]byte("[pnpm]\nscript = \"build:lib\"\noutput = \"pack\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Configure(c, buildcfg.Stamp{}); err != nil {
		t.Fatal(err)
	}
	// A symlink planted where pnpm pack writes is removed, not followed.
	outside := t.TempDir()
	os.Symlink(outside, filepath.Join(w.Dir, PackDest))
	steps, err = d.steps(w)
	if err != nil || len(steps) != 2 {
		t.Fatal(steps, err)
	}
	if got := strings.Join(steps[0].args, " "); got != "run build:lib" {
		t.Fatalf("script step %q", got)
	}
	if got := strings.Join(steps[1].args, " "); got != "pack --pack-destination "+filepath.Join(w.Dir, PackDest) {
		t.Fatalf("pack step %q", got)
	}
	if fi, err := os.Lstat(filepath.Join(w.Dir, PackDest)); err != nil || !fi.IsDir() {
		t.Fatalf("pack destination %v %v", fi, err)
	}
	if want := "pnpm install --offline --frozen-lockfile && pnpm run build:lib && pnpm pack"; d.BuildCommand() != want {
		t.Fatalf("BuildCommand %q", d.BuildCommand())
	}
}

// TestPackArtifact: exactly one regular tarball is collected; a symlink
// in its place (to a file outside) or two tarballs are refused.
func TestPackArtifact(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "secret.tgz")
	os.WriteFile(outside, []byte("host secret"), 0o644)
	for _, tc := range []struct {
		name  string
		files map[string]string // name → content; "->x" makes a symlink to outside
		kind  failure.Kind
	}{
		{"one", map[string]string{"p-1.0.0.tgz": "tar"}, ""},
		{"none", map[string]string{}, failure.NoArtifacts},
		{"two", map[string]string{"a-1.tgz": "x", "b-1.tgz": "y"}, failure.NoArtifacts},
		{"symlink", map[string]string{"p-1.0.0.tgz": "->"}, failure.BuildFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proj, dst := t.TempDir(), t.TempDir()
			os.Mkdir(filepath.Join(proj, PackDest), 0o755)
			for n, c := range tc.files {
				p := filepath.Join(proj, PackDest, n)
				if c == "->" {
					os.Symlink(outside, p)
				} else {
					os.WriteFile(p, []byte(c), 0o644)
				}
			}
			d := &Driver{pack: true}
			arts, err := d.Artifacts(t.Context(), &toolchain.Workspace{Dir: proj}, dst)
			if tc.kind == "" {
				if err != nil || len(arts) != 1 || arts[0].Name != "p-1.0.0.tgz" {
					t.Fatalf("%v %v", arts, err)
				}
				return
			}
			if failure.KindOf(err) != tc.kind {
				t.Fatalf("err %v (%s), want %s", err, failure.KindOf(err), tc.kind)
			}
			if b, _ := os.ReadFile(filepath.Join(dst, "p-1.0.0.tgz")); strings.Contains(string(b), "secret") {
				t.Fatal("the symlink's target was collected")
			}
		})
	}
}
