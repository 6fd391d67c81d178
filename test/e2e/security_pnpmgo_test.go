package e2e

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/dirhash"

	"github.com/kettle-build/kettle/bench/harness"
	"github.com/kettle-build/kettle/bundle"
	"github.com/kettle-build/kettle/internal/testenv"
	"github.com/kettle-build/kettle/provenance"
)

// pgProject copies testdata/security/<name> to a new directory.
func pgProject(t *testing.T, name string) string {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(root, "testdata", "security", name)
	dst := filepath.Join(t.TempDir(), name)
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(out, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fi, _ := d.Info()
		return os.WriteFile(out, b, fi.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// pgSubmit uploads dir as an archive, follows the build and returns the
// complete result, the events and (when it succeeded) the extracted bundle.
func pgSubmit(t *testing.T, c *harness.Client, dir, name string) (harness.Complete, []harness.Event, string) {
	t.Helper()
	archive := harness.Targz(t, dir, name)
	id, evs, res := followBuild(t, c, 4*time.Minute, func(ctx context.Context) (string, error) {
		return c.SubmitArchive(ctx, archive, name+".tar.gz", harness.NewNonce())
	})
	if res.Status != "ok" {
		return res, evs, ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var buf bytes.Buffer
	if _, _, err := c.Download(ctx, id, &buf); err != nil {
		t.Fatal(err)
	}
	out, err := bundle.Extract(bytes.NewReader(buf.Bytes()), t.TempDir(), bundle.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return res, evs, out
}

func pgDeps(t *testing.T, dir string) []provenance.Dependency {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "provenance.json"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := provenance.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return st.Predicate.BuildDefinition.ResolvedDependencies
}

// TestSecurityPnpmGo runs the go-replace-lie finding
// (provenance-dependency-misrepresentation) and the pnpm/Go attacks of
// docs/security/pnpmgo.md through a real `kettle serve` with bubblewrap,
// each beside an honest build:
//   - go-replace-lie: go.sum pins the real nkeys, go.mod replaces it by
//     ./fake. The build succeeds and its provenance records local code
//     (file:fake, named github.com/nats-io/nkeys, dirhash of ./fake), not
//     the registry module's h1;
//   - a replace to a directory outside the project: InvalidSource, nothing
//     runs, no server path in the error;
//   - a toolchain line asking for go1.99.0: UnsupportedToolchain, nothing
//     downloaded;
//   - a pnpm project whose .pnpmfile.cjs and .npmrc (git, script-shell,
//     node-options) write a marker on the host and whose registry is a
//     closed local port: the fetch ignores them (the build succeeds) and no
//     marker appears;
//   - pnpm file:/link:/workspace/tarball/patch inputs recorded as local code;
//   - honest go-hello and pnpm-hello builds, unchanged.
func TestSecurityPnpmGo(t *testing.T) {
	testenv.NeedTool(t, "bwrap")
	_, c := server(t, "", "--workers", "2")
	harness.WaitReady(t, c)

	t.Run("go-replace-lie", func(t *testing.T) {
		t.Parallel()
		needToolchain(t, toolchainProjects[0])
		dir := pgProject(t, "go-replace-lie")
		want, err := dirhash.HashDir(filepath.Join(dir, "fake"), "", dirhash.Hash1)
		if err != nil {
			t.Fatal(err)
		}
		res, evs, out := pgSubmit(t, c, dir, "go-replace-lie")
		if res.Status != "ok" {
			t.Fatalf("build: %+v\n%s", res, eventLog(evs))
		}
		deps := pgDeps(t, out)
		if len(deps) != 1 || deps[0].URI != "file:fake" || deps[0].Name != "github.com/nats-io/nkeys" || "h1:"+deps[0].Digest["h1"] != want {
			t.Fatalf("resolvedDependencies %+v, want file:fake (github.com/nats-io/nkeys) %s", deps, want)
		}
		prov, _ := os.ReadFile(filepath.Join(out, "provenance.json"))
		if strings.Contains(string(prov), "pkg:golang/github.com/nats-io/nkeys") || strings.Contains(string(prov), "rd5oAuLOb8mnAycB0xleuEBNS1pVVnN0fv") {
			t.Fatal("provenance still names the registry module that was not built")
		}
		manifest, _ := os.ReadFile(filepath.Join(out, "manifest.json"))
		if !strings.Contains(string(manifest), `"name": "github.com/nats-io/nkeys"`) || !strings.Contains(string(manifest), deps[0].Digest["h1"]) {
			t.Errorf("manifest.json lacks the local dependency's name or digest:\n%s", manifest)
		}
		// What was built is what is recorded: the local code.
		bin, _ := exec.Command(filepath.Join(out, "artifacts", "rtreplace")).Output()
		if !strings.Contains(string(bin), "TAMPERED local replacement") {
			t.Fatalf("artifact printed %q", bin)
		}
	})

	t.Run("go-replace-outside", func(t *testing.T) {
		t.Parallel()
		needToolchain(t, toolchainProjects[0])
		dir := pgProject(t, "go-replace-lie")
		mod := "module example.com/rtreplace\n\ngo 1.22\n\nrequire github.com/nats-io/nkeys v0.4.16\n\nreplace github.com/nats-io/nkeys v0.4.16 => ../../../../etc\n"
		os.WriteFile(filepath.Join(dir, "go.mod"), []byte(mod), 0o644)
		res, evs, _ := pgSubmit(t, c, dir, "go-replace-outside")
		if res.Status != "failed" || res.ErrorType != "InvalidSource" || !strings.Contains(res.Error, "outside the project") {
			t.Fatalf("result %+v, want InvalidSource\n%s", res, eventLog(evs))
		}
		if log := eventLog(evs); strings.Contains(log, "/tmp/") || strings.Contains(log, "Fetching dependencies") {
			t.Fatalf("server path in the log or the fetch ran:\n%s", log)
		}
	})

	t.Run("go-toolchain-directive", func(t *testing.T) {
		t.Parallel()
		needToolchain(t, toolchainProjects[0])
		dir := copyProject(t, "go-hello")
		b, _ := os.ReadFile(filepath.Join(dir, "go.mod"))
		os.WriteFile(filepath.Join(dir, "go.mod"), append(b, "\ntoolchain go1.99.0\n"...), 0o644)
		res, evs, _ := pgSubmit(t, c, dir, "go-toolchain")
		if res.Status != "failed" || res.ErrorType != "UnsupportedToolchain" || !strings.Contains(res.Error, "go1.99.0") {
			t.Fatalf("result %+v, want UnsupportedToolchain\n%s", res, eventLog(evs))
		}
	})

	t.Run("pnpm-hostile-config", func(t *testing.T) {
		t.Parallel()
		needToolchain(t, toolchainProjects[1])
		dir := copyProject(t, "pnpm-hello")
		marker := filepath.Join(t.TempDir(), "MARKER")
		js := "require('fs').writeFileSync('" + marker + "', 'ran');\n"
		os.WriteFile(filepath.Join(dir, "evil.js"), []byte(js), 0o644)
		os.WriteFile(filepath.Join(dir, "evil.sh"), []byte("#!/bin/sh\necho ran > "+marker+"\n"), 0o755)
		os.WriteFile(filepath.Join(dir, ".pnpmfile.cjs"), []byte(js+"module.exports = { hooks: { readPackage(p) { "+js+" return p } } };\n"), 0o644)
		os.WriteFile(filepath.Join(dir, ".npmrc"), []byte("registry=http://127.0.0.1:9/\ngit=./evil.sh\nscript-shell=./evil.sh\nnode-options=--require ./evil.js\n"), 0o644)
		res, evs, out := pgSubmit(t, c, dir, "pnpm-hostile")
		t.Logf("hostile pnpm project: %s %s %s", res.Status, res.ErrorType, res.Error)
		if _, err := os.Stat(marker); err == nil {
			t.Fatal("project code wrote a marker on the host")
		}
		// The build phase runs the pnpmfile and script-shell in the
		// sandbox (offline, no host paths), so it may fail there; the
		// fetch must not have used the closed registry or run anything.
		log := eventLog(evs)
		if strings.Contains(log, "127.0.0.1:9") && strings.Contains(log, "pnpm fetch") {
			t.Fatalf("fetch used the project's registry:\n%s", log)
		}
		if res.Status == "ok" {
			if _, err := os.Stat(filepath.Join(out, "artifacts", "dist.tar.gz")); err != nil {
				t.Fatal(err)
			}
		} else if res.ErrorType == "DependencyFetchFailed" {
			t.Fatalf("fetch failed: %+v\n%s", res, log)
		}
	})

	t.Run("pnpm-local-inputs", func(t *testing.T) {
		t.Parallel()
		needToolchain(t, toolchainProjects[1])
		res, evs, out := pgSubmit(t, c, pgProject(t, "pnpm-local-inputs"), "pnpm-local-inputs")
		if res.Status != "ok" {
			t.Fatalf("build: %+v\n%s", res, eventLog(evs))
		}
		uris := map[string]provenance.Dependency{}
		for _, d := range pgDeps(t, out) {
			uris[d.URI] = d
		}
		for _, u := range []string{"file:linked", "file:localpkg", "file:packages/wa", "file:localpkg/localpkg-1.0.0.tgz", "file:patches/ms@2.1.3.patch"} {
			if d, ok := uris[u]; !ok || len(d.Digest) != 1 || d.Name == "" {
				t.Errorf("%s: %+v", u, d)
			}
		}
	})

	for _, p := range toolchainProjects {
		t.Run("honest-"+p.name, func(t *testing.T) {
			t.Parallel()
			needToolchain(t, p)
			res, evs, out := pgSubmit(t, c, copyProject(t, p.name), p.name)
			if res.Status != "ok" {
				t.Fatalf("honest build: %+v\n%s", res, eventLog(evs))
			}
			if got := artifactNames(t, out); strings.Join(got, ",") != strings.Join(p.artifacts, ",") {
				t.Errorf("artifacts %v", got)
			}
			for _, d := range pgDeps(t, out) {
				if strings.HasPrefix(d.URI, "file:") {
					t.Errorf("honest build records local code %+v", d)
				}
			}
		})
	}
}
