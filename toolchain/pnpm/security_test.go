package pnpm

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/dirhash"

	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/provenance"
	"github.com/kettle-build/kettle/toolchain"
)

// localProject copies testdata/security/pnpm-local-inputs: a workspace with
// a file: directory package, a link: package, a workspace member, a local
// tarball and a patched registry package.
func localProject(t *testing.T) (*toolchain.Workspace, *logLines) {
	t.Helper()
	w, l := workspace(t, "")
	dir := filepath.Join(t.TempDir(), "pnpm-local-inputs")
	copyTree(t, filepath.Join("..", "..", "testdata", "security", "pnpm-local-inputs"), dir)
	w.Dir = dir
	return w, l
}

func dep(deps []provenance.Dependency, uri string) *provenance.Dependency {
	for i := range deps {
		if deps[i].URI == uri {
			return &deps[i]
		}
	}
	return nil
}

// TestLocalInputsRecorded: every local input is recorded as what it is
// (local code with the digest of its tree or file), not as a registry
// package, and the patch file of a patched registry package is recorded
// beside it.
func TestLocalInputsRecorded(t *testing.T) {
	needRegistry(t)
	w, lines := localProject(t)
	d := New()
	in, err := toolchain.Plan(context.Background(), d, w)
	if err != nil {
		t.Fatal(err)
	}
	tree := func(rel string) string {
		h, err := dirhash.HashDir(filepath.Join(w.Dir, rel), "", dirhash.Hash1)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimPrefix(h, "h1:")
	}
	file := func(rel string) string {
		s, err := toolchain.SHA256File(filepath.Join(w.Dir, rel))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, want := range []provenance.Dependency{
		{Name: "linked", URI: "file:linked", Digest: provenance.Digest{TreeDigestKey: tree("linked")}},
		{Name: "localpkg", URI: "file:localpkg", Digest: provenance.Digest{TreeDigestKey: tree("localpkg")}},
		{Name: "wa", URI: "file:packages/wa", Digest: provenance.Digest{TreeDigestKey: tree("packages/wa")}},
		{Name: "localpkg", URI: "file:localpkg/localpkg-1.0.0.tgz", Digest: provenance.Digest{FileDigestKey: file("localpkg/localpkg-1.0.0.tgz")}},
		{Name: "ms@2.1.3", URI: "file:patches/ms@2.1.3.patch", Digest: provenance.Digest{FileDigestKey: file("patches/ms@2.1.3.patch")}},
	} {
		got := dep(in.Dependencies, want.URI)
		if got == nil || got.Name != want.Name || len(got.Digest) != 1 || got.Digest[TreeDigestKey] != want.Digest[TreeDigestKey] || got.Digest[FileDigestKey] != want.Digest[FileDigestKey] {
			t.Errorf("%s: got %+v, want %+v", want.URI, got, want)
		}
	}
	for _, d := range in.Dependencies {
		if strings.Contains(d.URI, "pkg:npm/localpkg") || strings.Contains(d.URI, "pkg:npm/linked") || strings.Contains(d.URI, "pkg:npm/wa") {
			t.Errorf("local package recorded as a registry package: %+v", d)
		}
	}
	if dep(in.Dependencies, "pkg:npm/ms@2.1.3?checksum=sha512-6FlzubTLZG3J2a/NVCAleEhjzq5oxgHyaCU9yYXvcLsvoVaHJq/s5xXI6/XXP6tz7R9xAOtHnSO/tXtF3WRTlA==") == nil {
		t.Errorf("registry package ms missing: %+v", in.Dependencies)
	}
	for i := 1; i < len(in.Dependencies); i++ {
		if in.Dependencies[i-1].URI > in.Dependencies[i].URI {
			t.Fatalf("not sorted by uri: %+v", in.Dependencies)
		}
	}
	// The real toolchain builds it: the fetch (from a copy without the
	// project's settings) and the offline install agree.
	ctx := context.Background()
	if err := d.Fetch(ctx, w); err != nil {
		t.Fatalf("fetch: %v (%s)\n%s", err, failure.Message(err), lines)
	}
	if err := d.Build(ctx, w); err != nil {
		t.Fatalf("build: %v (%s)\n%s", err, failure.Message(err), lines)
	}
	if _, err := d.Artifacts(ctx, w, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	// A changed local package changes its digest.
	os.WriteFile(filepath.Join(w.Dir, "linked", "index.js"), []byte("module.exports = 'other';\n"), 0o644)
	in2, err := toolchain.Plan(ctx, New(), w)
	if err != nil || dep(in2.Dependencies, "file:linked").Digest[TreeDigestKey] == dep(in.Dependencies, "file:linked").Digest[TreeDigestKey] {
		t.Fatalf("digest did not follow the local code: %v", err)
	}
}

// TestLocalInputsRefused: a local input outside the project, by its text
// or through a symlink, or a local tarball that does not match its
// integrity, is InvalidSource from Inputs, before any command runs, and
// the message names no server path.
func TestLocalInputsRefused(t *testing.T) {
	for _, tool := range []string{"pnpm", "node"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "package.json"), []byte(`{"name":"localpkg","version":"1.0.0"}`), 0o644)
	edit := func(old, new string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			p := filepath.Join(dir, LockfileName)
			b, _ := os.ReadFile(p)
			if !strings.Contains(string(b), old) {
				t.Fatalf("lockfile has no %q", old)
			}
			os.WriteFile(p, []byte(strings.Replace(string(b), old, new, 1)), 0o644)
		}
	}
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir string)
		msg   string
	}{
		{"directory outside", edit("{directory: localpkg, type: directory}", "{directory: ../x, type: directory}"), "outside the project"},
		{"directory absolute", edit("{directory: localpkg, type: directory}", "{directory: "+outside+", type: directory}"), "outside the project"},
		{"link outside", edit("version: link:linked", "version: link:../../x"), "outside the project"},
		{"importer outside", edit("  packages/wa: {}", "  ../wa: {}"), "outside the project"},
		{"tarball outside", edit("tarball: file:localpkg/localpkg-1.0.0.tgz", "tarball: file:../x.tgz"), "outside the project"},
		{"patch outside", edit("path: patches/ms@2.1.3.patch", "path: ../ms.patch"), "outside the project"},
		{"package.json patch outside", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "package.json")
			b, _ := os.ReadFile(p)
			os.WriteFile(p, []byte(strings.Replace(string(b), `"patches/ms@2.1.3.patch"`, `"/etc/passwd"`, 1)), 0o644)
		}, "outside the project"},
		{"symlinked directory", func(t *testing.T, dir string) {
			os.RemoveAll(filepath.Join(dir, "localpkg"))
			os.Symlink(outside, filepath.Join(dir, "localpkg"))
		}, "not a directory inside the project"},
		{"symlink in a directory", func(t *testing.T, dir string) {
			os.Symlink(filepath.Join(outside, "package.json"), filepath.Join(dir, "linked", "leak.json"))
		}, "cannot be hashed"},
		{"symlinked patch", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "patches", "ms@2.1.3.patch")
			os.Remove(p)
			os.Symlink(filepath.Join(outside, "package.json"), p)
		}, "not a file inside the project"},
		{"tampered tarball", func(t *testing.T, dir string) {
			f, _ := os.OpenFile(filepath.Join(dir, "localpkg", "localpkg-1.0.0.tgz"), os.O_WRONLY|os.O_APPEND, 0)
			f.Write([]byte("x"))
			f.Close()
		}, "does not match its integrity"},
		{"workspace glob outside", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, WorkspaceFile), "packages:\n  - 'packages/*'\n  - '../*'\n", 0o644)
		}, "outside the project"},
		{"workspace file symlink", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, WorkspaceFile))
			os.Symlink(filepath.Join(outside, "package.json"), filepath.Join(dir, WorkspaceFile))
		}, "cannot read pnpm-workspace.yaml"},
		{"missing directory", func(t *testing.T, dir string) { os.RemoveAll(filepath.Join(dir, "packages", "wa")) }, "not a directory inside the project"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, _ := localProject(t)
			tc.setup(t, w.Dir)
			_, err := toolchain.Plan(context.Background(), New(), w)
			if failure.KindOf(err) != failure.InvalidSource || !strings.Contains(failure.Message(err), tc.msg) {
				t.Fatalf("err %v (%s: %q), want InvalidSource containing %q", err, failure.KindOf(err), failure.Message(err), tc.msg)
			}
			if msg := failure.Message(err); strings.Contains(msg, outside) || strings.Contains(msg, w.Dir) || strings.Contains(msg, "/etc") {
				t.Fatalf("message names a server path: %q", msg)
			}
			if n := len(w.Runner.(*execRunner).cmds); n != 0 {
				t.Fatalf("%d commands ran", n)
			}
		})
	}
}

func TestWorkspacePackages(t *testing.T) {
	out, err := WorkspacePackages([]byte("packages:\n  - 'packages/*'\n  - '!**/test'\nregistry: http://evil\nonlyBuiltDependencies: [x]\n"))
	if err != nil || strings.Contains(string(out), "evil") || strings.Contains(string(out), "onlyBuilt") || !strings.Contains(string(out), "packages/*") {
		t.Fatalf("%q %v", out, err)
	}
	for _, bad := range []string{"packages: ['../*']\n", "packages: ['/srv/*']\n", "packages: ['a/../../b']\n", "packages: {a: b}\n"} {
		if _, err := WorkspacePackages([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestFetchIgnoresProjectConfig is a hostile project: .pnpmfile.cjs and an
// .npmrc whose git, script-shell and node-options name a script that
// writes a marker, and whose registry points at a closed local port (the
// fetch would fail if it were honoured); the server environment carries
// npm_config_git and NODE_OPTIONS too. The fetch runs with no sandbox at
// all here, so only kettle's rules keep the marker from appearing.
func TestFetchIgnoresProjectConfig(t *testing.T) {
	needRegistry(t)
	w, lines := workspace(t, "")
	marker := filepath.Join(t.TempDir(), "MARKER")
	evilJS := "require('fs').writeFileSync(" + jsString(marker) + ", 'ran');\n"
	writeFile(t, filepath.Join(w.Dir, "evil.js"), evilJS, 0o644)
	writeFile(t, filepath.Join(w.Dir, "evil.sh"), "#!/bin/sh\necho ran > "+marker+"\n", 0o755)
	writeFile(t, filepath.Join(w.Dir, ".pnpmfile.cjs"), evilJS+"module.exports = { hooks: { readPackage(p) { "+evilJS+" return p } } };\n", 0o644)
	writeFile(t, filepath.Join(w.Dir, ".npmrc"), strings.Join([]string{
		"registry=http://127.0.0.1:9/",
		"@types:registry=http://127.0.0.1:9/",
		"git=" + filepath.Join(w.Dir, "evil.sh"),
		"script-shell=" + filepath.Join(w.Dir, "evil.sh"),
		"node-options=--require " + filepath.Join(w.Dir, "evil.js"),
		"shell-emulator=true",
		"onlyBuiltDependencies[]=ms",
		"",
	}, "\n"), 0o644)
	w.Env = append(w.Env, "TMPDIR=/nonexistent/server-tmp", "npm_config_git="+filepath.Join(w.Dir, "evil.sh"), "NODE_OPTIONS=--require "+filepath.Join(w.Dir, "evil.js"))
	d := New()
	if _, err := toolchain.Plan(context.Background(), d, w); err != nil {
		t.Fatal(err)
	}
	if err := d.Fetch(context.Background(), w); err != nil {
		t.Fatalf("fetch: %v (%s)\n%s", err, failure.Message(err), lines)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("project code ran during the fetch")
	}
	for _, name := range []string{".npmrc", ".pnpmfile.cjs", "evil.js"} {
		if _, err := os.Lstat(filepath.Join(w.CacheDir, "pnpm-fetch", name)); err == nil {
			t.Errorf("%s reached the fetch directory", name)
		}
	}
	c := w.Runner.(*execRunner).cmds[0]
	if tmp := toolchain.Getenv(c.Env, "TMPDIR"); !strings.HasPrefix(tmp, w.CacheDir+"/") {
		t.Errorf("TMPDIR %q is not the job's (the server's does not exist in the sandbox)", tmp)
	}
	if toolchain.Getenv(c.Env, "npm_config_git") != "" || toolchain.Getenv(c.Env, "NODE_OPTIONS") != "" {
		t.Errorf("server npm settings reached pnpm: %v", c.Env)
	}
	if !c.Network || !strings.Contains(strings.Join(c.Args, " "), "--ignore-scripts") || !strings.Contains(strings.Join(c.Args, " "), "--ignore-pnpmfile") {
		t.Errorf("fetch command %v", c.Args)
	}
}

func writeFile(t *testing.T, p, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func jsString(s string) string { return "'" + strings.ReplaceAll(s, "'", "\\'") + "'" }

// TestProjectRegistryIgnoredByFetch: a project .npmrc naming another
// registry (here a closed local port) does not redirect the fetch, and the
// offline install that reads it in the build still finds every package in
// the store (pnpm's store is addressed by integrity).
func TestProjectRegistryIgnoredByFetch(t *testing.T) {
	needRegistry(t)
	w, lines := workspace(t, "")
	writeFile(t, filepath.Join(w.Dir, ".npmrc"), "registry=http://127.0.0.1:9/\n", 0o644)
	d := New()
	ctx := context.Background()
	if _, err := toolchain.Plan(ctx, d, w); err != nil {
		t.Fatal(err)
	}
	if err := d.Fetch(ctx, w); err != nil {
		t.Fatalf("fetch: %v\n%s", err, lines)
	}
	if err := d.Build(ctx, w); err != nil {
		t.Fatalf("build: %v\n%s", err, lines)
	}
}

// TestFetchLinkToProjectRoot: a `link:.` dependency makes the project root
// a local input. Copying it for the fetch must not bring the project's
// .npmrc (here a closed registry and a git program) into the fetch
// directory.
func TestFetchLinkToProjectRoot(t *testing.T) {
	needRegistry(t)
	w, lines := workspace(t, "")
	lock, _ := os.ReadFile(filepath.Join(w.Dir, LockfileName))
	lock = []byte(strings.Replace(string(lock), "      ms:\n        specifier: 2.1.3\n        version: 2.1.3\n",
		"      ms:\n        specifier: 2.1.3\n        version: 2.1.3\n      self:\n        specifier: link:.\n        version: link:.\n", 1))
	writeFile(t, filepath.Join(w.Dir, LockfileName), string(lock), 0o644)
	writeFile(t, filepath.Join(w.Dir, ".npmrc"), "registry=http://127.0.0.1:9/\ngit=/bin/false\n", 0o644)
	d := New()
	in, err := toolchain.Plan(context.Background(), d, w)
	if err != nil {
		t.Fatal(err)
	}
	if dep(in.Dependencies, "file:.") == nil {
		t.Fatalf("link:. not recorded: %+v", in.Dependencies)
	}
	if err := d.Fetch(context.Background(), w); err != nil {
		t.Fatalf("fetch: %v\n%s", err, lines)
	}
	for _, name := range []string{".npmrc", "package.json", "build.js"} {
		if _, err := os.Lstat(filepath.Join(w.CacheDir, "pnpm-fetch", name)); err == nil {
			t.Errorf("%s copied to the top of the fetch directory", name)
		}
	}
}
